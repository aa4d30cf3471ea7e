"""Structured log lines: one JSON object per line on stdout, which journald stores as is.

``{"ts": "2026-12-01T23:40:00.123Z", "level": "info", "event": "ready", "msg": "...", ...}``:
``event`` is a stable key to filter on (``journalctl -u edge-runtime -o cat | jq 'select(.event=="xrun")'``),
``msg`` reads as a sentence, the other keys are the values it mentions. Each line is written and
flushed whole under a lock, so lines from the audio threads never interleave. Records of Python's
``logging`` (the governor's step-downs, backend warnings) come out the same way through
:class:`JsonLogHandler`.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import sys
import threading

__all__ = ["JsonLog", "JsonLogHandler", "LEVELS"]

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


class JsonLog:
    def __init__(self, stream=None, level: str = "info"):
        self.stream = stream if stream is not None else sys.stdout
        self.level = LEVELS[level]
        self._lock = threading.Lock()

    def log(self, level: str, event: str, msg: str, **fields) -> None:
        if LEVELS[level] < self.level:
            return
        now = _dt.datetime.now(_dt.timezone.utc)
        rec = {"ts": now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z",
               "level": level, "event": event, "msg": msg}
        rec.update(fields)
        line = json.dumps(rec, default=str, separators=(",", ":")) + "\n"
        with self._lock:
            try:
                self.stream.write(line)
                self.stream.flush()
            except (OSError, ValueError):
                pass        # stdout gone (journald restarted): never take the audio down for a log

    def debug(self, event, msg, **f):
        self.log("debug", event, msg, **f)

    def info(self, event, msg, **f):
        self.log("info", event, msg, **f)

    def warning(self, event, msg, **f):
        self.log("warning", event, msg, **f)

    def error(self, event, msg, **f):
        self.log("error", event, msg, **f)


class JsonLogHandler(logging.Handler):
    """Route ``logging`` records to a :class:`JsonLog` (event = the logger's name)."""

    def __init__(self, log: JsonLog):
        super().__init__()
        self.jlog = log

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level = ("error" if record.levelno >= 40 else "warning" if record.levelno >= 30
                     else "info" if record.levelno >= 20 else "debug")
            self.jlog.log(level, record.name, record.getMessage())
        except Exception:
            self.handleError(record)
