"""The server's Prometheus metrics, and the readiness check behind `/ready`.

Two kinds of sources. Events are counted as they happen, through hooks that channels/ and
storage/ offer without knowing about Prometheus: an application ending (`app_finished`), a
message committed (the flusher's `on_stored`, so a message flushed from the spool later is
counted once, when it reaches the database), a query's time (`OdbcPool.on_query`), a NOTIFY's
answer. Everything else is read from the server's objects at scrape time by `_Collector`:
calls in progress, the spool backlog, SIP requests and RTP packets (plain counters on the
endpoint and its media clock), realtime cache hits, and the outbox's pending rows (one
bounded query per scrape).

Each server has its own `CollectorRegistry`, so two servers in one process (tests) do not mix.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from storage.odbc import DatabaseError, OdbcPool
from storage.spool import PendingMessage

from .active_calls import ActiveCall
from .http_status import HttpSettings, Reply, StatusHttpServer

if TYPE_CHECKING:
    from .server import VoicemailServer

log = logging.getLogger(__name__)

APPS = ("VoiceMail", "VoiceMailMain")
LAG_INTERVAL = 0.5  # seconds between event loop lag samples
READY_TIMEOUT = 2.0  # seconds each ODBC class has to answer /ready's SELECT 1
OUTBOX_TIMEOUT = 2.0  # seconds the scrape's outbox count may take
LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# Issue 12's target for the media clock: p99 <= 5 ms.
MEDIA_LAG_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)
DB_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def _app_label(application: str) -> str | None:
    """VoiceMail / VoiceMailMain as written in any case; None for other applications."""
    for app in APPS:
        if application.lower() == app.lower():
            return app
    return None


class ServerMetrics:
    """The registry of one server, the hooks feeding it, and the lag task."""

    def __init__(self, server: VoicemailServer) -> None:
        self.server = server
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.calls = Counter(
            "voicemail_calls", "Dial plan applications run, by how they ended",
            ["app", "result"], registry=registry,
        )  # fmt: skip
        self.stored = Counter(
            "voicemail_messages_stored", "Messages committed to the database", registry=registry
        )
        self.recorded = Counter(
            "voicemail_recorded_seconds", "Seconds of audio in the messages stored",
            registry=registry,
        )  # fmt: skip
        self.mwi = Counter(
            "voicemail_mwi_notify", "MWI NOTIFYs answered, by outcome (ok, error, timeout)",
            ["result"], registry=registry,
        )  # fmt: skip
        self.db_seconds = Histogram(
            "voicemail_db_query_seconds", "Time of one unit of database work, by ODBC class",
            ["class"], buckets=DB_BUCKETS, registry=registry,
        )  # fmt: skip
        self.db_errors = Counter(
            "voicemail_db_errors", "Database work that failed, by ODBC class", ["class"],
            registry=registry,
        )  # fmt: skip
        self.lag = Histogram(
            "voicemail_loop_lag_seconds", "How late the event loop ran a timer",
            buckets=LAG_BUCKETS, registry=registry,
        )  # fmt: skip
        self.media_lag = Histogram(
            "voicemail_media_clock_lag_seconds",
            "How late each 20 ms tick of the media clock (every call's RTP send) ran",
            buckets=MEDIA_LAG_BUCKETS, registry=registry,
        )  # fmt: skip
        self.outbox_pending: float | None = None
        registry.register(_Collector(self))
        self._lag_task: asyncio.Task[None] | None = None
        self.http: StatusHttpServer | None = None

    # --- hooks --------------------------------------------------------------------------------

    def attach(self) -> None:
        """Hook into the started server's parts (call once, after VoicemailServer.start)."""
        server = self.server
        if server.runner is not None:
            server.runner.active_calls.app_finished.append(self._app_finished)
        if server.flusher is not None:
            previous = server.flusher.on_stored

            def stored(message: PendingMessage, msgnum: int) -> object:
                self.stored.inc()
                self.recorded.inc(max(0, message.duration))
                return previous(message, msgnum) if previous is not None else None

            server.flusher.on_stored = stored  # type: ignore[assignment]
        for pool in server.pools.values():
            self.watch_pool(pool)
        if server.endpoint is not None:
            server.endpoint.clock.on_lag = self.media_lag.observe
            handlers = server.endpoint.handlers
            for kind in ("response", "timeout"):
                handler = handlers.get(kind)
                if handler is not None:
                    handlers[kind] = self._notify_counter(kind, handler)

    def watch_pool(self, pool: OdbcPool) -> None:
        name = pool.name
        seconds = self.db_seconds.labels(name)
        errors = self.db_errors.labels(name)

        def on_query(elapsed: float, ok: bool) -> None:
            seconds.observe(elapsed)
            if not ok:
                errors.inc()

        pool.on_query = on_query

    def _app_finished(self, call: ActiveCall, application: str, result: str) -> None:
        app = _app_label(application)
        if app is not None:
            self.calls.labels(app, result or "SUCCESS").inc()

    def _notify_counter(self, kind: str, handler: object) -> object:
        def counted(transport: object, message: object, tx: object) -> None:
            if getattr(getattr(tx, "request", None), "method", "") == "NOTIFY":
                code = getattr(message, "code", None) if kind == "response" else None
                if code is None:
                    self.mwi.labels("timeout").inc()
                elif code < 300:
                    self.mwi.labels("ok").inc()
                else:
                    self.mwi.labels("error").inc()
            handler(transport, message, tx)  # type: ignore[operator]

        return counted

    # --- running ------------------------------------------------------------------------------

    async def start(self, settings: HttpSettings) -> None:
        """The lag sampler, and the HTTP server when http.conf enables it."""
        self._lag_task = asyncio.ensure_future(self._sample_lag())
        if not settings.enabled:
            return
        routes = {settings.path("health"): self.health, settings.path("ready"): self.ready}
        if settings.metrics_uri is not None:
            routes[settings.path(settings.metrics_uri)] = self.scrape
        self.http = StatusHttpServer(settings, routes)
        await self.http.start()

    async def stop(self) -> None:
        if self.http is not None:
            await self.http.stop()
        if self._lag_task is not None:
            self._lag_task.cancel()
            await asyncio.wait({self._lag_task}, timeout=1)

    async def _sample_lag(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + LAG_INTERVAL
            await asyncio.sleep(LAG_INTERVAL)
            self.lag.observe(max(0.0, loop.time() - due))

    # --- routes -------------------------------------------------------------------------------

    async def health(self) -> Reply:
        return Reply(200, b"OK\n")

    async def scrape(self) -> Reply:
        outbox = self.server.outbox
        if outbox is not None:
            try:
                self.outbox_pending = float(
                    await asyncio.wait_for(outbox.pending_count(), OUTBOX_TIMEOUT)
                )
            except (DatabaseError, TimeoutError) as exc:
                log.debug("metrics: outbox count failed: %s", exc)
        return Reply(200, generate_latest(self.registry), CONTENT_TYPE_LATEST)

    async def ready(self) -> Reply:
        problems = await self.not_ready()
        if problems:
            return Reply(503, ("\n".join(problems) + "\n").encode())
        return Reply(200, b"ready\n")

    async def not_ready(self) -> list[str]:
        """Why the server cannot take calls now; empty when it can."""
        problems: list[str] = []
        lifecycle = self.server.lifecycle
        if lifecycle is not None and lifecycle.state != "running":
            problems.append(f"the server is {lifecycle.state}: new calls are refused")
        endpoint = self.server.endpoint
        if endpoint is None or endpoint.udp is None or not endpoint.transports:
            problems.append("SIP is not listening")
        pools = list(self.server.pools.values())
        results = await asyncio.gather(*(_answers(pool) for pool in pools))
        problems += [problem for problem in results if problem]
        return problems


def _select_one(connection: object) -> None:
    connection.cursor().execute("SELECT 1").fetchone()  # type: ignore[attr-defined]


async def _answers(pool: OdbcPool) -> str | None:
    """None when the class answers SELECT 1 within READY_TIMEOUT, else why not."""
    try:
        await asyncio.wait_for(
            pool.run(_select_one, retry_for=0, timeout=READY_TIMEOUT), READY_TIMEOUT + 1
        )
    except TimeoutError:
        return f"database [{pool.name}]: no answer within {READY_TIMEOUT:g} s"
    except DatabaseError as exc:
        return f"database [{pool.name}]: {exc}"
    return None


class _Collector(Collector):
    """What is read from the server at scrape time."""

    def __init__(self, metrics: ServerMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        server = self.metrics.server
        active = GaugeMetricFamily(
            "voicemail_calls_active", "Calls in VoiceMail or VoiceMailMain now", labels=["app"]
        )
        counts = dict.fromkeys(APPS, 0)
        if server.runner is not None:
            for call in server.runner.active_calls:
                app = _app_label(call.application)
                if app is not None:
                    counts[app] += 1
        for app, count in counts.items():
            active.add_metric([app], count)
        yield active
        spool = GaugeMetricFamily(
            "voicemail_spool_messages", "Messages in the local spool waiting for the database"
        )
        spool.add_metric([], server.flusher.backlog if server.flusher is not None else 0)
        yield spool
        outbox = GaugeMetricFamily(
            "voicemail_email_outbox_messages",
            "Notifications (email, pager, webhook) waiting in the outbox",
        )
        if self.metrics.outbox_pending is not None:
            outbox.add_metric([], self.metrics.outbox_pending)
        yield outbox
        results = server.outbox_sender.results if server.outbox_sender is not None else {}
        for outcome in ("sent", "failed"):
            family = CounterMetricFamily(
                f"voicemail_email_{outcome}", f"Email and pager mail send attempts {outcome}"
            )
            family.add_metric(
                [], sum(n for (kind, what), n in results.items() if what == outcome and
                        kind in ("email", "pager"))
            )  # fmt: skip
            yield family
        yield from self._sip(server)

    def _sip(self, server: VoicemailServer) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "voicemail_sip_requests", "SIP requests received, by method", labels=["method"]
        )
        rtp = CounterMetricFamily(
            "voicemail_rtp_packets", "RTP packets received, lost and late", labels=["kind"]
        )
        endpoint = server.endpoint
        if endpoint is not None:
            for method, count in sorted(endpoint.requests_received.items()):
                requests.add_metric([method], count)
            totals = endpoint.clock.rtp
            for kind in ("received", "lost", "late"):
                rtp.add_metric([kind], getattr(totals, kind))
        yield requests
        yield rtp
        cache = CounterMetricFamily(
            "voicemail_realtime_cache",
            "Realtime lookups answered from the cache (hit) or asked of their mapping (miss)",
            labels=["result"],
        )
        realtime = getattr(server, "realtime", None)
        cache.add_metric(["hit"], realtime.cache_hits if realtime is not None else 0)
        cache.add_metric(["miss"], realtime.cache_misses if realtime is not None else 0)
        yield cache
        store = server.store
        read = CounterMetricFamily(
            "voicemail_messages_read", "Messages read from the database with their audio"
        )
        read.add_metric([], store.messages_read if store is not None else 0)
        yield read
        read_bytes = CounterMetricFamily(
            "voicemail_message_audio_read_bytes", "Bytes of message audio read from the database"
        )
        read_bytes.add_metric([], store.message_bytes_read if store is not None else 0)
        yield read_bytes


__all__ = ["ServerMetrics"]
