"""The user agent: transactions and dialogs wired to the transports, on one event loop.

This is the asyncio layer above the sans-IO cores. It matches incoming messages to
transactions (RFC 3261 §17.1.3, §17.2.3) and dialogs (§12.2.2), re-arms one timer for the
earliest transaction deadline, and offers applications two handles: ``IncomingRequest`` (answer
it) and ``OutgoingRequest`` (await its final response).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
import string
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from control.sip.compose import ALLOWED_METHODS, USER_AGENT, build_request
from control.sip.counters import COUNTED_METHODS, SipCounters, counted_method
from control.sip.dialog import DialogId, dialog_id_of_request
from control.sip.errors import SipError
from control.sip.events import (
    AckFor2xxReceived,
    AckReceived,
    ResponseReceived,
    TimedOut,
    TransactionTerminated,
)
from control.sip.lagprobe import LagProbe
from control.sip.message import Request, Response
from control.sip.overload import OverloadGuard
from control.sip.sessiontimer import Negotiated, TimerPolicy
from control.sip.subscription import EventKey, parse_event
from control.sip.timerheap import TimerHeap, TimerOwner
from control.sip.transaction import (
    ClientTransaction,
    InviteClientTransaction,
    InviteServerTransaction,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    ServerTransaction,
    Timers,
    TransactionKey,
    cancel_target_key,
    client_key,
    server_key,
)
from control.sip.transport import Peer, SipTransportLayer
from control.sip.uri import NameAddr, SipUri, Uri, format_host

# Requests, identity and counters live in compose / counters; named here too for the
# applications that import them with the UA.
__all__ = [
    "ALLOWED_METHODS",
    "COUNTED_METHODS",
    "USER_AGENT",
    "DialogUsage",
    "IncomingRequest",
    "OutgoingRequest",
    "RequestHandler",
    "SipCounters",
    "TimerOwner",
    "UserAgent",
    "build_request",
    "counted_method",
]

log = logging.getLogger("chorus.sip.ua")

TRYING_AFTER = 0.1  # s before an unanswered INVITE gets its 100 (RFC 3261 §17.2.1: <= 200 ms)
_ALPHABET = string.ascii_letters + string.digits  # 62 characters


class DialogUsage(Protocol):
    """What the UA hands in-dialog requests and 2xx ACKs to (a call, a subscription)."""

    def handle_request(self, incoming: IncomingRequest) -> None: ...

    def handle_ack(self, request: Request, peer: Peer) -> None: ...


class IncomingRequest:
    """A request received in a server transaction, waiting for its answer."""

    def __init__(
        self, ua: UserAgent, request: Request, source: Peer, txn: ServerTransaction
    ) -> None:
        self.ua = ua
        self.request = request
        self.source = source
        self._txn = txn
        self.final_sent = False
        self.cancelled = asyncio.get_running_loop().create_future()
        self._to_tag: str | None = None  # the To tag our responses to this request carry
        # The session layer's RFC 4028 answer to this request (policy, terms), kept by its
        # 422 check so the 2xx need not work it out again.
        self.timer_terms: tuple[TimerPolicy, Negotiated] | None = None

    @property
    def method(self) -> str:
        return self.request.method

    def respond(
        self,
        status: int,
        reason: str | None = None,
        *,
        to_tag: str | None = None,
        body: bytes = b"",
        content_type: str | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> Response:
        if to_tag is None and status > 100 and self.request.to.tag is None:
            # §8.2.6.2: every response but 100 carries a To tag, and all responses to one
            # request the same one (a 487 after CANCEL ends the early dialog the 180 opened).
            to_tag = self._to_tag or self.ua.token(12)
        response = self.request.make_response(
            status, reason, to_tag=to_tag, body=body, content_type=content_type
        )
        for name, value in headers or []:
            response.headers.add(name, value)
        if "Server" not in response.headers:
            response.headers.add("Server", USER_AGENT)
        self.send_response(response)
        return response

    def send_response(self, response: Response) -> bytes | None:
        """Send ``response`` in the transaction; the bytes that went out (None: ignored)."""
        if self.final_sent:
            log.debug("ignoring a second final response to %s", self.request.method)
            return None
        if response.status >= 200:
            self.final_sent = True
            self.ua.counters.count_final(self.request, response.status)
            self.ua.answered(self)
        if self._to_tag is None and response.status > 100:
            self._to_tag = response.to.tag
        self._txn.send_response(response, self.ua.now())
        self.ua.pump_server(self._txn, self.source)
        return self._txn.last_bytes


class OutgoingRequest:
    """A request sent in a client transaction. ``final`` resolves with the final response
    (a synthetic 408 on timeout, 503 on a transport failure, RFC 3261 §8.1.3.1)."""

    def __init__(self, request: Request, peer: Peer) -> None:
        self.request = request
        self.peer = peer
        loop = asyncio.get_running_loop()
        self.final: asyncio.Future[Response] = loop.create_future()
        self.provisional: list[Callable[[Response], None]] = []
        self.on_2xx_retransmission: Callable[[Response], None] | None = None

    def _received(self, response: Response) -> None:
        if response.status < 200:
            for callback in self.provisional:
                callback(response)
        elif not self.final.done():
            self.final.set_result(response)
        elif 200 <= response.status < 300 and self.on_2xx_retransmission is not None:
            self.on_2xx_retransmission(response)

    def _synthetic(self, status: int) -> None:
        if not self.final.done():
            response = self.request.make_response(status)
            self.final.set_result(response)


RequestHandler = Callable[[IncomingRequest], Awaitable[None]]


@dataclass(slots=True)
class _ServerEntry:
    txn: ServerTransaction
    source: Peer
    incoming: IncomingRequest | None = None


class UserAgent:
    """Owns the transaction tables, the dialog table and the timer; one per server."""

    def __init__(
        self,
        *,
        timers: Timers = Timers(),
        advertised_address: str | None = None,
        outbound_proxy: Uri | None = None,
        rng: random.Random | None = None,
        session_timers: TimerPolicy | None = TimerPolicy(),
        overload: OverloadGuard | None = None,
    ) -> None:
        self.timers = timers
        # Load shedding (control/sip/overload.py); None: off, one attribute check per request.
        self.overload = overload
        self._probe: LagProbe | None = None
        self.session_timers = session_timers  # RFC 4028 policy for every session; None: off
        self.advertised_address = advertised_address
        self.outbound_proxy = outbound_proxy
        self.rng = rng or random.SystemRandom()
        self.transport: SipTransportLayer | None = None
        self.request_handler: RequestHandler | None = None
        # RFC 5057 / RFC 6665 §4.5.2: a dialog holds several usages. ``dialogs`` holds the
        # INVITE usage (the session); ``event_usages`` the subscriptions, keyed by event
        # package and id. A dialog lives while either holds an entry for it: a BYE ends the
        # INVITE usage only.
        self.dialogs: dict[DialogId, DialogUsage] = {}
        self.event_usages: dict[DialogId, dict[EventKey, DialogUsage]] = {}
        self._clients: dict[TransactionKey, tuple[ClientTransaction, OutgoingRequest]] = {}
        self._servers: dict[TransactionKey, _ServerEntry] = {}
        self._timer_heap = TimerHeap()
        # The loop timer and the deadline it was armed for: uvloop's call_at hands back a plain
        # Handle (no when()) for a deadline already passed, so the UA keeps the time itself.
        self._timer: asyncio.Handle | None = None
        self._timer_at = 0.0
        self._tasks: set[asyncio.Task[None]] = set()
        # INVITEs whose 100 (Trying) is due unless answered first: (deadline, txn, source)
        self._trying: deque[tuple[float, InviteServerTransaction, Peer]] = deque()
        self._trying_timer: asyncio.Handle | None = None
        self.counters = SipCounters()
        # contact_for's answers by (transport, host, port, user, secure): one per call else
        self._contacts: dict[tuple[str, str, int, str | None, bool], NameAddr] = {}

    # --- identity ---------------------------------------------------------------------------

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def token(self, length: int = 16) -> str:
        """``length`` characters drawn evenly from letters and digits (tags, Call-IDs,
        branches). One draw of bytes serves the whole token, not one per character (with
        SystemRandom each draw is a system call): bytes below 248 = 4 x 62 map evenly onto
        the alphabet, the others are dropped and more drawn if needed."""
        chars: list[str] = []
        while len(chars) < length:
            chars += [_ALPHABET[b % 62] for b in self.rng.randbytes(length + 4) if b < 248]
        return "".join(chars[:length])

    def new_branch(self) -> str:
        return "z9hG4bK" + self.token(20)

    def local_host_port(self, transport: str, toward: str | None = None) -> tuple[str, int]:
        assert self.transport is not None
        bound = self.transport.local_address(transport, toward)
        if bound is None:
            bound = self.transport.local_address("udp", toward)
        assert bound is not None, "no listening address"
        return self.advertised_address or bound.host, bound.port

    def via_for(self, peer: Peer) -> str:
        host, port = self.local_host_port(peer.transport, peer.host)
        return f"SIP/2.0/{peer.transport.upper()} {format_host(host)}:{port}" + (
            f";branch={self.new_branch()};rport"
        )

    def contact_for(self, peer: Peer, user: str | None = None, *, secure: bool = False) -> NameAddr:
        """Our Contact toward ``peer``.

        RFC 3261 §12.1.1 asks for a SIPS Contact only when the request's URI (or its top
        Record-Route) was SIPS; a TLS hop alone is RFC 5630's ``sip:…;transport=tls``, which
        peers such as baresip can route an ACK to while they cannot follow a ``sips:`` one.
        """
        host, port = self.local_host_port(peer.transport, peer.host)
        key = (peer.transport, host, port, user, secure)
        contact = self._contacts.get(key)
        if contact is None:
            if len(self._contacts) >= 256:
                self._contacts.clear()
            params: dict[str, str | None] = {}
            if peer.transport != "udp":
                params["transport"] = peer.transport
            scheme = "sips" if secure else "sip"
            uri = SipUri(host=host, user=user, port=port, scheme=scheme, params=params)
            contact = self._contacts[key] = NameAddr(uri)
        return contact

    # --- receiving --------------------------------------------------------------------------

    def handle_message(self, message: Request | Response, peer: Peer) -> None:
        if isinstance(message, Response):
            self._handle_response(message, peer)
        else:
            self._handle_request(message, peer)

    def _handle_response(self, response: Response, peer: Peer | None = None) -> None:
        try:
            key = client_key(response)
        except SipError as exc:
            # The parser checked Via and CSeq are present, so only a malformed top Via gets
            # here; such a response matches no transaction of ours and is dropped.
            log.warning(
                "dropping %s response from %s (Call-ID %s): %s",
                response.status,
                peer,
                response.headers.get("Call-ID"),
                exc,
            )
            return
        entry = self._clients.get(key)
        if entry is None:
            log.debug("stray response %s %s", response.status, response.call_id)
            return
        txn, _ = entry
        txn.receive_response(response, self.now())
        self._pump_client(key)

    def _handle_request(self, request: Request, peer: Peer) -> None:
        key = server_key(request)
        entry = self._servers.get(key)
        if entry is not None:
            entry.txn.receive_request(request, self.now())
            self.pump_server(entry.txn, entry.source)
            return
        method = counted_method(request.method)
        self.counters.requests_received[method] += 1
        if request.method == "ACK":
            self._handle_2xx_ack(request, peer)
            return
        if request.method == "CANCEL":
            self._handle_cancel(request, peer)
            return
        txn: ServerTransaction
        now = self.now()
        if request.method == "INVITE":
            txn = InviteServerTransaction(
                request, reliable=peer.reliable, now=now, timers=self.timers,
                send_trying=False, key=key,
            )  # fmt: skip
            self._trying_due(txn, peer, now)
        else:
            txn = NonInviteServerTransaction(
                request, reliable=peer.reliable, now=now, timers=self.timers, key=key
            )
        incoming = IncomingRequest(self, request, peer, txn)
        self._servers[key] = _ServerEntry(txn, peer, incoming)
        self.pump_server(txn, peer)
        # Max-Forwards 0 is a proxy's concern (RFC 3261 §16.3): the focus is the request's
        # endpoint and processes it as usual (RFC 4475, "zeromf").
        dialog_id = dialog_id_of_request(request)
        if dialog_id is not None:
            usage = self._usage_for(dialog_id, request)
            if usage is None:
                incoming.respond(481)
                return
            usage.handle_request(incoming)
            return
        if self.overload is not None and not self.overload.admit(now, method):
            # RFC 3261 §21.5.4: behind, so new work waits; answered in the transaction, so
            # the client's retransmissions get this 503 again and cost no more.
            incoming.respond(503, headers=[("Retry-After", self.overload.retry_header)])
            return
        if self.request_handler is None:
            incoming.respond(503)
            return
        self.spawn(self._run_handler(incoming))

    def _trying_due(self, txn: InviteServerTransaction, peer: Peer, now: float) -> None:
        """Send the INVITE's 100 (Trying) in TRYING_AFTER unless it was answered by then
        (RFC 3261 §17.2.1 asks for it only when the TU takes longer than 200 ms; an echo or a
        room answers within the same loop turn, and a 100 then is one more message built and
        sent per call). One sweep timer serves every pending INVITE, in arrival order."""
        self._trying.append((now + TRYING_AFTER, txn, peer))
        if self._trying_timer is None:
            self._trying_timer = asyncio.get_running_loop().call_at(
                now + TRYING_AFTER, self._send_tryings
            )

    def _send_tryings(self) -> None:
        self._trying_timer = None
        now = self.now()
        pending = self._trying
        while pending and pending[0][0] <= now:
            _, txn, peer = pending.popleft()
            if not txn.responded and not txn.terminated:
                txn.send_trying()
                self.pump_server(txn, peer)
        if pending:
            self._trying_timer = asyncio.get_running_loop().call_at(
                pending[0][0], self._send_tryings
            )

    def answered(self, incoming: IncomingRequest) -> None:
        """A final response is going out: the transaction table lets go of the request's
        handle (only a CANCEL still pending needed it), so what the application no longer
        holds is freed now, not when Timer J/L ends the transaction 32 s on."""
        entry = self._servers.get(incoming._txn.key)
        if entry is not None and entry.incoming is incoming:
            entry.incoming = None

    def _usage_for(self, dialog_id: DialogId, request: Request) -> DialogUsage | None:
        """The usage an in-dialog request belongs to (RFC 5057 §5): SUBSCRIBE and NOTIFY by
        their Event (package and id), everything else (and a SUBSCRIBE or REFER that starts
        a new subscription in the dialog) to the INVITE usage. A dialog that holds only
        subscriptions answers other requests 481."""
        if request.method in ("SUBSCRIBE", "NOTIFY"):
            usages = self.event_usages.get(dialog_id)
            if usages:
                try:
                    key = parse_event(request.headers.get("Event"))
                except SipError:
                    key = None
                if key is not None and key in usages:
                    return usages[key]
        return self.dialogs.get(dialog_id)

    def add_usage(self, dialog_id: DialogId, key: EventKey, usage: DialogUsage) -> None:
        """Register a subscription usage of ``dialog_id`` (it may share the INVITE's dialog)."""
        self.event_usages.setdefault(dialog_id, {})[key] = usage

    def remove_usage(self, dialog_id: DialogId, key: EventKey) -> None:
        usages = self.event_usages.get(dialog_id)
        if usages is not None:
            usages.pop(key, None)
            if not usages:
                del self.event_usages[dialog_id]

    def dialog_alive(self, dialog_id: DialogId) -> bool:
        """The dialog still has a usage: the INVITE session or a subscription."""
        return dialog_id in self.dialogs or dialog_id in self.event_usages

    async def _run_handler(self, incoming: IncomingRequest) -> None:
        assert self.request_handler is not None
        try:
            await self.request_handler(incoming)
        except Exception:
            log.exception(
                "application failed on %s from %s (Call-ID %s)",
                incoming.method,
                incoming.source,
                incoming.request.call_id,
            )
            if not incoming.final_sent:
                incoming.respond(500)

    def _handle_2xx_ack(self, request: Request, peer: Peer) -> None:
        dialog_id = dialog_id_of_request(request)
        usage = self.dialogs.get(dialog_id) if dialog_id else None
        if usage is not None:
            usage.handle_ack(request, peer)

    def _handle_cancel(self, request: Request, peer: Peer) -> None:
        """§9.2: 200 to the CANCEL, 487 to the INVITE if it is still pending."""
        invite_key = cancel_target_key(request)
        target = self._servers.get(invite_key)
        cancel_txn = NonInviteServerTransaction(
            request, reliable=peer.reliable, now=self.now(), timers=self.timers
        )
        self._servers[cancel_txn.key] = _ServerEntry(cancel_txn, peer)
        status = 200 if target is not None else 481
        cancel_txn.send_response(request.make_response(status), self.now())
        self.pump_server(cancel_txn, peer)
        if target is not None and target.incoming is not None and not target.incoming.final_sent:
            if not target.incoming.cancelled.done():
                target.incoming.cancelled.set_result(None)
            target.incoming.respond(487)

    # --- sending ----------------------------------------------------------------------------

    def send_request(self, request: Request, peer: Peer) -> OutgoingRequest:
        """Send a request in a new client transaction. The Via must already carry a branch
        (ACK for 2xx is sent with ``send_stateless``)."""
        if "Via" not in request.headers:
            request.headers.prepend("Via", self.via_for(peer))
        if "Max-Forwards" not in request.headers:
            request.headers.add("Max-Forwards", "70")
        if "User-Agent" not in request.headers:
            request.headers.add("User-Agent", USER_AGENT)
        outgoing = OutgoingRequest(request, peer)
        self.counters.requests_sent[counted_method(request.method)] += 1
        txn: ClientTransaction
        if request.method == "INVITE":
            txn = InviteClientTransaction(
                request, reliable=peer.reliable, now=self.now(), timers=self.timers
            )
        else:
            txn = NonInviteClientTransaction(
                request, reliable=peer.reliable, now=self.now(), timers=self.timers
            )
        self._clients[txn.key] = (txn, outgoing)
        self._pump_client(txn.key)
        return outgoing

    def send_stateless(self, message: Request | Response, peer: Peer) -> None:
        assert self.transport is not None
        self.transport.send(message.serialize(), peer)

    async def resolve(self, uri: Uri, *, reliable_hint: str | None = None) -> Peer:
        """Where to send a request for ``uri``: the outbound proxy, else the URI itself.

        Only IP addresses and names the host resolver knows (RFC 3263 SRV/NAPTR is the
        proxy's job in the Chorus shape, not the focus's).
        """
        target = self.outbound_proxy or uri
        if not isinstance(target, SipUri):
            raise ValueError(f"cannot route to {target}")
        transport = (
            target.transport or reliable_hint or ("tls" if target.scheme == "sips" else "udp")
        )
        port = target.port or (5061 if transport == "tls" else 5060)
        host = target.bare_host
        try:
            ipaddress.ip_address(host)
        except ValueError:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port)
            host = str(infos[0][4][0])
        return Peer(transport, host, port)

    # --- pumps and timers -------------------------------------------------------------------

    def _pump_client(self, key: TransactionKey) -> None:
        entry = self._clients.get(key)
        if entry is None:
            return
        txn, outgoing = entry
        assert self.transport is not None
        for data in txn.data_to_send():
            self.transport.send(data, outgoing.peer)
        while (event := txn.next_event()) is not None:
            match event:
                case ResponseReceived(response=response):
                    outgoing._received(response)
                case TimedOut():
                    outgoing._synthetic(408)
                case TransactionTerminated():
                    outgoing._synthetic(408)
                    self._clients.pop(key, None)
        if not txn.terminated:
            self._schedule(txn)
        else:
            self._clients.pop(key, None)
            self._forget(txn)

    def pump_server(self, txn: ServerTransaction, source: Peer) -> None:
        assert self.transport is not None
        for data in txn.data_to_send():
            self.transport.send(data, source)
        while (event := txn.next_event()) is not None:
            match event:
                case AckReceived():
                    pass
                case AckFor2xxReceived(request=ack):
                    # RFC 6026 §7.1: an RFC 2543 peer's ACK for our 2xx keys like its INVITE.
                    self._handle_2xx_ack(ack, source)
                case TimedOut():
                    log.debug("server transaction %s timed out", txn.key)
                case TransactionTerminated():
                    self._servers.pop(txn.key, None)
        if txn.terminated:
            self._servers.pop(txn.key, None)
            self._forget(txn)
        else:
            self._schedule(txn)

    def schedule(self, owner: TimerOwner) -> None:
        """Arm the loop timer for ``owner``'s deadline (sessions use it for 2xx resends)."""
        self._schedule(owner)

    def unschedule(self, owner: TimerOwner) -> None:
        """``owner`` has no deadlines left (a session that ended): its heap entries let go of
        it now. The emptied entries go at their deadline or in the next compaction, so what
        an ended session leaves in the heap until its far session-timer deadline (half an
        hour by default) is a few empty slots, not the session."""
        self._forget(owner)

    def _forget(self, owner: TimerOwner) -> None:
        self._timer_heap.forget(owner)

    def _schedule(self, owner: TimerOwner) -> None:
        deadline = owner.next_timer()
        if deadline is None or not self._timer_heap.push(owner, deadline):
            return  # no deadline, or that one is in the heap already (pumped again)
        # Armed for the heap's first deadline, not this owner's: while `_fire` runs the timer
        # is unset, and an owner rescheduled there for later (a transaction's Timer K) must
        # not hide an earlier deadline still in the heap (a session's refresh).
        first = self._timer_heap.first()
        assert first is not None
        if self._timer is None or first < self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._arm(first)

    def _arm(self, deadline: float) -> None:
        self._timer_at = deadline
        self._timer = asyncio.get_running_loop().call_at(deadline, self._fire)

    def _fire(self) -> None:
        self._timer = None
        now = self.now()
        for owner in self._timer_heap.pop_due(now):
            deadline = owner.next_timer()
            if deadline is None or deadline > now:
                if deadline is not None:
                    self._schedule(owner)
                continue
            owner.handle_timer(now)
            if isinstance(owner, ClientTransaction):
                self._pump_client(owner.key)
            elif isinstance(owner, ServerTransaction):
                entry = self._servers.get(owner.key)
                if entry is not None:
                    self.pump_server(owner, entry.source)
            else:
                self._schedule(owner)
        first = self._timer_heap.first()
        if first is not None and self._timer is None:
            self._arm(first)

    def spawn(self, coro: Awaitable[None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        """A background task (a BYE, a refresh, an application hook) that raised is logged
        here, once, with its traceback: nobody else awaits it."""
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("task %s failed", task.get_coro(), exc_info=exc)

    def watch_load(self) -> None:
        """Start the loop-lag probe that feeds ``overload`` (a no-op without one); `close`
        stops it."""
        if self.overload is not None and self.overload.enabled and self._probe is None:
            self._probe = LagProbe(self.overload)
            self._probe.start()

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.stop()
            self._probe = None
        if self._timer is not None:
            self._timer.cancel()
        if self._trying_timer is not None:
            self._trying_timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            # A failure was logged by _task_done; here we only wait for the task to end.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    @property
    def transaction_count(self) -> int:
        return len(self._clients) + len(self._servers)
