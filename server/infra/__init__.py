"""Infrastructure adapters: SQL, cache/bus, object storage, vectors (each with an embedded and a server backend)."""
