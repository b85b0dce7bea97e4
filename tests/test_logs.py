"""Log lines: JSON off a terminal, text on one, the job/server they concern, and never a secret."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest

from bot.logs import REDACTED, choose_format, logging_context, set_logging_context, setup_logging

TOKEN = "MTIzNDU2Nzg5MDEyMzQ1Njc4.GhIjKl.abcdefghijklmnopqrstuvwxyz0123456789AB"


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = handlers, level


def lines(stream: io.StringIO) -> list[str]:
    return [line for line in stream.getvalue().splitlines() if line.strip()]


def test_format_is_json_unless_on_a_terminal() -> None:
    assert choose_format("auto", io.StringIO()) == "json"
    assert choose_format("auto", Tty()) == "text"
    assert choose_format("text", io.StringIO()) == "text"
    assert choose_format("json", Tty()) == "json"


@pytest.mark.usefixtures("restore_logging")
def test_json_lines_carry_the_context_and_redact_secrets_in_tracebacks() -> None:
    stream = io.StringIO()
    setup_logging("INFO", secrets=[TOKEN], fmt="auto", stream=stream)
    log = logging.getLogger("likeness.test")
    with logging_context(job_id=42, guild_id=7):
        log.info("job %s posted", 42)
        try:
            raise RuntimeError(f"401 for token {TOKEN}")
        except RuntimeError:
            log.exception("request failed")
    log.warning("outside")
    first, failed, outside = (json.loads(line) for line in lines(stream) if line.startswith("{"))
    assert first["message"] == "job 42 posted" and first["job_id"] == 42 and first["guild_id"] == 7
    assert first["level"] == "INFO" and first["logger"] == "likeness.test" and first["time"].endswith("+00:00")
    assert "RuntimeError" in failed["exception"] and REDACTED in failed["exception"]
    assert "job_id" not in outside
    assert TOKEN not in stream.getvalue() and TOKEN[-12:] not in stream.getvalue()


@pytest.mark.usefixtures("restore_logging")
def test_text_lines_on_a_terminal() -> None:
    stream = Tty()
    setup_logging("INFO", secrets=[TOKEN], stream=stream)
    with logging_context(guild_id=7, command="animate"):
        logging.getLogger("likeness.test").info("token is %s", TOKEN)
    [line] = lines(stream)
    assert line.endswith(f"likeness.test: token is {REDACTED} [guild_id=7 command=animate]")


@pytest.mark.usefixtures("restore_logging")
async def test_each_task_keeps_its_own_context() -> None:
    """The worker sets the job in each job's task: two jobs' lines never mix."""
    stream = io.StringIO()
    setup_logging("INFO", fmt="json", stream=stream)
    log = logging.getLogger("likeness.worker")

    async def job(job_id: int) -> None:
        set_logging_context(job_id=job_id)
        await asyncio.sleep(0)
        log.info("polled %s", job_id)

    await asyncio.gather(asyncio.create_task(job(1)), asyncio.create_task(job(2)))
    log.info("loop")
    records = [json.loads(line) for line in lines(stream)]
    assert {(r["message"], r.get("job_id")) for r in records} == {("polled 1", 1), ("polled 2", 2), ("loop", None)}
