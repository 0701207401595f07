"""Structured logging: every line carries the trace id of the call that produced it, and no credential (a line's
text, exception included, passes through typecase.server.redact)."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time

from typecase.server.redact import redact

trace_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("trace_id", default="-")


# Libraries' loggers whose INFO lines read as failures: faiss (imported by milvus-lite) logs each CPU-specific
# build it could not load with the ModuleNotFoundError, before loading the generic one that works.
# httpx logs every request it sends at INFO ("HTTP Request: POST ..."), a line per upstream call.
QUIET_LOGGERS = {"faiss.loader": logging.WARNING, "uvicorn.access": logging.WARNING, "httpx": logging.WARNING}
# uvicorn logs its start and stop under "uvicorn.error"; shown as "uvicorn", a start-up line does not say "error".
SHOWN_NAMES = {"uvicorn.error": "uvicorn"}


class _TraceFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.trace_id = trace_id_var.get()
        shown = SHOWN_NAMES.get(record.name)
        if shown is not None:
            record.name = shown
        return True


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "trace_id": getattr(record, "trace_id", "-"),
            "message": redact(record.getMessage()),
        }
        if record.exc_info:
            line["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(line, ensure_ascii=False)


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [trace=%(trace_id)s] %(message)s"


def configure_logging(level: str = "INFO", json_lines: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_TraceFilter())
    handler.setFormatter(_JsonFormatter() if json_lines else _TextFormatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # uvicorn's access log would duplicate our own request accounting.
    for name, quiet_level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(quiet_level)
