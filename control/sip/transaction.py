"""RFC 3261 §17 transactions, sans-IO, with RFC 6026's corrections to INVITE.

A transaction is fed messages and ``now`` and hands back bytes to send (``data_to_send()``),
events for the layer above (``next_event()``) and the one deadline it cares about
(``next_timer()``; call ``handle_timer(now)`` once it passes). It never touches a socket or a
clock. Each machine's transitions sit in one table: ``(state, input) -> (state, actions)``;
entering a state starts or stops its timers.

Timer deadlines follow the RFC's schedule, not the moment ``handle_timer`` happened to run:
Timer A retransmits at 0.5, 1.5, 3.5 … s even if the loop woke up a little late, and a loop that
woke up very late sends one retransmission, not a burst.

Over a reliable transport nothing is retransmitted (Timers A, E, G are not started) and the
"wait for stray retransmissions" timers D, I, J, K are zero, so those states are left at once.
"""

from __future__ import annotations

import enum
from collections import deque
from typing import ClassVar, Final

from control.sip.events import (
    AckFor2xxReceived,
    AckReceived,
    ResponseReceived,
    TimedOut,
    TransactionEvent,
    TransactionTerminated,
)
from control.sip.headers import Headers
from control.sip.matching import (
    MAGIC_COOKIE,
    TransactionKey,
    cancel_target_key,
    client_key,
    server_key,
)
from control.sip.message import Request, Response
from control.sip.timers import Timers, TwoHundredRetransmitter

__all__ = [
    "MAGIC_COOKIE",
    "ClientEvent",
    "ClientTransaction",
    "InviteClientTransaction",
    "InviteServerTransaction",
    "NonInviteClientTransaction",
    "NonInviteServerTransaction",
    "ServerEvent",
    "ServerTransaction",
    "Timers",
    "TransactionKey",
    "TransactionState",
    "TransactionStateError",
    "TwoHundredRetransmitter",
    "build_ack_for_non2xx",
    "build_cancel",
    "cancel_target_key",
    "client_key",
    "new_client_transaction",
    "new_server_transaction",
    "server_key",
]

ClientEvent = ResponseReceived | TimedOut | TransactionTerminated
ServerEvent = AckReceived | AckFor2xxReceived | TimedOut | TransactionTerminated


class TransactionStateError(Exception):
    """The transaction user asked for something the state machine forbids: a bug, not input.

    Bad input from the peer never raises here; it is absorbed as the RFC says.
    """


class TransactionState(enum.Enum):
    """The states of Figures 5-8 of RFC 3261, plus RFC 6026's Accepted."""

    # Members are singletons compared by identity: hash them so too, in C. Enum's own
    # __hash__ is a Python call, paid on every table lookup and timer dict access.
    __hash__ = object.__hash__

    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    ACCEPTED = "Accepted"
    TERMINATED = "Terminated"


class _In(enum.Enum):
    """What can happen to a transaction: a class of message, or one of the RFC's timers."""

    __hash__ = object.__hash__  # as TransactionState's

    PROVISIONAL = "1xx"
    SUCCESS = "2xx"
    FAILURE = "3xx-6xx"
    REQUEST = "request retransmission"
    ACK = "ACK"
    TIMER_A = "Timer A"
    TIMER_B = "Timer B"
    TIMER_D = "Timer D"
    TIMER_E = "Timer E"
    TIMER_F = "Timer F"
    TIMER_K = "Timer K"
    TIMER_G = "Timer G"
    TIMER_H = "Timer H"
    TIMER_I = "Timer I"
    TIMER_J = "Timer J"
    TIMER_L = "Timer L"
    TIMER_M = "Timer M"


_RETRANSMIT_TIMERS: Final = frozenset({_In.TIMER_A, _In.TIMER_E, _In.TIMER_G})
_TU_INPUTS: Final = frozenset({_In.PROVISIONAL, _In.SUCCESS, _In.FAILURE})


class _Do(enum.Enum):
    SEND = "send the TU's response"
    RESEND = "send the request (client) or the last response (server) again"
    ACK = "send the ACK for a non-2xx final response"
    PASS_UP = "pass the response to the TU"
    PASS_ACK = "pass the ACK to the TU"
    PASS_2XX_ACK = "pass the ACK for a 2xx to the TU"
    TIME_OUT = "tell the TU it timed out"


_Table = dict[tuple[TransactionState, _In], tuple[TransactionState, tuple[_Do, ...]]]

_S = TransactionState


def _classify(status: int) -> _In:
    if 100 <= status <= 199:
        return _In.PROVISIONAL
    if 200 <= status <= 299:
        return _In.SUCCESS
    if 300 <= status <= 699:
        return _In.FAILURE
    raise ValueError(f"status {status} out of range")


class _Transaction:
    """What all four machines share: timers, the outgoing queue, the event queue.

    Slotted, and the queues and retransmission intervals made only when first used: every
    call leaves its server transactions alive for Timer J/L (32 s over UDP), so what each
    holds is what the garbage collector walks again and again at a high call rate.
    """

    __slots__ = ("_deadlines", "_events", "_intervals", "_outgoing", "reliable", "state", "timers")
    _TABLE: ClassVar[_Table]

    def __init__(self, state: TransactionState, *, reliable: bool, timers: Timers) -> None:
        self.reliable = reliable
        self.timers = timers
        self.state = state
        self._deadlines: dict[_In, float] = {}
        self._intervals: dict[_In, float] | None = None  # of retransmission timers only
        self._outgoing: list[bytes] | None = None
        self._events: deque[TransactionEvent] | None = None

    def _queue(self, data: bytes) -> None:
        if self._outgoing is None:
            self._outgoing = [data]
        else:
            self._outgoing.append(data)

    def _emit(self, event: TransactionEvent) -> None:
        if self._events is None:
            self._events = deque((event,))
        else:
            self._events.append(event)

    def _pop_event(self) -> TransactionEvent | None:
        events = self._events
        if not events:
            return None
        event = events.popleft()
        if not events:
            self._events = None
        return event

    @property
    def terminated(self) -> bool:
        return self.state is TransactionState.TERMINATED

    def next_timer(self) -> float | None:
        """The earliest absolute deadline, or None when no timer runs."""
        return min(self._deadlines.values()) if self._deadlines else None

    def handle_timer(self, now: float) -> None:
        """Fire every timer due at ``now``, earliest first; a timeout wins a tie."""
        while True:
            due = [(d, t in _RETRANSMIT_TIMERS, t) for t, d in self._deadlines.items() if d <= now]
            if not due:
                return
            deadline, _, timer = min(due, key=lambda item: (item[0], item[1]))
            if timer not in _RETRANSMIT_TIMERS:
                del self._deadlines[timer]
            self._apply(timer, now)
            if self._deadlines.get(timer) == deadline:
                self._back_off(timer, now)

    def data_to_send(self) -> list[bytes]:
        """Bytes queued since the last call, in order; the caller sends each as one message."""
        out, self._outgoing = self._outgoing, None
        return [] if out is None else out

    # --- the machine --------------------------------------------------------------------------

    def _apply(self, stimulus: _In, now: float, message: Request | Response | None = None) -> bool:
        """Run one row of the table; False if the table has no row (the input is ignored)."""
        row = self._TABLE.get((self.state, stimulus))
        if row is None:
            return False
        next_state, actions = row
        for action in actions:
            self._do(action, message)
        if next_state is not self.state:
            self.state = next_state
            self._enter(next_state, now)
        return True

    def _do(self, action: _Do, message: Request | Response | None) -> None:
        raise NotImplementedError

    def _enter(self, state: TransactionState, now: float) -> None:
        """Start and stop the timers a state owns (each subclass adds its own)."""
        if state is TransactionState.TERMINATED:
            self._deadlines.clear()
            self._emit(TransactionTerminated())

    def _start(self, timer: _In, delay: float, now: float) -> None:
        """Arm ``timer``; a zero delay (D, I, J, K on reliable transports) fires it at once."""
        if delay <= 0:
            self._apply(timer, now)
            return
        self._deadlines[timer] = now + delay
        if timer in _RETRANSMIT_TIMERS:
            if self._intervals is None:
                self._intervals = {}
            self._intervals[timer] = delay

    def _stop(self, *timers: _In) -> None:
        for timer in timers:
            self._deadlines.pop(timer, None)

    def _back_off(self, timer: _In, now: float) -> None:
        """Re-arm a retransmission timer from its previous deadline.

        §17.1.1.2: Timer A doubles without bound (Timer B ends it). §17.1.2.2: Timer E doubles up
        to T2 in Trying and is T2 in Proceeding. §17.2.1: Timer G doubles up to T2. Deadlines a
        late caller has already passed are skipped without sending again.
        """
        deadline = self._deadlines[timer]
        assert self._intervals is not None
        interval = self._intervals[timer]
        while deadline <= now:
            if timer is _In.TIMER_A:
                interval = 2 * interval
            elif timer is _In.TIMER_E and self.state is TransactionState.PROCEEDING:
                interval = self.timers.t2
            else:
                interval = min(2 * interval, self.timers.t2)
            deadline += interval
        self._deadlines[timer] = deadline
        self._intervals[timer] = interval


# --- client transactions (§17.1) --------------------------------------------------------------


class ClientTransaction(_Transaction):
    """The client side: sends the request at creation and passes responses up."""

    __slots__ = ("_ack_bytes", "_request_bytes", "key", "request")
    _INITIAL_STATE: ClassVar[TransactionState]

    def __init__(
        self, request: Request, *, reliable: bool, now: float, timers: Timers = Timers()
    ) -> None:
        self._check_method(request.method)
        super().__init__(self._INITIAL_STATE, reliable=reliable, timers=timers)
        self.request = request
        branch = request.top_via.branch
        if not branch:
            raise ValueError("a client transaction needs a branch in its top Via (§8.1.1.7)")
        self.key: TransactionKey = (branch, "", request.method)
        self._request_bytes = request.serialize()
        self._ack_bytes: bytes | None = None
        self._queue(self._request_bytes)
        self._start_timers(now)

    def receive_response(self, response: Response, now: float) -> None:
        """Feed a response that matched this transaction (§17.1.3: see ``client_key``)."""
        if client_key(response) != self.key:
            raise TransactionStateError(f"response for {client_key(response)} fed to {self.key}")
        self._apply(_classify(response.status), now, response)

    def next_event(self) -> ClientEvent | None:
        event = self._pop_event()
        assert not isinstance(event, AckReceived | AckFor2xxReceived)
        return event

    def _check_method(self, method: str) -> None:
        raise NotImplementedError

    def _start_timers(self, now: float) -> None:
        raise NotImplementedError

    def _do(self, action: _Do, message: Request | Response | None) -> None:
        if action is _Do.RESEND:
            self._queue(self._request_bytes)
        elif action is _Do.TIME_OUT:
            self._emit(TimedOut())
        elif action is _Do.PASS_UP:
            assert isinstance(message, Response)
            self._emit(ResponseReceived(message))
        elif action is _Do.ACK:
            assert isinstance(message, Response)
            if self._ack_bytes is None:
                self._ack_bytes = build_ack_for_non2xx(self.request, message).serialize()
            self._queue(self._ack_bytes)


class InviteClientTransaction(ClientTransaction):
    """Figure 5 of RFC 3261 as amended by RFC 6026 §8.4 (Accepted state, Timer M).

    The ACK for a non-2xx final response is built here (§17.1.1.3) and sent again for every
    retransmission of that response; those retransmissions are not passed up. A 2xx moves to
    Accepted, where every further 2xx is passed up so the dialog layer can ACK it (§13.2.2.4);
    Timer B only runs in Calling: once a provisional arrived the TU decides (CANCEL, Timer C).
    """

    __slots__ = ()

    _INITIAL_STATE = _S.CALLING
    _TABLE: ClassVar[_Table] = {
        (_S.CALLING, _In.TIMER_A): (_S.CALLING, (_Do.RESEND,)),
        (_S.CALLING, _In.TIMER_B): (_S.TERMINATED, (_Do.TIME_OUT,)),
        (_S.CALLING, _In.PROVISIONAL): (_S.PROCEEDING, (_Do.PASS_UP,)),
        (_S.CALLING, _In.SUCCESS): (_S.ACCEPTED, (_Do.PASS_UP,)),
        (_S.CALLING, _In.FAILURE): (_S.COMPLETED, (_Do.ACK, _Do.PASS_UP)),
        (_S.PROCEEDING, _In.PROVISIONAL): (_S.PROCEEDING, (_Do.PASS_UP,)),
        (_S.PROCEEDING, _In.SUCCESS): (_S.ACCEPTED, (_Do.PASS_UP,)),
        (_S.PROCEEDING, _In.FAILURE): (_S.COMPLETED, (_Do.ACK, _Do.PASS_UP)),
        (_S.COMPLETED, _In.FAILURE): (_S.COMPLETED, (_Do.ACK,)),
        (_S.COMPLETED, _In.TIMER_D): (_S.TERMINATED, ()),
        (_S.ACCEPTED, _In.SUCCESS): (_S.ACCEPTED, (_Do.PASS_UP,)),
        (_S.ACCEPTED, _In.TIMER_M): (_S.TERMINATED, ()),
    }

    def _check_method(self, method: str) -> None:
        if method != "INVITE":
            raise ValueError(f"{method} needs a NonInviteClientTransaction")

    def _start_timers(self, now: float) -> None:
        # §17.1.1.2: Timer A = T1 on unreliable transports only; Timer B = 64*T1 always.
        if not self.reliable:
            self._start(_In.TIMER_A, self.timers.t1, now)
        self._start(_In.TIMER_B, self.timers.timeout, now)

    def _enter(self, state: TransactionState, now: float) -> None:
        super()._enter(state, now)
        if state is not _S.TERMINATED:
            self._stop(_In.TIMER_A, _In.TIMER_B)
        if state is _S.COMPLETED:
            self._start(_In.TIMER_D, 0 if self.reliable else self.timers.d, now)
        elif state is _S.ACCEPTED:
            self._start(_In.TIMER_M, self.timers.timeout, now)  # RFC 6026 §8.4


class NonInviteClientTransaction(ClientTransaction):
    """Figure 6 of RFC 3261: Timer E retransmits, Timer F times out, Timer K lingers."""

    __slots__ = ()

    _INITIAL_STATE = _S.TRYING
    _TABLE: ClassVar[_Table] = {
        (_S.TRYING, _In.TIMER_E): (_S.TRYING, (_Do.RESEND,)),
        (_S.TRYING, _In.TIMER_F): (_S.TERMINATED, (_Do.TIME_OUT,)),
        (_S.TRYING, _In.PROVISIONAL): (_S.PROCEEDING, (_Do.PASS_UP,)),
        (_S.TRYING, _In.SUCCESS): (_S.COMPLETED, (_Do.PASS_UP,)),
        (_S.TRYING, _In.FAILURE): (_S.COMPLETED, (_Do.PASS_UP,)),
        (_S.PROCEEDING, _In.TIMER_E): (_S.PROCEEDING, (_Do.RESEND,)),
        (_S.PROCEEDING, _In.TIMER_F): (_S.TERMINATED, (_Do.TIME_OUT,)),
        (_S.PROCEEDING, _In.PROVISIONAL): (_S.PROCEEDING, (_Do.PASS_UP,)),
        (_S.PROCEEDING, _In.SUCCESS): (_S.COMPLETED, (_Do.PASS_UP,)),
        (_S.PROCEEDING, _In.FAILURE): (_S.COMPLETED, (_Do.PASS_UP,)),
        (_S.COMPLETED, _In.TIMER_K): (_S.TERMINATED, ()),
    }

    def _check_method(self, method: str) -> None:
        if method in ("INVITE", "ACK"):
            raise ValueError(f"{method} is not sent in a non-INVITE client transaction")

    def _start_timers(self, now: float) -> None:
        # §17.1.2.2: Timer E = T1 on unreliable transports only; Timer F = 64*T1 always.
        if not self.reliable:
            self._start(_In.TIMER_E, self.timers.t1, now)
        self._start(_In.TIMER_F, self.timers.timeout, now)

    def _enter(self, state: TransactionState, now: float) -> None:
        super()._enter(state, now)
        if state is _S.COMPLETED:
            self._stop(_In.TIMER_E, _In.TIMER_F)
            self._start(_In.TIMER_K, 0 if self.reliable else self.timers.t4, now)


# --- server transactions (§17.2) --------------------------------------------------------------


class ServerTransaction(_Transaction):
    """The server side: absorbs request retransmissions and sends what the TU answers.

    Once its final response is sent and nothing but retransmissions can follow (a 2xx to
    INVITE: Accepted; a non-INVITE final: Completed; Confirmed; Terminated), the transaction
    lets go of the parsed request and response: what its timers still need is the key, the
    CSeq and the bytes to send again. At a high call rate every call leaves two transactions
    waiting 32 s for Timer J/L over UDP, and it is their parsed messages that the garbage
    collector would otherwise walk again and again (bench/RESULTS.md, issue 14).
    """

    __slots__ = ("_last_bytes", "_request", "cseq", "key", "last_response", "method")
    _INITIAL_STATE: ClassVar[TransactionState]
    _RELEASED: ClassVar[frozenset[TransactionState]] = frozenset(
        {_S.ACCEPTED, _S.CONFIRMED, _S.TERMINATED}
    )

    def __init__(
        self,
        request: Request,
        *,
        reliable: bool,
        now: float,
        timers: Timers = Timers(),
        key: TransactionKey | None = None,
    ) -> None:
        """``key``: ``server_key(request)`` when the caller matched with it already."""
        self._check_method(request.method)
        super().__init__(self._INITIAL_STATE, reliable=reliable, timers=timers)
        self._request: Request | None = request
        self.method = request.method
        self.cseq = request.cseq
        self.key: TransactionKey = server_key(request) if key is None else key
        self.last_response: Response | None = None
        self._last_bytes: bytes | None = None

    @property
    def request(self) -> Request:
        """The request that created the transaction, until the final response let it go."""
        if self._request is None:
            raise TransactionStateError(f"{self.method} released after its final response")
        return self._request

    @property
    def released(self) -> bool:
        return self._request is None

    @property
    def last_bytes(self) -> bytes | None:
        """The last response as sent (what a retransmission sends again)."""
        return self._last_bytes

    def send_response(self, response: Response, now: float) -> None:
        """Send the TU's response; a response the state forbids is a TransactionStateError."""
        if response.cseq != self.cseq:
            raise TransactionStateError(f"response CSeq {response.cseq} for {self.cseq}")
        stimulus = _classify(response.status)
        if (
            self.state is _S.ACCEPTED
            and stimulus is _In.SUCCESS
            and response.serialize() != self._last_bytes
        ):
            raise TransactionStateError("only the same 2xx may be sent again (RFC 6026 §8.7)")
        if not self._apply(stimulus, now, response):
            raise TransactionStateError(f"cannot send {response.status} in {self.state.value}")
        if self.state in self._RELEASED:
            self._release()

    def _release(self) -> None:
        self._request = None
        self.last_response = None

    def receive_request(self, request: Request, now: float) -> None:
        """Feed a request that matched this transaction: a retransmission, or the ACK."""
        if server_key(request) != self.key:
            raise TransactionStateError(f"request for {server_key(request)} fed to {self.key}")
        self._apply(_In.ACK if request.method == "ACK" else _In.REQUEST, now, request)
        if self._request is not None and self.state in self._RELEASED:
            self._release()  # the ACK for a non-2xx confirmed it

    def next_event(self) -> ServerEvent | None:
        event = self._pop_event()
        assert not isinstance(event, ResponseReceived)
        return event

    def _check_method(self, method: str) -> None:
        raise NotImplementedError

    def _do(self, action: _Do, message: Request | Response | None) -> None:
        if action is _Do.SEND:
            assert isinstance(message, Response)
            self._send(message)
        elif action is _Do.RESEND:
            if self._last_bytes is not None:
                self._queue(self._last_bytes)
        elif action is _Do.TIME_OUT:
            self._emit(TimedOut())
        elif action is _Do.PASS_ACK:
            assert isinstance(message, Request)
            self._emit(AckReceived(message))
        elif action is _Do.PASS_2XX_ACK:
            assert isinstance(message, Request)
            self._emit(AckFor2xxReceived(message))

    def _send(self, response: Response) -> None:
        self.last_response = response
        self._last_bytes = response.serialize()
        self._queue(self._last_bytes)


class InviteServerTransaction(ServerTransaction):
    """Figure 7 of RFC 3261 as amended by RFC 6026 §8.7 (Accepted state, Timer L).

    After a 2xx the transaction only absorbs INVITE retransmissions until Timer L: resending
    the 2xx until the ACK arrives is the UAS core's job (§13.3.1.4, ``TwoHundredRetransmitter``)
    because that ACK is a transaction of its own.
    """

    __slots__ = ()

    _INITIAL_STATE = _S.PROCEEDING
    _TABLE: ClassVar[_Table] = {
        (_S.PROCEEDING, _In.PROVISIONAL): (_S.PROCEEDING, (_Do.SEND,)),
        (_S.PROCEEDING, _In.SUCCESS): (_S.ACCEPTED, (_Do.SEND,)),
        (_S.PROCEEDING, _In.FAILURE): (_S.COMPLETED, (_Do.SEND,)),
        (_S.PROCEEDING, _In.REQUEST): (_S.PROCEEDING, (_Do.RESEND,)),
        (_S.COMPLETED, _In.REQUEST): (_S.COMPLETED, (_Do.RESEND,)),
        (_S.COMPLETED, _In.TIMER_G): (_S.COMPLETED, (_Do.RESEND,)),
        (_S.COMPLETED, _In.TIMER_H): (_S.TERMINATED, (_Do.TIME_OUT,)),
        (_S.COMPLETED, _In.ACK): (_S.CONFIRMED, (_Do.PASS_ACK,)),
        (_S.CONFIRMED, _In.REQUEST): (_S.CONFIRMED, ()),
        (_S.CONFIRMED, _In.ACK): (_S.CONFIRMED, ()),
        (_S.CONFIRMED, _In.TIMER_I): (_S.TERMINATED, ()),
        (_S.ACCEPTED, _In.SUCCESS): (_S.ACCEPTED, (_Do.SEND,)),
        (_S.ACCEPTED, _In.REQUEST): (_S.ACCEPTED, ()),
        (_S.ACCEPTED, _In.ACK): (_S.ACCEPTED, (_Do.PASS_2XX_ACK,)),
        (_S.ACCEPTED, _In.TIMER_L): (_S.TERMINATED, ()),
    }

    def __init__(
        self,
        request: Request,
        *,
        reliable: bool,
        now: float,
        timers: Timers = Timers(),
        send_trying: bool = True,
        key: TransactionKey | None = None,
    ) -> None:
        super().__init__(request, reliable=reliable, now=now, timers=timers, key=key)
        if send_trying:
            self.send_trying()

    @property
    def responded(self) -> bool:
        """Some response (a 100 included) has gone out."""
        return self._last_bytes is not None

    def send_trying(self) -> None:
        """The 100 (Trying), unless a response went out already.

        §17.2.1: a 100 quenches INVITE retransmissions; the transaction MUST send one when the
        TU has not answered within 200 ms, and need not when it has (the UA sends it then, not
        for every INVITE). §8.2.6.1: it carries the request's Timestamp; its To gets no tag.
        """
        if self.responded or self.state is not _S.PROCEEDING or self._request is None:
            return
        trying = self._request.make_response(100)  # copies Timestamp (§8.2.6.1)
        self._send(trying)

    def _do(self, action: _Do, message: Request | Response | None) -> None:
        if action is _Do.RESEND and not self.responded:
            self.send_trying()  # a retransmission before any answer: the 100 at once
            return
        super()._do(action, message)

    def _check_method(self, method: str) -> None:
        if method != "INVITE":
            raise ValueError(f"{method} needs a NonInviteServerTransaction")

    def _enter(self, state: TransactionState, now: float) -> None:
        super()._enter(state, now)
        if state is _S.COMPLETED:
            if not self.reliable:
                self._start(_In.TIMER_G, self.timers.t1, now)
            self._start(_In.TIMER_H, self.timers.timeout, now)
        elif state is _S.CONFIRMED:
            self._stop(_In.TIMER_G, _In.TIMER_H)
            self._start(_In.TIMER_I, 0 if self.reliable else self.timers.t4, now)
        elif state is _S.ACCEPTED:
            self._start(_In.TIMER_L, self.timers.timeout, now)  # RFC 6026 §8.7


class NonInviteServerTransaction(ServerTransaction):
    """Figure 8 of RFC 3261: Timer J keeps the final response for retransmitted requests."""

    __slots__ = ()

    _INITIAL_STATE = _S.TRYING
    _RELEASED = frozenset({_S.COMPLETED, _S.TERMINATED})
    _TABLE: ClassVar[_Table] = {
        (_S.TRYING, _In.PROVISIONAL): (_S.PROCEEDING, (_Do.SEND,)),
        (_S.TRYING, _In.SUCCESS): (_S.COMPLETED, (_Do.SEND,)),
        (_S.TRYING, _In.FAILURE): (_S.COMPLETED, (_Do.SEND,)),
        (_S.TRYING, _In.REQUEST): (_S.TRYING, ()),
        (_S.PROCEEDING, _In.PROVISIONAL): (_S.PROCEEDING, (_Do.SEND,)),
        (_S.PROCEEDING, _In.SUCCESS): (_S.COMPLETED, (_Do.SEND,)),
        (_S.PROCEEDING, _In.FAILURE): (_S.COMPLETED, (_Do.SEND,)),
        (_S.PROCEEDING, _In.REQUEST): (_S.PROCEEDING, (_Do.RESEND,)),
        (_S.COMPLETED, _In.REQUEST): (_S.COMPLETED, (_Do.RESEND,)),
        (_S.COMPLETED, _In.TIMER_J): (_S.TERMINATED, ()),
    }

    def _check_method(self, method: str) -> None:
        if method in ("INVITE", "ACK"):
            raise ValueError(f"{method} does not create a non-INVITE server transaction")

    def _enter(self, state: TransactionState, now: float) -> None:
        super()._enter(state, now)
        if state is _S.COMPLETED:
            self._start(_In.TIMER_J, 0 if self.reliable else self.timers.timeout, now)


def new_client_transaction(
    request: Request, *, reliable: bool, now: float, timers: Timers = Timers()
) -> ClientTransaction:
    """The right client machine for ``request``'s method."""
    cls = InviteClientTransaction if request.method == "INVITE" else NonInviteClientTransaction
    return cls(request, reliable=reliable, now=now, timers=timers)


def new_server_transaction(
    request: Request, *, reliable: bool, now: float, timers: Timers = Timers()
) -> ServerTransaction:
    """The right server machine for ``request``'s method (never for an ACK)."""
    cls = InviteServerTransaction if request.method == "INVITE" else NonInviteServerTransaction
    return cls(request, reliable=reliable, now=now, timers=timers)


# --- requests the transaction layer builds ----------------------------------------------------


def _copy_for(request: Request, method: str, to_value: str) -> Request:
    """A request sharing Request-URI, top Via, Route, From, Call-ID and CSeq number."""
    headers = Headers()
    headers.add("Via", request.headers.get_all("Via")[0])
    for value in request.headers.get_raw("Route"):
        headers.add("Route", value)
    headers.add("Max-Forwards", "70")
    headers.add("From", request.headers.get("From") or "")
    headers.add("To", to_value)
    headers.add("Call-ID", request.call_id)
    headers.add("CSeq", f"{request.cseq.number} {method}")
    return Request(headers=headers, method=method, uri=request.uri)


def build_cancel(invite: Request) -> Request:
    """CANCEL per RFC 3261 §9.1.

    Request-URI, Call-ID, From, To (no tag of our own added) and the CSeq number are the
    INVITE's; the single Via is its top Via, so the CANCEL has the same branch (the server
    pairs them by it) but its own transaction (method CANCEL); Route is copied so it follows the
    INVITE's path.
    """
    if invite.method in ("ACK", "CANCEL"):
        raise ValueError(f"{invite.method} cannot be cancelled")
    return _copy_for(invite, "CANCEL", invite.headers.get("To") or "")


def build_ack_for_non2xx(invite: Request, response: Response) -> Request:
    """The ACK an INVITE client transaction sends for a 3xx-6xx response (§17.1.1.3).

    Same Request-URI, Call-ID, From and CSeq number as the INVITE, To from the response (with
    the tag the server added), the INVITE's top Via alone (same branch: the ACK belongs to the
    INVITE's transaction) and its Route headers.
    """
    if not 300 <= response.status <= 699:
        raise ValueError(f"only non-2xx final responses get this ACK, not {response.status}")
    if response.cseq.number != invite.cseq.number:
        raise ValueError("response CSeq does not match the INVITE")
    return _copy_for(invite, "ACK", response.headers.get("To") or "")
