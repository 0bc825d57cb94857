"""The node's one web server (aiohttp): screen viewer, room pages, file downloads.

HTTPS with the node's certificate (control/tls.py: ``[tls]`` or the generated one); plain
HTTP only where ``[web] listen`` says ``http:`` on a loopback address (config refuses it
elsewhere), for a TLS proxy on the same host. Routes, all behind signed tokens (tokens.py):

    GET /screen/{room}/{participant}            viewer page (frames pushed over /ws)
    GET /screen/{room}/{participant}/ws         WebSocket: JSON meta + binary JPEG per frame
    GET /screen/{room}/{participant}/image.jpg  the current frame
    GET /screen/{room}/{participant}/mjpeg      multipart/x-mixed-replace push
    GET /room/{room}                            room page
    GET /files/{room}/{sha1}                    download, with Range
    GET /static/screen.js                       the viewer's script (no token: it is public)
    GET /metrics                                Prometheus exposition (control/metrics.py),
                                                behind the admin API's bearer token unless
                                                ``[web] metrics_public``
    GET /dashboard, /dashboard/ws, /static/dashboard.js, POST /dashboard/drain
                                                the operator's dashboard (dashboard.py)

`WebServer.urls` builds the signed URLs the conference announces.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from aiohttp import web

from control.conference.screen import ScreenBoard, ScreenLimits
from control.config import Config, ListenAddress
from control.tls import ensure_certificate
from control.web.auth import bearer_refusal
from control.web.context import CONTEXT, WebContext, WebUrls
from control.web.dashboard import Dashboard, DashboardModel
from control.web.files import FileDownloads
from control.web.pages import RoomPages
from control.web.screens import ScreenViews
from control.web.tokens import TokenSigner, load_secret
from control.web.views import FileSource, RoomDirectory

__all__ = ["MetricsSource", "WebServer", "build_web_server", "screen_limits"]

log = logging.getLogger("chorus.web")

SHUTDOWN_GRACE = 2.0  # seconds a download in progress may take to finish when we stop


@web.middleware
async def _security_headers(
    request: web.Request, handler: Callable[[web.Request], object]
) -> web.StreamResponse:
    response = await handler(request)  # type: ignore[misc]
    assert isinstance(response, web.StreamResponse)
    if not response.prepared:
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
    return response


class MetricsSource(Protocol):
    """What /metrics serves (control/metrics.py NodeMetrics)."""

    async def render(self, accept: str | None = None) -> tuple[bytes, str]: ...


class _MetricsView:
    """``GET /metrics``: a scrape, guarded by the operator's token unless ``token`` is None."""

    def __init__(self, metrics: MetricsSource, token: str | None) -> None:
        self.metrics = metrics
        self.token = token

    async def scrape(self, request: web.Request) -> web.Response:
        if self.token is not None:
            refusal = bearer_refusal(request, self.token)
            if refusal is not None:
                return refusal
        body, content_type = await self.metrics.render(request.headers.get("Accept"))
        response = web.Response(body=body)
        response.headers["Content-Type"] = content_type  # with its version= parameter
        response.headers["Cache-Control"] = "no-store"
        return response


class WebServer:
    """One aiohttp application on one listening address."""

    def __init__(
        self,
        *,
        listen: ListenAddress,
        signer: TokenSigner,
        screens: ScreenBoard,
        rooms: RoomDirectory | None = None,
        files: FileSource | None = None,
        public_url: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        clock: Callable[[], float] = time.time,
        metrics: MetricsSource | None = None,
        metrics_token: str | None = None,
        dashboard: DashboardModel | None = None,
        operator_token: str | None = None,
    ) -> None:
        if (listen.transport == "https") != (ssl_context is not None):
            raise ValueError("https needs an SSL context, http must not have one")
        self.listen = listen
        self.signer = signer
        self.screens = screens
        self.public_url = public_url
        self.ssl_context = ssl_context
        self.clock = clock
        self.urls = WebUrls(self._base(listen.port), signer, clock)
        self.app = web.Application(middlewares=[_security_headers])
        self.app[CONTEXT] = WebContext(signer, self.urls, clock)
        views = self._views = ScreenViews(screens)
        pages = RoomPages(screens, rooms, files)
        screen = "/screen/{room}/{participant}"
        self.app.router.add_get(screen, views.page)
        self.app.router.add_get(screen + "/ws", views.websocket, allow_head=False)
        self.app.router.add_get(screen + "/image.jpg", views.image)
        self.app.router.add_get(screen + "/mjpeg", views.mjpeg, allow_head=False)
        self.app.router.add_get("/static/screen.js", views.script)
        self.app.router.add_get("/room/{room}", pages.page)
        if files is not None:
            self.app.router.add_get("/files/{room}/{sha1}", FileDownloads(files).download)
        if metrics is not None:
            self.app.router.add_get("/metrics", _MetricsView(metrics, metrics_token).scrape)
        self._dashboard: Dashboard | None = None
        if dashboard is not None:
            if operator_token is None:
                raise ValueError("the dashboard needs the operator's token")
            self._dashboard = Dashboard(dashboard, operator_token)
            self._dashboard.add_routes(self.app.router)
        self._runner: web.AppRunner | None = None
        self.bound: tuple[str, int] | None = None

    def _base(self, port: int) -> str:
        if self.public_url is not None:
            return self.public_url.rstrip("/")
        host = self.listen.host
        host = f"[{host}]" if ":" in host else host
        return f"{self.listen.transport}://{host}:{port}"

    async def start(self) -> None:
        self._runner = web.AppRunner(
            self.app, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_GRACE
        )
        await self._runner.setup()
        site = web.TCPSite(
            self._runner, self.listen.host, self.listen.port, ssl_context=self.ssl_context
        )
        await site.start()
        server = site._server  # aiohttp exposes no public accessor for the bound port
        sockets = getattr(server, "sockets", None) or []
        host, port = sockets[0].getsockname()[:2] if sockets else (self.listen.host, 0)
        self.bound = (host, port)
        self.urls.base = self._base(port)
        log.info("web listening on %s://%s:%d", self.listen.transport, host, port)

    async def stop(self) -> None:
        self._views.close()  # live viewers end now rather than after aiohttp's grace period
        if self._dashboard is not None:
            self._dashboard.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def screen_limits(config: Config) -> ScreenLimits:
    """The ``[screen]`` section as the board's limits."""
    screen = config.screen
    return ScreenLimits(
        max_frame_bytes=screen.max_frame_bytes,
        max_width=screen.max_width,
        max_height=screen.max_height,
        idle_timeout=screen.idle_timeout,
    )


def build_web_server(
    config: Config,
    screens: ScreenBoard,
    *,
    rooms: RoomDirectory | None = None,
    files: FileSource | None = None,
    metrics: MetricsSource | None = None,
    metrics_token: str | None = None,
    dashboard: DashboardModel | None = None,
    operator_token: str | None = None,
) -> WebServer | None:
    """The web server `[web]` asks for (None when `[web] listen` is not set). Its /metrics
    (when `metrics` is given) takes `metrics_token` as a bearer token, or none if None; the
    dashboard (when given) always takes `operator_token`."""
    listen = config.web.listen
    if listen is None:
        return None
    context: ssl.SSLContext | None = None
    if listen.transport == "https":
        cert, key = ensure_certificate(config)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
    secret = load_secret(config.web.token_secret, Path(config.server.spool_dir))
    return WebServer(
        listen=listen,
        signer=TokenSigner(secret, config.web.token_ttl),
        screens=screens,
        rooms=rooms,
        files=files,
        public_url=config.web.public_url,
        ssl_context=context,
        metrics=metrics,
        metrics_token=metrics_token,
        dashboard=dashboard,
        operator_token=operator_token,
    )
