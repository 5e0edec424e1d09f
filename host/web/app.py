"""The web view's ASGI app: the page, its server-sent events, /healthz, /metrics and a few read-only APIs."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from dataclasses import dataclass
from pathlib import Path

import uvicorn
import zmq
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse

from nvscope.proto.endpoints import DEFAULT_RIG_ENDPOINT, HostSecurity

from ..status_cli import ask_status
from .events import EventRing, jsonable, to_json
from .health import HealthPoller, StatusSource
from .metrics import WebMetrics
from . import TAIL_INTERVAL_S
from .tailer import Tailer

STATIC = Path(__file__).parent / "static"
PLOTLY_JS = STATIC / "plotly-cartesian.min.js"
"""Plotly.js, vendored (its cartesian bundle v4.1.1 from npm's plotly.js-cartesian-dist-min, MIT,
static/plotly-LICENSE.txt: heatmaps and scatter plots in 1.5 MB; the full 4.8 MB bundle took 1.2 s to
parse before the first map): the page needs no internet."""

KEEPALIVE_S = 15.0
"""An idle event stream gets a comment this often (s), so proxies and the browser keep it open."""
RETRY_MS = 1000
"""How soon (ms) a browser reconnects a dropped event stream (SSE `retry:`)."""


@dataclass
class WebConfig:
    """What the web view follows and how often."""

    data_dir: Path
    endpoint: str = DEFAULT_RIG_ENDPOINT
    security: HostSecurity | None = None
    tail_interval_s: float = TAIL_INTERVAL_S
    """How often running files are read for new rows (s)."""
    health_interval_s: float = 1.0
    """How often the rig is asked for its status (s)."""
    status_timeout_s: float = 0.8
    """How long one status request waits for the answer (s)."""
    ring_capacity: int = 10000
    """Events kept for clients that reconnect."""


class WebView:
    """The running parts of the view: the event ring, the file tailer, the health poller, the metrics."""

    def __init__(self, cfg: WebConfig, status_source: StatusSource | None = None):
        self.cfg = cfg
        self.ring = EventRing(cfg.ring_capacity)
        self.metrics = WebMetrics()
        self.tailer = Tailer(cfg.data_dir, self.ring, cfg.tail_interval_s)
        self._ctx: zmq.Context | None = None
        if status_source is None:  # the rig's status, as `nvscope status` asks for it
            ctx = self._ctx = zmq.Context()
            status_source = lambda: ask_status(cfg.endpoint, cfg.status_timeout_s, cfg.security, ctx)  # noqa: E731
        self.health = HealthPoller(status_source, cfg.data_dir, self.ring, cfg.endpoint, cfg.health_interval_s,
                                   on_update=self.metrics.update_health)
        self.ring.set_state(lambda: {**self.tailer.state(), "health": self.health.latest})

    def start(self) -> None:
        """Start the tailer and the health poller."""
        self.tailer.start()
        self.health.start()

    def stop(self) -> None:
        """Stop them and close the status requests' ZeroMQ context."""
        self.health.stop()
        self.tailer.stop()
        if self._ctx is not None:
            self._ctx.term()


def create_app(view: WebView, start: bool = True) -> FastAPI:
    """The FastAPI app of `view` (its threads started and stopped with the app when `start`)."""

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        if start:
            view.start()
        try:
            yield
        finally:
            if start:
                view.stop()

    app = FastAPI(title="nvscope web", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.view = view
    ring = view.ring

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/static/plotly.min.js", include_in_schema=False)
    async def plotly_js() -> FileResponse:
        return FileResponse(PLOTLY_JS, media_type="text/javascript", headers={"Cache-Control": "max-age=86400"})

    @app.get("/static/app.js", include_in_schema=False)
    async def app_js() -> FileResponse:
        return FileResponse(STATIC / "app.js", media_type="text/javascript", headers={"Cache-Control": "no-cache"})

    @app.get("/events")
    async def events(request: Request, since: int | None = None) -> StreamingResponse:
        """Server-sent events: a snapshot (or the missed events, resuming after Last-Event-ID or
        ?since=), then every new event as it happens."""
        header = request.headers.get("last-event-id")
        if header is not None and header.strip().lstrip("-").isdigit():
            since = int(header)

        async def stream():
            yield f"retry: {RETRY_MS}\n\n"
            first = ring.resume(since)
            cursor = first[-1].seq if first else (since or 0)
            for ev in first:
                yield ev.sse()
            while True:
                await ring.wait(cursor, KEEPALIVE_S)
                if await request.is_disconnected():  # the page went away: end this stream
                    return
                new = ring.since(cursor)
                if new is None:  # fell behind the ring: start over from a snapshot
                    new = [ring.snapshot()]
                if not new:
                    yield ": keepalive\n\n"
                    continue
                for ev in new:
                    yield ev.sse()
                cursor = new[-1].seq

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        """The health of rig, host and disk; HTTP 503 when one is down."""
        h = view.health.latest
        return JSONResponse(h, status_code=503 if h["status"] == "down" else 200)

    @app.get("/metrics")
    async def metrics() -> Response:
        """Prometheus metrics of this view (its own registry)."""
        with ring.lock:
            view.metrics.update_health(view.health.latest)
            view.metrics.update_runs(view.tailer.runs(), ring.last_seq)
        return Response(view.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/api/runs")
    async def runs() -> Response:
        """Every run's summary, newest first."""
        with ring.lock:
            return _json(view.tailer.runs())

    @app.get("/api/runs/{run_id}")
    async def run(run_id: str) -> Response:
        """One run's rows and results as read so far (the page asks when an older run is chosen)."""
        data = view.tailer.run_data(run_id)
        if data is None:
            return JSONResponse({"error": f"no run {run_id} under the data folder"}, status_code=404)
        return _json(data)

    @app.get("/api/snapshot")
    async def snapshot() -> Response:
        """The whole state as the `snapshot` event carries it."""
        ev = await asyncio.to_thread(ring.snapshot)
        return _json({**ev.data, "seq": ev.seq})

    return app


def _json(data) -> Response:
    return Response(to_json(jsonable(data)), media_type="application/json")


class WebServer(uvicorn.Server):
    """uvicorn's server, ending on SIGINT/SIGTERM with exit code 0 (uvicorn itself re-raises the signal
    after its shutdown, which would end the process by the signal)."""

    @contextlib.contextmanager
    def capture_signals(self):
        old = {sig: signal.signal(sig, lambda *_: setattr(self, "should_exit", True))
               for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)
