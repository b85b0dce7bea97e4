"""The doctor's vocabulary: a check's `Status` and `CheckResult`, the `Probes` tests replace, and what every
report passes through (`redact`, which hides the token and the keys; `exit_status`)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

DISCORD_TIMEOUT = 15.0  # seconds per Discord question
PROVIDER_TIMEOUT = 10.0  # seconds per provider check


class Status(StrEnum):
    OK = "ok"
    WARNING = "warning"
    FAILURE = "failure"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class CheckResult:
    """One line of the report: what was found, and (for a warning or failure) what the admin can do."""

    name: str
    status: Status
    found: str
    fix: str = ""
    data: dict[str, Any] = field(default_factory=dict)  # figures for --json (ttfb_ms, free_bytes ...)


@dataclass
class Probes:
    """What the checks reach outside the process, replaceable in tests."""

    free_bytes: Callable[[Path], int] = field(default=lambda path: shutil.disk_usage(path).free)
    discord_timeout: float = DISCORD_TIMEOUT
    provider_timeout: float = PROVIDER_TIMEOUT
    # how the callback check reaches LIKENESS_CALLBACK_URL (an httpx transport); None: the network
    callback_transport: Any = None


def ok(name: str, found: str, **data: Any) -> CheckResult:
    return CheckResult(name, Status.OK, found, data=data)


def warning(name: str, found: str, fix: str, **data: Any) -> CheckResult:
    return CheckResult(name, Status.WARNING, found, fix, data)


def failure(name: str, found: str, fix: str, **data: Any) -> CheckResult:
    return CheckResult(name, Status.FAILURE, found, fix, data)


def skipped(name: str, why: str) -> CheckResult:
    return CheckResult(name, Status.SKIPPED, why)


def redact(results: Iterable[CheckResult], secrets: Iterable[str]) -> list[CheckResult]:
    """The results with every secret (and every longer piece of one) replaced, wherever it would show."""
    hidden = sorted({s for s in secrets if len(s) > 4}, key=len, reverse=True)

    def clean(text: str) -> str:
        for secret in hidden:
            text = text.replace(secret, "[redacted]")
        return text

    return [
        CheckResult(
            r.name,
            r.status,
            clean(r.found),
            clean(r.fix),
            {k: clean(v) if isinstance(v, str) else v for k, v in r.data.items()},
        )
        for r in results
    ]


def exit_status(results: Iterable[CheckResult]) -> int:
    """0 when nothing failed (what a Docker HEALTHCHECK calls healthy), else 1."""
    return 1 if any(r.status is Status.FAILURE for r in results) else 0
