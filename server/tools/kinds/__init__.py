"""Provider kinds by name: builtin, openapi, mcp (see base.Kind)."""
