"""Typecase Python SDK (see issue 10); the distribution exists so the namespace layout is fixed from the start."""
