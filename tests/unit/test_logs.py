"""Log lines: JSON off a terminal, text on one, the job/server they concern, and never a secret."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from bot.infra.logs import REDACTED, choose_format, logging_context, set_logging_context, setup_logging
from bot.jobs.callbacks import CallbackServer, CallbackUrls, callback_secret
from bot.providers.fal import FalProvider
from tests.support.fake_providers.fal import FakeFal
from tests.support.fal_requests import animate

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


@pytest.mark.usefixtures("restore_logging")
async def test_no_token_bearing_url_reaches_the_logs(tmp_path: Path) -> None:
    """httpx logs every request's URL at INFO: fal's submit carries `?fal_webhook=<callback URL with its token>`,
    a Discord attachment link its signature (`?ex=&is=&hm=`), and an HTTP error names the URL in its traceback.
    None of it reaches a log line, nor a record any other handler sees; the callback listener logs no path."""
    stream = io.StringIO()
    setup_logging("DEBUG", fmt="json", stream=stream)
    seen: list[logging.LogRecord] = []
    other = logging.Handler()  # another handler on the root, as a library or a test would add
    other.emit = seen.append  # type: ignore[method-assign]
    logging.getLogger().addHandler(other)

    urls = CallbackUrls("https://likeness.example.org", callback_secret(tmp_path))
    webhook = urls.url_for("fal", 7)
    token = webhook.rsplit("/", 1)[1]
    signature = "9f1c0e4b7d2a6f3e8c5b1a0d9e7f6c4b3a2d1e0f9c8b7a6d5e4f3c2b1a0d9e8f"
    attachment = "ex=6750f1a2&is=674fa022&hm=" + signature
    fal = FakeFal()
    await fal.start()
    listener = CallbackServer(urls, lambda _p, _j: None, "127.0.0.1", 0)
    await listener.start()
    provider = FalProvider(key=fal.key, base_url=fal.url, timeout=15.0)
    try:
        submission = await provider.submit(animate(7, callback_url=webhook))
        await provider.poll(submission)
        async with httpx.AsyncClient() as client:
            answer = await client.get(f"{fal.url}/attachments/1/2/front.png?{attachment}")
            try:
                answer.raise_for_status()
            except httpx.HTTPStatusError:
                logging.getLogger("likeness.test").exception("could not download the attachment")
            local = webhook.replace("https://likeness.example.org", f"http://127.0.0.1:{listener.port}")
            assert (await client.post(local, json={"status": "OK"})).status_code == 200
    finally:
        await provider.close()
        await listener.close()
        await fal.stop()
    [submit] = [r for r in fal.requests if r.method == "POST" and "/requests/" not in r.path]
    assert submit.query["fal_webhook"] == webhook  # the provider was told the URL; only the logs are blank
    output = stream.getvalue()
    for text in [output, *(record.getMessage() for record in seen)]:
        for capability in (token, quote(webhook, safe=""), signature, "fal_webhook="):
            assert capability not in text
    assert "HTTP Request: POST" in output and "front.png?[redacted]" in output  # the requests are still logged
