"""The LLM API pass-through proxy (its own listener): forwarding, access, request stats. AdminService, which
administers it, lives in server/admin/."""
