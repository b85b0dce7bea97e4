"""Logging: one line per event, JSON when not on a terminal (for log collectors) or text, with the job and
server it concerns, and secrets blanked out wherever they would appear (messages and tracebacks alike).

What a line is about comes from `log_context`, a context variable: the worker sets the job and server for
each job's task, and the command tree sets the server, member and command for each interaction, so every
line logged while handling them carries those fields without each call passing them.
"""

from __future__ import annotations

import json
import logging
import re
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


# A URL's query is where capabilities travel: fal's `?fal_webhook=<our callback URL with its token>`, Discord's
# signed attachment links (`?ex=&is=&hm=`), presigned result downloads. Our own callback URLs carry their token
# in the path. Neither is ever worth a log line, so both are blanked wherever a URL appears.
_URL_QUERY = re.compile(r"(?i)\b(https?://[^\s?#'\"<>]*)\?[^\s#'\"<>]*")
_CALLBACK_TOKEN = re.compile(r"(?i)(/callbacks/[a-z0-9_-]+/[0-9]+/)[^/\s?#'\"<>]+")
_CALLBACK_TOKEN_ENCODED = re.compile(r"(?i)(%2Fcallbacks%2F[a-z0-9_-]+%2F[0-9]+%2F)[^%&\s'\"<>]+")


def redact_capabilities(text: str) -> str:
    """The text with every URL's query string and every callback token replaced by [redacted]."""
    if "http" not in text and "callbacks" not in text.lower():
        return text
    text = _URL_QUERY.sub(rf"\1?{REDACTED}", text)
    text = _CALLBACK_TOKEN.sub(rf"\1{REDACTED}", text)
    return _CALLBACK_TOKEN_ENCODED.sub(rf"\1{REDACTED}", text)


class SecretFilter(logging.Filter):
    """Replaces each registered secret, every URL query string and every callback token in a record's rendered
    message with [redacted]."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self._secrets = [s for s in secrets if len(s) >= 8]

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return redact_capabilities(text)

    def filter(self, record: logging.LogRecord) -> bool:
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
    # httpx logs every request's URL at INFO, and aiohttp's access log (off in our listeners) every path: their
    # records are redacted where they are made, so no handler (a library's, a test's) ever sees a token.
    for name in ("httpx", "httpcore", "aiohttp.access", "aiohttp.client"):
        source = logging.getLogger(name)
        if not any(isinstance(f, CapabilityFilter) for f in source.filters):
            source.addFilter(CapabilityFilter())


class CapabilityFilter(logging.Filter):
    """Blanks URL query strings and callback tokens in the records of one logger (see `redact_capabilities`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_capabilities(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True
