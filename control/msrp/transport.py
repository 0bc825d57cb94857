"""asyncio MSRP over TCP and TLS (RFC 4975 §6, §7.3; RFC 6135), thin over :class:`MsrpConnection`.

One listening port per transport (``tls`` for msrps, ``tcp`` for msrp), both at once; every
session on a port is told apart by the session-id in its URI (§6), so one port serves them all.

- **Passive** end of a session (we listen): :meth:`MsrpTransport.open` registers the session and
  the first request that names it, on whatever connection, binds it there (§5.4). A session the
  peer never connects to fails after ``connect_timeout``; so does an accepted connection that
  never names a session.
- **Active** end (we connect): we connect to the first URI of the peer's path, or reuse a
  connection we already have to that host, port and scheme (connection sharing, §6, §7.3), and
  send a bodiless SEND at once so the far end can bind (§5.4). Its 200 marks the session
  connected. A shared connection its peer closes before that SEND is answered (the peer's last
  session on it ended just then, and it binds nothing on a connection it is closing) does not
  fail the session: it connects once more, on a new connection.
- A connection is closed when its last session closes (the BYE of the last call on it), when it
  stays silent for ``idle_timeout``, or when its byte stream can no longer be framed. Everything
  else a peer sends wrong is answered by the core (400, 403, 413, 415, 481, 501) and the other
  sessions on the connection carry on: nothing raises out of ``data_received``.

Session ids come from ``os.urandom`` (≈95 bits, RFC 4975 §14.1: unguessable), so a session
cannot be hijacked by guessing its URI.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from control.config import ListenAddress

from .channel import MsrpChannel, MsrpConnectError
from .clock import Clock, LoopClock, TimerHandle
from .connection import MsrpConnection
from .errors import MsrpUsageError
from .events import (
    ConnectionFailed,
    Event,
    MessageReceived,
    ProtocolError,
    SessionBound,
)
from .session import MessageValidator, MsrpSession, RandomSource, make_ident
from .trace import MsrpTracer
from .uri import MsrpUri, _host_key

__all__ = ["MsrpChannel", "MsrpConnectError", "MsrpTransport"]

log = logging.getLogger("chorus.msrp.transport")

_ConnKey = tuple[bool, str, int]


class _Connection(asyncio.Protocol):
    """One TCP/TLS stream: the core, the sessions on it, its timers."""

    def __init__(self, owner: MsrpTransport, *, secure: bool, key: _ConnKey | None) -> None:
        self.owner = owner
        self.secure = secure
        self.key = key  # set for connections we opened (shareable)
        self.loop = asyncio.get_running_loop()
        self.clock = owner.clock
        self.core = MsrpConnection(
            random=owner.random,
            max_message_size=owner.max_message_bytes,
            max_chunk_size=owner.max_chunk_bytes,
            completion_timeout=owner.completion_timeout,
            session_lookup=self._lookup,
        )
        self.channels: dict[str, MsrpChannel] = {}
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.used = False
        self.closing = False
        self._timer: TimerHandle | None = None
        # The deadline the timer was armed for: uvloop's call_at hands back a plain Handle
        # (no when()) for a deadline already passed, so the time is kept here.
        self._timer_at = 0.0
        self._idle: TimerHandle | None = None
        self._bind: TimerHandle | None = None
        self._last = self.clock.time()
        self._paused = False
        self._drained: asyncio.Future[None] | None = None

    # ---- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = f"{'tls' if self.secure else 'tcp'}:{peer[0]}:{peer[1]}"
        self.owner._connections.add(self)
        self._touch()
        if self.key is None:  # accepted: it must name a session soon (RFC 4975 §5.4)
            deadline = self.clock.time() + self.owner.connect_timeout
            self._bind = self.clock.call_at(deadline, self._bind_timeout)

    def data_received(self, data: bytes) -> None:
        self.owner.tracer.trace("recv", self.peer, data)
        self.owner.counters.bytes_received += len(data)
        self._touch()
        try:
            self.core.receive_data(data, self.clock.time())
            self._pump()
        except Exception:  # noqa: BLE001 - a bug must cost one connection, not the server
            # Peer input never raises out of the core (it becomes events), so this is our bug:
            # logged once with what it hit, and only this connection's sessions are ended.
            log.exception(
                "MSRP connection %s failed on %d received bytes; ending its sessions %s",
                self.peer,
                len(data),
                sorted(self.channels) or "(none bound)",
            )
            self.close()

    def eof_received(self) -> bool | None:
        """The peer closed its side (TCP FIN, TLS close_notify): nothing more comes, so the
        connection is no longer shared with a new session while asyncio closes it (TLS takes
        a few more round trips before ``connection_lost``, the window a reuse fell into)."""
        self.closing = True
        self.owner._connection_gone(self)
        return None  # asyncio closes the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        for handle in (self._timer, self._idle, self._bind):
            if handle is not None:
                handle.cancel()
        self.owner._connection_gone(self)
        reason = f"connection lost: {exc}" if exc else "connection closed"
        channels = list(self.channels.values())
        self.channels.clear()
        for channel in channels:
            if channel._rebind_elsewhere:
                self.owner._reconnect(channel)
            else:
                channel._fail(reason)
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    # ---- plumbing -----------------------------------------------------------------------

    def _lookup(self, session_id: str) -> MsrpSession | None:
        if self.closing:
            # A connection we are closing binds nothing: the session stays pending for the
            # connection its peer opens next (see _Connection.connection_lost).
            return None
        channel = self.owner._pending.get(session_id)
        if channel is None or channel.local_uri.secure != self.secure:
            return None
        return channel.session

    def _pump(self) -> None:
        out = self.core.data_to_send()
        if out:
            self.write(out)
        for event in self.core.events():
            self._dispatch(event)
        self._arm()

    def _dispatch(self, event: Event) -> None:
        match event:
            case SessionBound(session_id=sid):
                channel = self.owner._pending.pop(sid, None)
                if channel is None:  # lookup said yes a moment ago; cannot happen
                    self.core.remove_session(sid)
                    return
                self.attach(channel, in_core=True)
                channel._set_connected()
            case ConnectionFailed(reason=reason):
                log.info("MSRP %s: %s; closing", self.peer, reason)
                self.close()
            case ProtocolError(session_id=None) as problem:
                log.info("MSRP %s: %s %s", self.peer, problem.status, problem.reason)
            case _:
                session_id: str | None = getattr(event, "session_id", None)
                channel = self.channels.get(session_id) if session_id else None
                if channel is not None:
                    if isinstance(event, MessageReceived) and event.content_type is not None:
                        self.owner.counters.messages_received += 1  # not a binding SEND
                    channel._deliver(event)
                elif isinstance(event, ProtocolError):
                    log.info("MSRP %s: %s %s", self.peer, event.status, event.reason)

    def _arm(self) -> None:
        deadline = self.core.next_timer()
        if self._timer is not None:
            if deadline is not None and self._timer_at == deadline:
                return
            self._timer.cancel()
            self._timer = None
        if deadline is not None and not self.closing:
            self._timer = self.clock.call_at(deadline, self._on_timer)
            self._timer_at = deadline

    def _on_timer(self) -> None:
        self._timer = None
        self.core.handle_timer(self.clock.time())
        self._pump()

    def _touch(self) -> None:
        self._last = self.clock.time()
        if self._idle is None and not self.closing:
            self._idle = self.clock.call_at(self._last + self.owner.idle_timeout, self._idle_check)

    def _idle_check(self) -> None:
        self._idle = None
        if self.clock.time() - self._last >= self.owner.idle_timeout - 1e-3:
            log.info("MSRP %s idle for %.0f s; closing", self.peer, self.owner.idle_timeout)
            self.close()
        else:
            self._idle = self.clock.call_at(self._last + self.owner.idle_timeout, self._idle_check)

    def _bind_timeout(self) -> None:
        self._bind = None
        if not self.used:
            log.info("MSRP %s named no session in time; closing", self.peer)
            self.close()

    def write(self, data: bytes) -> None:
        if self.transport is None or self.closing:
            return
        self.owner.tracer.trace("send", self.peer, data)
        self.owner.counters.bytes_sent += len(data)
        self._touch()
        self.transport.write(data)

    async def drain(self) -> None:
        while self._paused and not self.closing:
            if self._drained is None or self._drained.done():
                self._drained = self.loop.create_future()
            await self._drained

    def attach(self, channel: MsrpChannel, *, in_core: bool = False) -> None:
        if not in_core:
            self.core.add_session(channel.session)
        self.channels[channel.session_id] = channel
        self.used = True
        channel._attached(self)

    def detach(self, channel: MsrpChannel) -> None:
        self.core.remove_session(channel.session_id)
        self.channels.pop(channel.session_id, None)
        if not self.channels and self.used:
            self.close()  # released: nothing else uses it (RFC 4975 §5.4 leaves it to us)

    def close(self) -> None:
        if self.closing:
            return
        self.closing = True
        self.owner._connection_gone(self)
        if self.transport is not None:
            self.transport.close()


@dataclass(slots=True)
class MsrpCounters:
    """Traffic since start, for /metrics (control/metrics.py): bytes on every connection (TLS:
    the plaintext), complete messages each way (a binding SEND is not one; a message sent
    chunk by chunk counts at its last chunk)."""

    bytes_received: int = 0
    bytes_sent: int = 0
    messages_received: int = 0
    messages_sent: int = 0


class MsrpTransport:
    """The MSRP listeners, the outgoing connections and every session on them.

    Limits and timers (constructor arguments): ``connect_timeout`` 30 s for a peer to connect
    (or for our connection and binding SEND to succeed); ``idle_timeout`` 3600 s of silence
    before a connection is closed; ``max_message_bytes`` and ``max_chunk_bytes`` are the core's
    413 limits; ``completion_timeout`` 30 s for the application to complete a message received
    ``awaiting_completion``. ``share_connections`` reuses one outgoing connection per peer
    address. ``clock`` reads the time and arms those timers (the loop's; a test's, moved by hand:
    :mod:`control.msrp.clock`).
    """

    def __init__(
        self,
        *,
        random: RandomSource = os.urandom,
        connect_timeout: float = 30.0,
        idle_timeout: float = 3600.0,
        max_message_bytes: int = 16 * 1024 * 1024,
        max_chunk_bytes: int = 64 * 1024 * 1024,
        completion_timeout: float = 30.0,
        advertised_host: str | None = None,
        tracer: MsrpTracer | None = None,
        share_connections: bool = True,
        clock: Clock | None = None,
    ) -> None:
        self.random = random
        self.clock: Clock = clock or LoopClock()
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self.max_message_bytes = max_message_bytes
        self.max_chunk_bytes = max_chunk_bytes
        self.completion_timeout = completion_timeout
        self.advertised_host = advertised_host
        self.tracer = tracer or MsrpTracer(None)
        self.share_connections = share_connections
        self.ssl_server: ssl.SSLContext | None = None
        self.ssl_client: ssl.SSLContext | None = None
        self.bound: list[ListenAddress] = []
        self._servers: list[asyncio.Server] = []
        self._connections: set[_Connection] = set()
        self._outgoing: dict[_ConnKey, _Connection] = {}
        self._connecting: dict[_ConnKey, asyncio.Future[_Connection]] = {}
        self._pending: dict[str, MsrpChannel] = {}
        self._channels: dict[str, MsrpChannel] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.counters = MsrpCounters()

    # ---- listening ----------------------------------------------------------------------

    async def start(
        self,
        listen: Sequence[ListenAddress],
        *,
        ssl_server: ssl.SSLContext | None = None,
        ssl_client: ssl.SSLContext | None = None,
    ) -> None:
        """Listen on every ``tls:``/``tcp:`` address (port 0 picks a free port)."""
        self.ssl_server = ssl_server or self.ssl_server
        self.ssl_client = ssl_client or self.ssl_client
        loop = asyncio.get_running_loop()
        for address in listen:
            secure = address.transport == "tls"
            if address.transport not in ("tls", "tcp"):
                raise ValueError(f"MSRP listens on tls or tcp, not {address.transport}")
            if secure and self.ssl_server is None:
                raise ValueError("msrps needs a TLS server context")
            server = await loop.create_server(
                lambda secure=secure: _Connection(self, secure=secure, key=None),
                address.host,
                address.port,
                ssl=self.ssl_server if secure else None,
                ssl_handshake_timeout=self.connect_timeout if secure else None,
            )
            self._servers.append(server)
            port = server.sockets[0].getsockname()[1]
            self.bound.append(ListenAddress(address.transport, address.host, port))

    def listener(self, secure: bool) -> ListenAddress | None:
        kind = "tls" if secure else "tcp"
        return next((a for a in self.bound if a.transport == kind), None)

    async def stop(self) -> None:
        for channel in list(self._channels.values()):
            channel._fail("shutting down")
        for server in self._servers:
            server.close()
        for conn in list(self._connections):
            conn.close()
        for server in self._servers:
            try:
                await asyncio.wait_for(server.wait_closed(), 2.0)
            except TimeoutError:
                log.warning("MSRP listener %s still had connections 2 s after closing", server)
        for task in list(self._tasks):
            task.cancel()
        self._servers.clear()
        self.bound.clear()
        self.tracer.close()

    # ---- sessions -----------------------------------------------------------------------

    def new_session_id(self) -> str:
        """≈95 random bits (RFC 4975 §14.1 asks for at least 80 to make URIs unguessable)."""
        return make_ident(self.random, 16)

    def local_uri(self, secure: bool, session_id: str | None = None) -> MsrpUri:
        """Our URI for a new session: our listener of that scheme, or, for an endpoint that
        only connects, port 9 (nothing listens there; the path is only an identity)."""
        bound = self.listener(secure)
        host = self.advertised_host or (bound.host if bound else "127.0.0.1")
        return MsrpUri(
            host=host,
            port=bound.port if bound else 9,
            session_id=session_id or self.new_session_id(),
            transport="tcp",
            secure=secure,
        )

    def open(
        self,
        local_uri: MsrpUri,
        remote_path: Sequence[MsrpUri] | None,
        *,
        active: bool,
        accept_types: Sequence[str] = ("*",),
        validator: MessageValidator | None = None,
        max_message_size: int | None = None,
        deliver_chunks: bool = False,
        report_per_chunk: bool = False,
        nicknames: bool = False,
    ) -> MsrpChannel:
        """Start one session. Active: connect (or share) in the background; passive: wait for
        the peer. ``await channel.wait_connected()`` either way. ``nicknames``: the application
        answers NICKNAME requests (:class:`NicknameRequested`); otherwise the core answers 403.

        A passive offerer may open before it knows the peer's path (``remote_path=None``): an
        active answerer can connect before its answer arrives here. The path is set with
        :meth:`MsrpChannel.set_remote_path` when the answer comes.
        """
        if not remote_path and active:
            raise MsrpUsageError("an active session needs the peer's path")
        if local_uri.session_id in self._channels:
            raise MsrpUsageError(f"session {local_uri.session_id!r} already open")
        if not active and self.listener(local_uri.secure) is None:
            raise MsrpUsageError(f"no {local_uri.scheme} listener for a passive session")
        session = MsrpSession(
            local_uri,
            remote_path or None,
            accept_types=accept_types,
            deliver_chunks=deliver_chunks,
            report_per_chunk=report_per_chunk,
            max_message_size=max_message_size,
            validator=validator,
            nicknames=nicknames,
        )
        channel = MsrpChannel(self, session, remote_path or (), active=active)
        self._channels[channel.session_id] = channel
        if active:
            self._start_connect(channel)
        else:
            self._pending[channel.session_id] = channel
        return channel

    def channel(self, session_id: str) -> MsrpChannel | None:
        return self._channels.get(session_id)

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    async def _connect(self, channel: MsrpChannel) -> None:
        hop = channel.remote_path[0]
        try:
            conn = await self._connection_to(hop)
        except (OSError, TimeoutError, ssl.SSLError, MsrpConnectError) as exc:
            channel._fail(f"cannot connect to {hop}: {exc}")
            return
        if channel.closed:
            if not conn.channels:
                conn.close()
            return
        # Sharing a connection races with its peer closing it: the peer's last session on it
        # may end (a BYE) just as we send this session's binding SEND there, and the close
        # comes before the SEND is answered.  Such a session is connected again, once, on a
        # new connection (connection_lost); one on a connection of its own fails then.
        channel._shared_bind = conn.used and not channel._rebound
        conn.attach(channel)
        mid = conn.core.new_message_id()
        channel._bind_message_id = mid
        conn.write(
            conn.core.send_empty(channel.remote_path, channel.from_path, mid, now=conn.clock.time())
        )
        conn._arm()

    async def _connection_to(self, hop: MsrpUri) -> _Connection:
        key: _ConnKey = (hop.secure, _host_key(hop.host), hop.effective_port)
        if self.share_connections:
            existing = self._outgoing.get(key)
            if existing is not None and not existing.closing:
                return existing
            waiting = self._connecting.get(key)
            if waiting is not None:
                return await asyncio.shield(waiting)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_Connection] = loop.create_future()
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        if self.share_connections:
            self._connecting[key] = future
        try:
            context: ssl.SSLContext | None = None
            if hop.secure:
                context = self.ssl_client or ssl.create_default_context()
            _, protocol = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _Connection(self, secure=hop.secure, key=key),
                    hop.host,
                    hop.effective_port,
                    ssl=context,
                ),
                self.connect_timeout,
            )
            conn = protocol
            if self.share_connections:
                self._outgoing[key] = conn
            future.set_result(conn)
            return conn
        except BaseException as exc:
            future.set_exception(MsrpConnectError(str(exc) or type(exc).__name__))
            raise
        finally:
            if self._connecting.get(key) is future:
                del self._connecting[key]

    def _reconnect(self, channel: MsrpChannel) -> None:
        """Bind ``channel`` again on a new connection: its shared one closed before the
        binding SEND was answered, so the peer never bound it there (a closing connection
        binds nothing, :meth:`_Connection._lookup`).  Its connect deadline still runs."""
        log.info("MSRP %s: its shared connection closed before binding", channel.session_id)
        channel._detached_for_rebind()
        self._start_connect(channel)

    def _start_connect(self, channel: MsrpChannel) -> None:
        task = asyncio.create_task(self._connect(channel))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _forget(self, channel: MsrpChannel) -> None:
        self._channels.pop(channel.session_id, None)
        if self._pending.get(channel.session_id) is channel:
            del self._pending[channel.session_id]

    def _connection_gone(self, conn: _Connection) -> None:
        self._connections.discard(conn)
        if conn.key is not None and self._outgoing.get(conn.key) is conn:
            del self._outgoing[conn.key]
