"""The doctor's output: one line per check with a fix under each problem (`format_report`), or one JSON object
(`report_json`); `main` is `likeness doctor [--quick] [--json]`."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time

from bot.ops.doctor.results import CheckResult, Probes, Status, exit_status

_SYMBOLS = {Status.OK: "✓", Status.WARNING: "!", Status.FAILURE: "✗", Status.SKIPPED: "-"}
_ASCII = {Status.OK: "ok", Status.WARNING: "!", Status.FAILURE: "X", Status.SKIPPED: "-"}


def format_report(results: list[CheckResult], *, encoding: str | None = None) -> str:
    """One line per check, a `fix:` line under each warning and failure, and a summary."""
    symbols = _SYMBOLS
    try:
        "".join(_SYMBOLS.values()).encode(encoding or "utf-8")
    except (UnicodeEncodeError, LookupError):
        symbols = _ASCII
    width = max(len(r.name) for r in results) + 2
    lines: list[str] = []
    for result in results:
        lines.append(f"{symbols[result.status]:<2} {result.name:<{width}}{result.found}")
        if result.fix and result.status in (Status.WARNING, Status.FAILURE):
            lines.append(f"{'':<{width + 3}}fix: {result.fix}")
    failures = sum(r.status is Status.FAILURE for r in results)
    warnings = sum(r.status is Status.WARNING for r in results)
    if failures:
        lines.append(f"{_count(failures, 'failure')}, {_count(warnings, 'warning')}: fix the failures first.")
    elif warnings:
        lines.append(f"Nothing failed; {_count(warnings, 'warning')}.")
    else:
        lines.append("Everything checked is fine.")
    return "\n".join(lines)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def report_json(results: list[CheckResult], *, quick: bool, seconds: float) -> str:
    return json.dumps(
        {
            "ok": exit_status(results) == 0,
            "quick": quick,
            "seconds": round(seconds, 3),
            "failures": sum(r.status is Status.FAILURE for r in results),
            "warnings": sum(r.status is Status.WARNING for r in results),
            "checks": [
                {"name": r.name, "status": r.status.value, "found": r.found, "fix": r.fix, "data": r.data}
                for r in results
            ],
        },
        ensure_ascii=False,
    )


def main(*, quick: bool, as_json: bool, probes: Probes | None = None) -> int:
    """`likeness doctor [--quick] [--json]`: print the report; 0 when nothing failed, else 1."""
    from bot.ops.doctor import run_doctor  # here, not at the top: the package imports this module

    # The report is the output: library warnings (a provider's log line on a refused key) stay out of it.
    logging.getLogger().addHandler(logging.NullHandler())
    started = time.perf_counter()
    results = asyncio.run(run_doctor(quick, probes))
    if as_json:
        print(report_json(results, quick=quick, seconds=time.perf_counter() - started))
    else:
        print(format_report(results, encoding=sys.stdout.encoding))
    return exit_status(results)
