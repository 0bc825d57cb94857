"""The server: builds the SIP stack and the applications, routes requests, shuts down cleanly.

Applications (:mod:`control.app`) receive domain objects, never raw requests.

Routing follows the convention SylkServer users know: an application map over the Request-URI
(``user@host``, then ``host``, then ``user``), then the default application; a trusted peer
(the Kamailio edge) may override with ``X-Chorus-App``.
"""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import logging
import ssl
from collections.abc import Callable
from typing import cast

from control.app import (
    Application,
    IncomingCall,
    IncomingMessage,
    parse_offer,
    precheck_event_request,
    route_event_request,
)
from control.config import Config
from control.media.ports import PortAllocator
from control.msrp.trace import MsrpTracer
from control.msrp.transport import MsrpTransport
from control.sip.message import Request
from control.sip.notifier import EventPolicy, SubscriptionBook
from control.sip.overload import OverloadGuard
from control.sip.session import IncomingCall as SipCall
from control.sip.session import timer_terms
from control.sip.sessiontimer import MIN_SE_FLOOR, TimerPolicy
from control.sip.subscription import ExpiresPolicy
from control.sip.transport import Peer, SipTracer, SipTransportLayer
from control.sip.uri import SipUri, parse_uri
from control.sip.useragent import ALLOWED_METHODS, IncomingRequest, UserAgent
from control.tls import ensure_certificate

log = logging.getLogger("chorus.server")

APP_HEADER = "X-Chorus-App"
# Only what is implemented: RFC 4028 session timers and RFC 4488 ``norefersub`` (a REFER
# with Refer-Sub: false gets 202 and no NOTIFY, control/app.py Referral.accept; the
# conference takes REFERs, control/conference/refer.py). Not RFC 3891 ``replaces`` (an
# INVITE requiring it gets 420).
SUPPORTED_EXTENSIONS = frozenset({"timer", "norefersub"})
TRUST_CACHE_SIZE = 4096  # source addresses whose trust is remembered


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """The event loop ``[server] event_loop`` names: the standard one, or uvloop's (libuv),
    which spends less CPU per datagram and per socket opened (bench/RESULTS.md)."""
    if name == "uvloop":
        import uvloop  # only when asked for: the standard loop needs nothing more

        return cast(Callable[[], asyncio.AbstractEventLoop], uvloop.new_event_loop)
    return asyncio.new_event_loop


def tune_gc(young_threshold: int) -> None:
    """Keep the garbage collector off the call path once the server is up.

    Everything built at start-up (modules, applications, caches) is moved out of the
    collector's sight (``gc.freeze``): it lives as long as the process and would otherwise be
    walked by every full collection. Each call leaves its transactions for Timer J/L (32 s on
    UDP), so at a high call rate tens of thousands of messages are alive and Python's default
    young-generation threshold (700 allocations) promotes nearly all of them, making full
    collections frequent and long (bench/RESULTS.md: a third of the CPU per call). A larger
    threshold lets the short-lived ones die young.
    """
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(young_threshold, middle, old)


class ApplicationMap:
    """Request-URI → application name (``user@host``, ``host``, ``user``, default)."""

    def __init__(self, mapping: dict[str, str], default: str) -> None:
        self._map = {key.lower(): value for key, value in mapping.items()}
        self.default = default

    def resolve(self, request: Request, *, trusted: bool) -> str:
        if trusted:
            override = request.headers.get(APP_HEADER)
            if override:
                return override.strip().lower()
        uri = request.uri
        if isinstance(uri, SipUri):
            user = (uri.unescaped_user() or "").lower()
            host = uri.host.lower()
            for key in (f"{user}@{host}" if user else None, host, user or None):
                if key and key in self._map:
                    return self._map[key]
        return self.default


class Server:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.ua = UserAgent(
            timers=config.sip.timers,
            advertised_address=config.sip.advertised_address,
            outbound_proxy=parse_uri(config.sip.outbound_proxy)
            if config.sip.outbound_proxy
            else None,
            session_timers=TimerPolicy(config.sip.session_expires, config.sip.min_se),
            overload=OverloadGuard(
                config.sip.overload_lag_ms / 1000, retry_after=config.sip.overload_retry_after
            )
            if config.sip.overload_lag_ms
            else None,
        )
        if config.sip.min_se < MIN_SE_FLOOR:
            log.warning(
                "sip.min_se = %d is below RFC 4028's %d s floor (fine for tests only)",
                config.sip.min_se,
                MIN_SE_FLOOR,
            )
        self.ua.request_handler = self.handle_request
        self.events = EventPolicy(
            ExpiresPolicy(
                min_expires=config.sip.subscription_min_expires,
                max_expires=config.sip.subscription_max_expires,
                default_expires=config.sip.subscription_max_expires,
            ),
            SubscriptionBook(config.sip.max_subscriptions_per_source),
        )
        self.ports = PortAllocator(*config.rtp.port_range)
        self.applications: dict[str, Application] = {}
        self.app_map = ApplicationMap(config.applications.map, config.applications.default)
        self.transport: SipTransportLayer | None = None
        self.msrp = MsrpTransport(
            connect_timeout=config.msrp.connect_timeout,
            idle_timeout=config.msrp.idle_timeout,
            max_message_bytes=config.msrp.max_message_bytes,
            max_chunk_bytes=config.msrp.max_chunk_bytes,
            advertised_host=config.sip.advertised_address,
            tracer=MsrpTracer(config.server.trace_msrp),
        )
        self.accepting = True
        self.stopped = asyncio.Event()
        self._trust: dict[str, bool] = {}  # source address -> in [sip] trusted_peers

    def register(self, name: str, application: Application) -> None:
        self.applications[name] = application

    def _trusted(self, peer: Peer) -> bool:
        # Every request asks; the answer per address never changes while the server runs.
        trusted = self._trust.get(peer.host)
        if trusted is None:
            try:
                address = ipaddress.ip_address(peer.host)
            except ValueError:
                trusted = False
            else:
                trusted = any(address in network for network in self.config.sip.trusted_peers)
            if len(self._trust) >= TRUST_CACHE_SIZE:
                self._trust.clear()  # a flood of sources must not grow it without bound
            self._trust[peer.host] = trusted
        return trusted

    async def start(self) -> None:
        needs_tls = any(
            a.transport == "tls" for a in (*self.config.sip.listen, *self.config.msrp.listen)
        )
        ssl_server: ssl.SSLContext | None = None
        ssl_client: ssl.SSLContext | None = None
        if needs_tls:
            cert, key = ensure_certificate(self.config)
            ssl_server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ssl_server.load_cert_chain(cert, key)
            ssl_client = ssl.create_default_context()
            ssl_client.check_hostname = False
            ssl_client.verify_mode = (
                ssl.CERT_NONE
            )  # peers behind the edge present self-signed certs
        self.transport = SipTransportLayer(
            self.ua.handle_message,
            ssl_server=ssl_server,
            ssl_client=ssl_client,
            max_connections=self.config.sip.max_connections,
            idle_timeout=self.config.sip.connection_idle_timeout,
            max_body_bytes=self.config.sip.max_message_bytes,
            tracer=SipTracer(self.config.server.trace_sip),
        )
        self.ua.transport = self.transport
        await self.transport.start(self.config.sip.listen)
        self.ua.watch_load()  # [sip] overload_lag_ms: the lag probe, stopped by ua.close
        for bound in self.transport.bound:
            log.info("listening on %s", bound)
        await self.msrp.start(self.config.msrp.listen, ssl_server=ssl_server, ssl_client=ssl_client)
        for msrp_bound in self.msrp.bound:
            log.info("MSRP listening on %s", msrp_bound)

    async def stop(self) -> None:
        """Stop taking new sessions, end the running ones with BYE, exit in bounded time."""
        self.accepting = False
        timeout = self.config.server.shutdown_timeout
        try:
            await asyncio.wait_for(
                asyncio.gather(
                    *(app.shutdown() for app in self.applications.values()),
                    return_exceptions=True,
                ),
                timeout,
            )
        except TimeoutError:
            log.warning("applications did not finish within %.1f s", timeout)
        await self.msrp.stop()
        await self.ua.close()
        if self.transport is not None:
            await self.transport.stop()
        self.stopped.set()

    async def handle_request(self, incoming: IncomingRequest) -> None:
        request = incoming.request
        trusted = self._trusted(incoming.source)
        if not trusted:
            log.info("refusing %s from untrusted %s", request.method, incoming.source)
            incoming.respond(403)
            return
        if not isinstance(request.uri, SipUri):
            incoming.respond(416)
            return
        unsupported = [
            ext
            for ext in request.headers.get_all("Require")
            if ext.lower() not in SUPPORTED_EXTENSIONS
        ]
        if unsupported and request.method not in ("CANCEL", "ACK"):
            incoming.respond(420, headers=[("Unsupported", ", ".join(unsupported))])
            return
        if request.method == "INVITE":
            if not request.contacts:
                incoming.respond(400, "Missing Contact")  # RFC 3261 §8.1.1.8
                return
            content_type = request.content_type
            if request.body and (content_type is None or content_type.mime != "application/sdp"):
                # RFC 3261 §21.4.13, RFC 4475 §3.3.7 (invut): say what we take.
                incoming.respond(415, headers=[("Accept", "application/sdp")])
                return
            timer_terms(incoming, self.ua.session_timers)  # RFC 4028 §8.1: 422 or 400
            if incoming.final_sent:
                return
        if request.method == "OPTIONS":
            incoming.respond(
                200,
                headers=[
                    ("Allow", ALLOWED_METHODS),
                    ("Accept", "application/sdp, message/cpim, text/plain"),
                    ("Supported", ", ".join(sorted(SUPPORTED_EXTENSIONS))),
                ],
            )
            return
        if request.method in ("REGISTER", "PUBLISH"):
            incoming.respond(405, headers=[("Allow", ALLOWED_METHODS)])
            return
        if request.method not in ("INVITE", "MESSAGE", "SUBSCRIBE", "REFER"):
            incoming.respond(501)
            return
        name = self.app_map.resolve(request, trusted=trusted)
        application = self.applications.get(name)
        if application is None:
            log.info("no application %r for %s", name, request.uri)
            incoming.respond(404, f"No application {name}"[:60])
            return
        if request.method == "INVITE":
            if not self.accepting:
                incoming.respond(503, headers=[("Retry-After", "5")])
                return
            offer = parse_offer(incoming, required=True)  # 400/488 answered here, once
            if offer is None:
                return
            call = IncomingCall(
                SipCall(self.ua, incoming),
                offer,
                on_message=application.incoming_message,
                application=application,
                policy=self.events,
            )
            await application.incoming_invite(call)
        elif request.method == "MESSAGE":
            await application.incoming_message(IncomingMessage(incoming))
        elif precheck_event_request(incoming, self.events):  # SUBSCRIBE, REFER
            await route_event_request(application, incoming, self.events)
