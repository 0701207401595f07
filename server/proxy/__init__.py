"""The LLM API pass-through proxy (its own listener) and AdminService: stats, errors, logs, runtime config, restart."""
