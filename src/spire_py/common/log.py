"""Logging set up as SPIRE does it: level, text or JSON format, optional file.

Log records carry structured fields through ``extra={"fields": {...}}``; the
text format renders them as ``key=value`` like logrus, JSON as keys.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from types import FrameType
from typing import Any, Optional

# logrus has two levels Python lacks: trace below DEBUG, panic above CRITICAL (logrus's fatal).
TRACE = 5
PANIC = logging.CRITICAL + 10
logging.addLevelName(TRACE, "TRACE")
logging.addLevelName(PANIC, "PANIC")

LEVELS = {"TRACE": TRACE, "DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARN": logging.WARNING,
          "WARNING": logging.WARNING, "ERROR": logging.ERROR, "FATAL": logging.CRITICAL, "PANIC": PANIC}
# Python's level names as logrus spells them.
_LOGRUS_NAMES = {"WARNING": "warning", "CRITICAL": "fatal"}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return dict(getattr(record, "fields", {}) or {})


class SourceLocation(logging.Filter):
    """``log_source_location``: SPIRE's hook adds ``file`` (base name and line) and ``func``
    (the calling function's full name) to every entry; here the module and qualified name,
    ``spire_py.agent.agent.Agent.run``, stand for Go's package path and function."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = _fields(record)
        fields["file"] = f"{os.path.basename(record.pathname)}:{record.lineno}"
        fields["func"] = _function(record)
        record.fields = fields
        return True


def _function(record: logging.LogRecord) -> str:
    """The caller's module-qualified name, found as the frame logging chose as the caller
    (bounded walk; falls back to the bare function name)."""
    frame: Optional[FrameType] = sys._getframe(1)
    for _ in range(64):
        if frame is None:
            break
        code = frame.f_code
        if code.co_filename == record.pathname and frame.f_lineno == record.lineno:
            return f"{frame.f_globals.get('__name__', record.module)}.{code.co_qualname}"
        frame = frame.f_back
    return f"{record.module}.{record.funcName}"


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + "Z"
        level = _LOGRUS_NAMES.get(record.levelname, record.levelname.lower())
        parts = [f"time={ts}", f"level={level}", f"msg={json.dumps(record.getMessage())}"]
        for k, v in sorted(_fields(record).items()):
            # logrus quotes the source location for its ':' ("agent.py:12"), as it does a space
            quote = isinstance(v, str) and (" " in v or not v or k == "file")
            parts.append(f"{k}={json.dumps(v) if quote else v}")
        parts.append(f"subsystem_name={record.name.rsplit('.', 1)[-1]}")
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + "Z",
            "level": _LOGRUS_NAMES.get(record.levelname, record.levelname.lower()),
            "msg": record.getMessage(),
            "subsystem_name": record.name.rsplit(".", 1)[-1],
        }
        obj.update(_fields(record))
        if record.exc_info:
            obj["error"] = self.formatException(record.exc_info)
        return json.dumps(obj, default=str)


def setup(level: str = "INFO", fmt: str = "text", log_file: Optional[str] = None,
          source_location: bool = False) -> None:
    root = logging.getLogger("spire_py")
    root.handlers.clear()
    root.setLevel(LEVELS.get(level.upper(), logging.INFO))
    root.propagate = False
    if log_file:
        fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        handler: logging.Handler = logging.StreamHandler(os.fdopen(fd, "a", buffering=1))
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt.lower() == "json" else TextFormatter())
    if source_location:
        handler.addFilter(SourceLocation())
    root.addHandler(handler)


def get(name: str) -> logging.Logger:
    return logging.getLogger(f"spire_py.{name}")


def fields(**kw: Any) -> dict[str, Any]:
    """``log.info("msg", extra=fields(spiffe_id=...))``"""
    return {"fields": kw}
