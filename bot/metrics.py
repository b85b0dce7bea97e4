"""Counters the bot keeps about itself, shown by /info and, when enabled, served to Prometheus on localhost.

Only what an admin acts on: the queue's depth, how long jobs take, how they end, errors, and each
provider's recent health. The endpoint speaks Prometheus' text format over a minimal HTTP/1.1 server bound to
localhost by default, so nothing is exposed unless the admin chooses to.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from bot.domain import Job
from bot.listeners import ConnectionSlots, ListenerLimits, shed

log = logging.getLogger(__name__)

DURATION_BUCKETS = (5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
REQUEST_MAX = 8192


@dataclass
class ProviderHealth:
    last_ok: float | None = None
    last_error: float | None = None
    last_error_text: str = ""
    errors_in_a_row: int = 0

    @property
    def healthy(self) -> bool:
        return self.errors_in_a_row < 3


@dataclass
class Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * len(DURATION_BUCKETS))
    total: float = 0.0
    n: int = 0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(DURATION_BUCKETS):
            if value <= bound:
                self.counts[i] += 1
        self.total += value
        self.n += 1


class Metrics:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.started_at = clock()
        self.jobs_finished: Counter[tuple[str, str]] = Counter()  # (provider, state)
        self.job_seconds: dict[str, Histogram] = {}  # provider -> queued-to-finished time
        self.errors: Counter[str] = Counter()  # where: command, job, provider
        self.providers: dict[str, ProviderHealth] = {}
        self.callbacks: Counter[tuple[str, str]] = Counter()  # (provider, outcome), see bot.callbacks

    def job_finished(self, job: Job) -> None:
        self.jobs_finished[(job.provider, job.state.value)] += 1
        if job.finished_at is not None:
            self.job_seconds.setdefault(job.provider, Histogram()).observe(max(0.0, job.finished_at - job.created_at))

    def callback(self, provider: str, outcome: str) -> None:
        self.callbacks[(provider, outcome)] += 1

    def error(self, where: str) -> None:
        self.errors[where] += 1

    def provider_ok(self, name: str) -> None:
        health = self.providers.setdefault(name, ProviderHealth())
        health.last_ok, health.errors_in_a_row = self.clock(), 0

    def provider_error(self, name: str, text: str) -> None:
        health = self.providers.setdefault(name, ProviderHealth())
        health.last_error, health.last_error_text = self.clock(), text[:200]
        health.errors_in_a_row += 1
        self.error("provider")

    def uptime(self) -> float:
        return self.clock() - self.started_at

    def render(self, queue: Mapping[str, int], latency: float | None) -> str:
        """Prometheus text exposition format (version 0.0.4)."""
        lines = [
            "# HELP likeness_up_seconds Seconds since the bot started.",
            "# TYPE likeness_up_seconds gauge",
            f"likeness_up_seconds {self.uptime():.1f}",
            "# HELP likeness_queue_jobs Jobs waiting or in progress, by state.",
            "# TYPE likeness_queue_jobs gauge",
            *(f'likeness_queue_jobs{{state="{state}"}} {count}' for state, count in sorted(queue.items())),
            "# HELP likeness_jobs_finished_total Jobs that ended, by provider and how they ended.",
            "# TYPE likeness_jobs_finished_total counter",
            *(
                f'likeness_jobs_finished_total{{provider="{p}",state="{s}"}} {n}'
                for (p, s), n in sorted(self.jobs_finished.items())
            ),
            "# HELP likeness_job_duration_seconds Time from queued to finished, by provider.",
            "# TYPE likeness_job_duration_seconds histogram",
        ]
        for provider, histogram in sorted(self.job_seconds.items()):
            for bound, count in zip(DURATION_BUCKETS, histogram.counts, strict=True):
                lines.append(f'likeness_job_duration_seconds_bucket{{provider="{provider}",le="{bound:g}"}} {count}')
            lines.append(f'likeness_job_duration_seconds_bucket{{provider="{provider}",le="+Inf"}} {histogram.n}')
            lines.append(f'likeness_job_duration_seconds_sum{{provider="{provider}"}} {histogram.total:.3f}')
            lines.append(f'likeness_job_duration_seconds_count{{provider="{provider}"}} {histogram.n}')
        lines += [
            "# HELP likeness_errors_total Errors, by where they happened (command, job, provider).",
            "# TYPE likeness_errors_total counter",
            *(f'likeness_errors_total{{where="{w}"}} {n}' for w, n in sorted(self.errors.items())),
            "# HELP likeness_provider_healthy 1 unless the provider's last 3 calls failed.",
            "# TYPE likeness_provider_healthy gauge",
            *(
                f'likeness_provider_healthy{{provider="{p}"}} {int(h.healthy)}'
                for p, h in sorted(self.providers.items())
            ),
        ]
        if self.callbacks:
            lines += [
                "# HELP likeness_callbacks_total Provider callbacks received, by provider and outcome (polled: the "
                "task was polled at once; progress: not an end; duplicate: within 2 s of the last; refused: bad token; "
                "malformed: a body that is not readable JSON).",
                "# TYPE likeness_callbacks_total counter",
                *(
                    f'likeness_callbacks_total{{provider="{p}",outcome="{o}"}} {n}'
                    for (p, o), n in sorted(self.callbacks.items())
                ),
            ]
        if latency is not None:
            lines += [
                "# HELP likeness_gateway_latency_seconds Discord gateway heartbeat latency.",
                "# TYPE likeness_gateway_latency_seconds gauge",
                f"likeness_gateway_latency_seconds {latency:.4f}",
            ]
        return "\n".join(lines) + "\n"


Collect = Callable[[], Awaitable[str]]


class MetricsServer:
    """GET /metrics over plain HTTP/1.1 (one request per connection), for a Prometheus scraper. Slow or too many
    clients are shed (bot.listeners); a GET has no body, so the head's deadline is the request's."""

    def __init__(self, collect: Collect, host: str, port: int, *, limits: ListenerLimits | None = None) -> None:
        self._collect = collect
        self._host = host
        self._port = port
        self._limits = limits or ListenerLimits(header_seconds=5.0)
        self._slots = ConnectionSlots(self._limits.max_connections)
        self._server: asyncio.Server | None = None

    @property
    def open_connections(self) -> int:
        return self._slots.open

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self._host, self._port, limit=REQUEST_MAX)
        log.info("metrics on http://%s:%s/metrics", self._host, self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self._slots.take():
            shed(writer.transport)
            return
        try:
            await self._answer(reader, writer)
        finally:
            self._slots.give_back()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(self._limits.header_seconds):
                head = await reader.readuntil(b"\r\n\r\n")
            request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
            method, path, *_ = [*request_line.split(" "), "", ""]
            if method == "GET" and path.split("?", maxsplit=1)[0] == "/metrics":
                body = (await self._collect()).encode()
                status, kind = "200 OK", "text/plain; version=0.0.4; charset=utf-8"
            else:
                body, status, kind = b"not found\n", "404 Not Found", "text/plain"
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        except Exception:
            log.exception("the metrics endpoint failed")
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
