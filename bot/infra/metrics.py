"""Counters the bot keeps about itself, shown by /info and, when enabled, served to Prometheus on localhost.

Only what an admin acts on: the queue's depth, how long jobs take, how they end, errors, and each
provider's recent health. The numbers live in `prometheus_client` metrics on a registry of this bot's own (not the
library's global one, so several bots in one process, as in the tests, never clash); `MetricsServer` serves them
and `/healthz` on an aiohttp app bound to localhost by default, so nothing is exposed unless the admin chooses to.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector

from bot.domain import Job
from bot.infra.listeners import Listener, ListenerLimits, application

log = logging.getLogger(__name__)

DURATION_BUCKETS = (5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
CALLBACKS_HELP = (
    "Provider callbacks received, by provider and outcome (polled: the task was polled at once; progress: not an "
    "end; duplicate: within 2 s of the last; refused: bad token; malformed: a body that is not readable JSON)."
)


@dataclass
class ProviderHealth:
    last_ok: float | None = None
    last_error: float | None = None
    last_error_text: str = ""
    errors_in_a_row: int = 0

    @property
    def healthy(self) -> bool:
        return self.errors_in_a_row < 3


class _Live(Collector):
    """What is read at scrape time rather than counted: uptime, the queue, providers' health, gateway latency."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self.queue: Mapping[str, int] = {}
        self.latency: float | None = None

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("likeness_up_seconds", "Seconds since the bot started.", value=self._metrics.uptime())
        queue = GaugeMetricFamily("likeness_queue_jobs", "Jobs waiting or in progress, by state.", labels=["state"])
        for state, count in sorted(self.queue.items()):
            queue.add_metric([state], count)
        yield queue
        healthy = GaugeMetricFamily(
            "likeness_provider_healthy", "1 unless the provider's last 3 calls failed.", labels=["provider"]
        )
        for name, health in sorted(self._metrics.providers.items()):
            healthy.add_metric([name], int(health.healthy))
        yield healthy
        if self.latency is not None:
            yield GaugeMetricFamily(
                "likeness_gateway_latency_seconds", "Discord gateway heartbeat latency.", value=self.latency
            )


class Metrics:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.started_at = clock()
        self.providers: dict[str, ProviderHealth] = {}
        self.registry = CollectorRegistry()
        self._jobs_finished = Counter(
            "likeness_jobs_finished",
            "Jobs that ended, by provider and how they ended.",
            ["provider", "state"],
            registry=self.registry,
        )
        self._job_seconds = Histogram(
            "likeness_job_duration_seconds",
            "Time from queued to finished, by provider.",
            ["provider"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self._errors = Counter(
            "likeness_errors",
            "Errors, by where they happened (command, job, provider).",
            ["where"],
            registry=self.registry,
        )
        self._callbacks = Counter("likeness_callbacks", CALLBACKS_HELP, ["provider", "outcome"], registry=self.registry)
        self._live = _Live(self)
        self.registry.register(self._live)

    def job_finished(self, job: Job) -> None:
        self._jobs_finished.labels(job.provider, job.state.value).inc()
        if job.finished_at is not None:
            self._job_seconds.labels(job.provider).observe(max(0.0, job.finished_at - job.created_at))

    def callback(self, provider: str, outcome: str) -> None:
        self._callbacks.labels(provider, outcome).inc()

    def error(self, where: str) -> None:
        self._errors.labels(where).inc()

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
        """Prometheus text exposition format (0.0.4, what scrapers expect of `text/plain`), with the queue and latency read for this scrape."""
        self._live.queue, self._live.latency = dict(queue), latency  # no await until rendered: one scrape at a time
        return generate_latest(self.registry).decode()


Collect = Callable[[], Awaitable[str]]
Healthy = Callable[[], Awaitable[bool]]


async def _always_up() -> bool:
    return True


class MetricsServer:
    """GET /metrics for a Prometheus scraper and GET /healthz for Docker or an orchestrator. Slow or too many
    clients are shed (bot.infra.listeners); a GET has no body, so the head's deadline is the request's."""

    def __init__(
        self,
        collect: Collect,
        host: str,
        port: int,
        *,
        healthy: Healthy = _always_up,
        limits: ListenerLimits | None = None,
    ) -> None:
        self._collect = collect
        self._healthy = healthy
        self._host = host
        app = application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        self._listener = Listener(app, host, port, limits or ListenerLimits(header_seconds=5.0))

    @property
    def open_connections(self) -> int:
        return self._listener.open_connections

    @property
    def port(self) -> int:
        return self._listener.port

    async def start(self) -> None:
        await self._listener.start()
        log.info("metrics on http://%s:%s/metrics (health: /healthz)", self._host, self.port)

    async def close(self) -> None:
        await self._listener.close()

    async def _metrics(self, _request: web.Request) -> web.Response:
        body = (await self._collect()).encode()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})

    async def _healthz(self, _request: web.Request) -> web.Response:
        """200 `{"status": "ok"}` while `healthy()` says the bot is up, else 503 `{"status": "unavailable"}`."""
        up = await self._healthy()
        return web.Response(
            status=200 if up else 503,
            text=json.dumps({"status": "ok" if up else "unavailable"}),
            content_type="application/json",
        )
