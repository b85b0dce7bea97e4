"""Logging: one line per event, JSON when not on a terminal (for log collectors) or text, with the job and
server it concerns, and secrets blanked out wherever they would appear (messages and tracebacks alike).

What a line is about comes from `log_context`, a context variable: the worker sets the job and server for
each job's task, and the command tree sets the server, member and command for each interaction, so every
line logged while handling them carries those fields without each call passing them.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType
from typing import IO, Literal

REDACTED = "[redacted]"

log_context: ContextVar[Mapping[str, object]] = ContextVar("likeness_log_context", default=MappingProxyType({}))


@contextmanager
def logging_context(**fields: object) -> Iterator[None]:
    """Add fields to every line logged inside the block (in this task and the tasks it starts)."""
    token = log_context.set({**log_context.get(), **fields})
    try:
        yield
    finally:
        log_context.reset(token)


def set_logging_context(**fields: object) -> None:
    """Add fields for the rest of the current task (a job's driver, an interaction's handler)."""
    log_context.set({**log_context.get(), **fields})


class SecretFilter(logging.Filter):
    """Replaces each registered secret in a record's rendered message with [redacted]."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self._secrets = [s for s in secrets if len(s) >= 8]

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        message = record.getMessage()
        redacted = self.redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


class ContextFilter(logging.Filter):
    """Copies the current `log_context` onto the record (as `record.context`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.context = dict(log_context.get())
        return True


class TextFormatter(logging.Formatter):
    def __init__(self, secrets: SecretFilter) -> None:
        super().__init__("%(asctime)s %(levelname)-8s %(name)s: %(message)s")
        self._secrets = secrets

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        context: Mapping[str, object] = getattr(record, "context", {})
        if context:
            first, *rest = text.split("\n", 1)
            text = "\n".join([first + " [" + " ".join(f"{k}={v}" for k, v in context.items()) + "]", *rest])
        return self._secrets.redact(text)  # tracebacks too, not only the message


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the context fields, and the traceback if any."""

    def __init__(self, secrets: SecretFilter) -> None:
        super().__init__()
        self._secrets = secrets

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **getattr(record, "context", {}),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return self._secrets.redact(json.dumps(line, default=str, ensure_ascii=False))


def choose_format(fmt: Literal["auto", "json", "text"], stream: IO[str]) -> Literal["json", "text"]:
    if fmt != "auto":
        return fmt
    return "text" if stream.isatty() else "json"


def setup_logging(
    level: str,
    secrets: list[str] | None = None,
    fmt: Literal["auto", "json", "text"] = "auto",
    stream: IO[str] | None = None,
) -> None:
    out: IO[str] = stream if stream is not None else sys.stderr
    secret_filter = SecretFilter(secrets or [])
    handler = logging.StreamHandler(out)
    chosen = choose_format(fmt, out)
    handler.setFormatter(JsonFormatter(secret_filter) if chosen == "json" else TextFormatter(secret_filter))
    handler.addFilter(secret_filter)
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # discord.py's gateway chatter is useful only when debugging the connection itself, and at DEBUG it dumps
    # whole events (a modal's fields included), so it never goes below INFO.
    logging.getLogger("discord.gateway").setLevel(max(logging.getLevelName(level), logging.INFO))
