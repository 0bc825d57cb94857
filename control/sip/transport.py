"""asyncio transports for SIP over UDP, TCP and TLS (RFC 3261 §18).

Thin by design: bytes in, parsed messages up to one owner callback, bytes out. The only
protocol work here is the transport layer's own: framing streams, stamping ``received`` and
``rport`` on the top Via (§18.2.1, RFC 3581), answering unparseable requests with the status the
parser chose, and reusing the connection a request came on for everything sent back to that peer.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import random
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO, cast

from control.config import ListenAddress
from control.sip.errors import SipError, SipParseError
from control.sip.framing import StreamFramer, build_error_response
from control.sip.headers import parse_via
from control.sip.message import (
    MAX_BODY_BYTES,
    Request,
    Response,
    parse_message,
)
from control.sip.uri import format_host, split_header_list

log = logging.getLogger("chorus.sip.transport")


@dataclass(frozen=True, slots=True)
class Peer:
    """Where a message came from or goes to: transport plus the IP address and port."""

    transport: str
    host: str
    port: int

    @property
    def reliable(self) -> bool:
        return self.transport != "udp"

    def __str__(self) -> str:
        return f"{self.transport}:{format_host(self.host)}:{self.port}"


MessageHandler = Callable[[Request | Response, Peer], None]
PEER_CACHE_SIZE = 4096  # UDP source addresses whose Peer is kept for reuse


class SipTracer:
    """Writes every message sent and received to a file an operator can read."""

    def __init__(self, path: Path | None) -> None:
        self._file: TextIO | None = path.open("a", encoding="utf-8") if path else None

    def trace(self, direction: str, peer: Peer, data: bytes) -> None:
        if self._file is None:
            return
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
        arrow = "<-" if direction == "recv" else "->"
        text = data.decode("utf-8", "replace")
        self._file.write(f"{stamp} {direction} {arrow} {peer} ({len(data)} bytes)\n{text}\n\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def stamp_via(request: Request, source: Peer) -> None:
    """RFC 3261 §18.2.1 ``received`` and RFC 3581 ``rport`` on the top Via."""
    raw = request.headers.get_raw("Via")
    if not raw:
        return
    first_line = split_header_list(raw[0])
    via = parse_via(first_line[0])
    params = dict(via.params)
    changed = False
    if via.host.strip("[]") != source.host:
        params["received"] = source.host
        changed = True
    if "rport" in params:
        params["rport"] = str(source.port)
        params.setdefault("received", source.host)
        changed = True
    if not changed:
        return
    first_line[0] = str(type(via)(via.transport, via.host, via.port, params, via.protocol))
    # Via is a list header: one line carrying every value is equivalent (RFC 3261 §7.3.1).
    request.headers.set("Via", ", ".join([", ".join(first_line), *raw[1:]]))


class _Receiver:
    """What UDP and stream protocols share: parse, stamp, answer errors, hand up."""

    def __init__(self, layer: SipTransportLayer) -> None:
        self.layer = layer

    def handle_bytes(self, data: bytes, peer: Peer, stream: bool) -> bytes | None:
        """Process one message; returns an error response to send back, if any."""
        self.layer.tracer.trace("recv", peer, data)
        try:
            message = parse_message(data, stream=stream, max_body_bytes=self.layer.max_body_bytes)
        except SipParseError as exc:
            self.layer.log_bad_input(peer, exc)
            return build_error_response(exc, to_tag=self.layer.new_tag())
        if isinstance(message, Request):
            try:
                stamp_via(message, peer)
            except SipError as exc:
                # The parser validated the Via, so this is our bug, not the peer's: say so, and
                # deliver the request unstamped (responses then follow the Via's sent-by).
                log.warning(
                    "could not stamp Via of %s from %s (Call-ID %s): %s",
                    message.method,
                    peer,
                    message.call_id,
                    exc,
                )
        self.layer.deliver(message, peer)
        return None


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, layer: SipTransportLayer, listen: ListenAddress) -> None:
        self._receiver = _Receiver(layer)
        self._layer = layer
        self.listen = listen
        self.transport: asyncio.DatagramTransport | None = None
        # One Peer per source address, not one per datagram: a call's messages and the
        # transactions that outlive it (Timer J/L) share it. Bounded; emptied when full.
        self._peers: dict[tuple[str | int, ...], Peer] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if not data.strip(b"\r\n\x00 "):
            return  # keep-alive
        peer = self._peers.get(addr)
        if peer is None:
            if len(self._peers) >= PEER_CACHE_SIZE:
                self._peers.clear()
            peer = self._peers[addr] = Peer("udp", str(addr[0]), int(addr[1]))
        reply = self._receiver.handle_bytes(data, peer, stream=False)
        if reply is not None and self.transport is not None:
            self._layer.tracer.trace("send", peer, reply)
            self.transport.sendto(reply, addr[:2])

    def error_received(self, exc: Exception) -> None:
        # Usually an ICMP port unreachable for an earlier send: counted, logged rate-limited.
        self._layer.send_errors += 1
        self._layer.log_send_error(f"UDP error on {self.listen}: {exc}")


class StreamConnection(asyncio.Protocol):
    """One TCP or TLS connection, incoming or outgoing, framed by Content-Length."""

    def __init__(self, layer: SipTransportLayer, transport_name: str) -> None:
        self._layer = layer
        self._receiver = _Receiver(layer)
        self._framer = StreamFramer(max_body_bytes=layer.max_body_bytes)
        self.transport_name = transport_name
        self.transport: asyncio.Transport | None = None
        self.peer: Peer | None = None
        self.last_activity = time.monotonic()
        self._closing_soon = False
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCP and TLS transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        host, port = transport.get_extra_info("peername")[:2]
        self.peer = Peer(self.transport_name, str(host), int(port))
        if not self._layer.register_connection(self):
            self._layer.log_refused(self.peer)
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        self.last_activity = time.monotonic()
        assert self.peer is not None and self.transport is not None
        pings = self._framer.pings
        try:
            messages = self._framer.feed(data)
        except SipParseError:
            messages = []
        if self._framer.pings != pings:
            self.transport.write(b"\r\n")  # RFC 5626 §4.4.1 pong
        for raw in messages:
            reply = self._receiver.handle_bytes(raw, self.peer, stream=True)
            if reply is not None and not self.transport.is_closing():
                self._layer.tracer.trace("send", self.peer, reply)
                self.transport.write(reply)
        if self._framer.error is not None:
            self._framing_lost(self._framer.error)

    def _framing_lost(self, exc: SipParseError) -> None:
        """Answer (400, 413, 513) from the salvaged headers when they address a response,
        then close: a stream cannot be resynchronised (RFC 3261 §18.3). Requests framed
        before the error are still being answered by the applications, so reading stops now
        and the connection closes after a short grace."""
        assert self.peer is not None and self.transport is not None
        if self.transport.is_closing() or self._closing_soon:
            return
        self._closing_soon = True
        self._layer.log_bad_input(self.peer, exc)
        reply = build_error_response(exc, to_tag=self._layer.new_tag())
        if reply is not None:
            self._layer.tracer.trace("send", self.peer, reply)
            self.transport.write(reply)
        self.transport.pause_reading()
        asyncio.get_running_loop().call_later(self._layer.close_grace, self.transport.close)

    def connection_lost(self, exc: Exception | None) -> None:
        self._layer.unregister_connection(self)
        if not self.closed.done():
            self.closed.set_result(None)

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)


class SipTransportLayer:
    """Owns every SIP socket; sends bytes to a Peer, reusing connections."""

    def __init__(
        self,
        handler: MessageHandler,
        *,
        ssl_server: ssl.SSLContext | None = None,
        ssl_client: ssl.SSLContext | None = None,
        max_connections: int = 1024,
        idle_timeout: float = 300.0,
        max_body_bytes: int = MAX_BODY_BYTES,
        tracer: SipTracer | None = None,
        rng: random.Random | None = None,
        close_grace: float = 1.0,
    ) -> None:
        self._handler = handler
        self.close_grace = close_grace  # answers still due on a stream whose framing was lost
        self._rng = rng or random.SystemRandom()
        self._ssl_server = ssl_server
        self._ssl_client = ssl_client
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.max_body_bytes = max_body_bytes
        self.tracer = tracer or SipTracer(None)
        self._udp: list[_UdpProtocol] = []
        self._servers: list[tuple[ListenAddress, asyncio.Server]] = []
        self._connections: dict[Peer, StreamConnection] = {}
        self._pending: dict[Peer, asyncio.Future[StreamConnection]] = {}
        self._bad_input_logged = 0.0
        self._refused_logged = 0.0
        self._send_error_logged = 0.0
        self.send_errors = 0  # UDP errors reported by the kernel (error_received)
        self._sweeper: asyncio.Task[None] | None = None
        self.bound: list[ListenAddress] = []
        # local_address answers by (transport, family), for the ``bound`` list they came from
        self._local: dict[tuple[str, bool | None], ListenAddress | None] = {}
        self._local_for: tuple[list[ListenAddress] | None, int] = (None, 0)

    async def start(self, listen: tuple[ListenAddress, ...]) -> None:
        loop = asyncio.get_running_loop()
        for address in listen:
            if address.transport == "udp":
                _, protocol = await loop.create_datagram_endpoint(
                    lambda a=address: _UdpProtocol(self, a),  # type: ignore[misc]
                    local_addr=(address.host, address.port),
                )
                assert protocol.transport is not None
                port = protocol.transport.get_extra_info("sockname")[1]
                protocol.listen = ListenAddress("udp", address.host, port)
                self._udp.append(protocol)
                self.bound.append(protocol.listen)
            else:
                context = self._ssl_server if address.transport == "tls" else None
                if address.transport == "tls" and context is None:
                    raise ValueError("TLS listener without a certificate")
                server = await loop.create_server(
                    lambda t=address.transport: StreamConnection(self, t),
                    address.host,
                    address.port,
                    ssl=context,
                    backlog=1024,
                )
                port = server.sockets[0].getsockname()[1]
                bound = ListenAddress(address.transport, address.host, port)
                self._servers.append((bound, server))
                self.bound.append(bound)
        self._sweeper = asyncio.create_task(self._sweep_idle())

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for protocol in self._udp:
            if protocol.transport is not None:
                protocol.transport.close()
        for _, server in self._servers:
            server.close()
        for connection in list(self._connections.values()):
            if connection.transport is not None:
                connection.transport.close()
        self.tracer.close()

    def local_address(self, transport: str, family_of: str | None = None) -> ListenAddress | None:
        """The listening address to advertise in Via and Contact for ``transport``.

        Asked twice per call (Contact, the SDP's address); ``bound`` changes only while
        listeners start, so the answers are kept until it does."""
        v6 = None if family_of is None else _is_ipv6(family_of)
        key = (transport, v6)
        if self._local_for[0] is not self.bound or self._local_for[1] != len(self.bound):
            self._local.clear()
            self._local_for = (self.bound, len(self.bound))
        try:
            return self._local[key]
        except KeyError:
            found = self._local[key] = self._find_local(transport, v6)
            return found

    def _find_local(self, transport: str, v6: bool | None) -> ListenAddress | None:
        candidates = [b for b in self.bound if b.transport == transport]
        if v6 is not None:
            same = [b for b in candidates if _is_ipv6(b.host) == v6]
            candidates = same or candidates
        return candidates[0] if candidates else None

    # --- receiving -------------------------------------------------------------------------

    def new_tag(self) -> str:
        """A To tag for a 400 the transport answers itself (RFC 3261 §8.2.6.2)."""
        return f"{self._rng.getrandbits(48):012x}"

    def deliver(self, message: Request | Response, peer: Peer) -> None:
        try:
            self._handler(message, peer)
        except Exception:
            # The one place a bug above must not stop the socket: log it with what it was
            # handling, and keep reading.
            what = message.method if isinstance(message, Request) else str(message.status)
            log.exception(
                "handler failed on %s from %s (Call-ID %s)",
                what,
                peer,
                message.headers.get("Call-ID"),
            )

    def log_bad_input(self, peer: Peer, exc: SipParseError) -> None:
        # One line per bad message, but never more than ~10 a second from a flood.
        now = time.monotonic()
        if now - self._bad_input_logged >= 0.1:
            self._bad_input_logged = now
            log.warning("bad SIP from %s: %s %s", peer, exc.status, exc.reason)

    def log_refused(self, peer: Peer) -> None:
        # A connection flood must not become a log flood: ~10 lines a second at most.
        now = time.monotonic()
        if now - self._refused_logged >= 0.1:
            self._refused_logged = now
            log.warning("connection limit reached: refusing %s", peer)

    def log_send_error(self, text: str) -> None:
        now = time.monotonic()
        if now - self._send_error_logged >= 1.0:
            self._send_error_logged = now
            log.warning("%s (%d send errors so far)", text, self.send_errors)

    def register_connection(self, connection: StreamConnection) -> bool:
        if len(self._connections) >= self.max_connections:
            return False
        assert connection.peer is not None
        self._connections[connection.peer] = connection
        return True

    def unregister_connection(self, connection: StreamConnection) -> None:
        if connection.peer is not None and self._connections.get(connection.peer) is connection:
            del self._connections[connection.peer]

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    async def _sweep_idle(self) -> None:
        while True:
            await asyncio.sleep(min(10.0, self.idle_timeout / 2))
            cutoff = time.monotonic() - self.idle_timeout
            for connection in list(self._connections.values()):
                if connection.last_activity < cutoff and connection.transport is not None:
                    connection.transport.close()

    # --- sending ---------------------------------------------------------------------------

    def send(self, data: bytes, peer: Peer) -> None:
        """Send now if we can (UDP, or an open connection); else connect in the background."""
        if peer.transport == "udp":
            protocol = self._udp_for(peer.host)
            if protocol is None or protocol.transport is None:
                log.warning("no UDP socket to reach %s", peer)
                return
            self.tracer.trace("send", peer, data)
            protocol.transport.sendto(data, (peer.host, peer.port))
            return
        connection = self._connections.get(peer)
        if connection is not None:
            self.tracer.trace("send", peer, data)
            connection.send(data)
            return
        asyncio.get_running_loop().create_task(self._connect_and_send(data, peer))

    async def _connect_and_send(self, data: bytes, peer: Peer) -> None:
        try:
            connection = await self.connect(peer)
        except OSError as exc:
            log.warning("cannot connect to %s: %s", peer, exc)
            return
        self.tracer.trace("send", peer, data)
        connection.send(data)

    async def connect(self, peer: Peer) -> StreamConnection:
        existing = self._connections.get(peer)
        if existing is not None:
            return existing
        pending = self._pending.get(peer)
        if pending is not None:
            return await asyncio.shield(pending)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[StreamConnection] = loop.create_future()
        self._pending[peer] = future
        try:
            context = self._ssl_client if peer.transport == "tls" else None
            _, connection = await asyncio.wait_for(
                loop.create_connection(
                    lambda: StreamConnection(self, peer.transport),
                    peer.host,
                    peer.port,
                    ssl=context,
                    server_hostname=peer.host if context else None,
                ),
                timeout=10.0,
            )
            # An outgoing connection is registered under the address we dialled, which is
            # the one later requests name.
            self.unregister_connection(connection)
            connection.peer = peer
            self._connections[peer] = connection
            future.set_result(connection)
            return connection
        except (TimeoutError, OSError) as exc:
            future.set_exception(OSError(str(exc)))
            with contextlib.suppress(OSError):
                future.exception()
            raise OSError(str(exc)) from exc
        finally:
            self._pending.pop(peer, None)

    def _udp_for(self, host: str) -> _UdpProtocol | None:
        v6 = _is_ipv6(host)
        for protocol in self._udp:
            if _is_ipv6(protocol.listen.host) == v6:
                return protocol
        return self._udp[0] if self._udp else None


@functools.lru_cache(maxsize=1024)
def _is_ipv6(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).version == 6
    except ValueError:
        return False
