"""Administration: AdminService (stats, errors, logs, runtime config, restart, audit), the runtime config store
and the log stream. The proxy it administers lives in server/proxy/."""
