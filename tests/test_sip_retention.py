"""An ended call leaves nothing behind: N complete calls (INVITE, 200, ACK, BYE, 200) to echo
and to conference rooms, then the clock past every transaction timer, and the server holds
no more SIP messages, sessions, dialogs, session timers, transactions or application call
state than before them.

Regression (issue 13's soak: echo RSS 126 -> 250 MB in 5 minutes at 48 calls/s): the UA's
timer heap kept every ended session, with its dialog, its 200 and the application's call
(an echo call's SDP state and reflector), until a compaction that came only after a quarter
of the heap's entries were stale, thousands of calls at a soak's rate.

No sockets for SIP: the two user agents talk over ``MemoryWire`` (a named fake: the real
parser and Via stamping, bytes handed over on the loop instead of a datagram), and the event
loop is ``FastForwardLoop`` (a named fake clock: when nothing is ready it jumps to the next
timer instead of waiting), so the 32 s of Timer J/L pass at once and the run is deterministic.
The echo app's RTP sockets are real ones on loopback.
"""

from __future__ import annotations

import asyncio
import gc
import selectors
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from control.cli import build_server
from control.conference.participant import Participant
from control.conference.room import Room
from control.config import ListenAddress, parse_config
from control.echo.app import EchoCall
from control.echo.reflector import EchoMedia, RtpReflector
from control.server import Server
from control.sip.dialog import Dialog
from control.sip.message import Request, Response
from control.sip.sdp.model import SessionDescription
from control.sip.session import Session, SessionState, place_call
from control.sip.sessiontimer import SessionTimer
from control.sip.transaction import ClientTransaction, ServerTransaction
from control.sip.transport import Peer, SipTransportLayer, _Receiver
from control.sip.uri import NameAddr, SipUri, parse_uri
from control.sip.useragent import IncomingRequest, OutgoingRequest, UserAgent
from tests.peers.ports import free_ports
from tests.test_echo import PCMU_OFFER, offer

# What one call creates and must not outlive it (the parse caches of uri.py/headers.py keep
# Via, NameAddr and SipUri values by design, bounded: not counted).
PER_CALL = (
    Request,
    Response,
    Session,
    Dialog,
    SessionTimer,
    IncomingRequest,
    OutgoingRequest,
    ServerTransaction,
    ClientTransaction,
    SessionDescription,
    EchoCall,
    EchoMedia,
    RtpReflector,
    Room,
    Participant,
)
CALLS = 40
PAST_ALL_TIMERS = 120.0  # s of the fake clock: Timer J/L/M are 64*T1 = 32 s, K and I 5 s


class _FastForwardSelector(selectors.DefaultSelector):
    """Polls instead of blocking; a wait for the next timer moves the loop's clock there."""

    def __init__(self, loop: FastForwardLoop) -> None:
        super().__init__()
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[Any]:
        events: list[Any] = super().select(0)
        if events or timeout == 0:
            return events
        if timeout is None:  # nothing scheduled: only real I/O can come
            return list(super().select(None))
        self._loop.skipped += timeout
        return events


class FastForwardLoop(asyncio.SelectorEventLoop):
    """A fake clock: ``time()`` is the monotonic clock plus every wait skipped."""

    def __init__(self) -> None:
        self.skipped = 0.0
        super().__init__(_FastForwardSelector(self))

    def time(self) -> float:
        return super().time() + self.skipped


class MemoryWire(SipTransportLayer):
    """A fake UDP hop between layers on one loop: what ``send`` gets, the layer bound to the
    peer's port receives on the next loop turn, through the real parser and Via stamping."""

    def __init__(self, ua: UserAgent, port: int, wires: dict[int, MemoryWire]) -> None:
        super().__init__(ua.handle_message)
        self.bound = [ListenAddress("udp", "127.0.0.1", port)]
        self.port = port
        self._wires = wires
        self._receiver = _Receiver(self)
        wires[port] = self
        ua.transport = self

    def send(self, data: bytes, peer: Peer) -> None:
        target = self._wires.get(peer.port)
        if target is None:
            return  # nobody there: a datagram lost
        source = Peer("udp", "127.0.0.1", self.port)
        asyncio.get_running_loop().call_soon(target._receiver.handle_bytes, data, source, False)


def live(
    kinds: tuple[type, ...] = PER_CALL, *, besides: frozenset[int] = frozenset()
) -> Counter[str]:
    """Live objects of ``kinds`` by type name, leaving out those whose id is in ``besides``
    (what earlier tests of the same process still hold: not this test's calls)."""
    gc.collect()
    return Counter(
        type(o).__name__ for o in gc.get_objects() if isinstance(o, kinds) and id(o) not in besides
    )


def build(spool: Path) -> Server:
    (rtp_low,) = free_ports(1)
    rtp_low = 20000 + rtp_low % 20000 // 2 * 2
    config = parse_config(
        {
            "sip": {"listen": ["udp:127.0.0.1:5999"]},  # never bound: MemoryWire stands in
            "rtp": {"port_range": f"{rtp_low}-{rtp_low + 199}", "native_media": False},
            "msrp": {"listen": ["tcp:127.0.0.1:0"]},
            "server": {"spool_dir": str(spool), "log_level": "WARNING"},
        }
    )
    return build_server(config)


async def calls_leave_nothing(spool: Path, target: Callable[[int], str]) -> list[Counter[str]]:
    """Live per-call objects after one warm-up call, then after CALLS more, each time with
    the fake clock moved past every timer."""
    gc.collect()
    # Held (so their ids are not reused) and left out of every count: in the full suite
    # earlier tests' objects may still be alive.
    earlier = [o for o in gc.get_objects() if isinstance(o, PER_CALL)]
    besides = frozenset(map(id, earlier))
    server = build(spool)
    wires: dict[int, MemoryWire] = {}
    MemoryWire(server.ua, 5999, wires)
    client = UserAgent()
    MemoryWire(client, 6001, wires)
    server_peer = Peer("udp", "127.0.0.1", 5999)

    async def call(n: int) -> None:
        session, response = await place_call(
            client,
            parse_uri(target(n)),
            from_=NameAddr(SipUri(host="127.0.0.1", user=f"caller{n}")),
            offer=offer(4000 + 2 * n, "0", PCMU_OFFER),
            peer=server_peer,
        )
        assert session is not None, response.status
        await asyncio.sleep(1.0)
        await session.bye()
        assert session.state is SessionState.TERMINATED

    conference = server.applications.get("conference")
    room_files = getattr(conference, "files", None)

    async def settle() -> None:
        await asyncio.sleep(PAST_ALL_TIMERS)
        if room_files is not None:
            # An ended room's file policy runs on the spool's thread in real time, which the
            # fast-forward clock does not wait for: the room is held until it is done.
            await room_files.rooms_ended()
        assert server.ua.transaction_count == 0 and client.transaction_count == 0
        assert not server.ua.dialogs and not client.dialogs

    await call(0)
    await settle()
    seen = [live(besides=besides)]
    await asyncio.gather(*(call(n) for n in range(1, CALLS + 1)))
    await settle()
    seen.append(live(besides=besides))
    await server.stop()
    await client.close()
    del earlier
    return seen


def run(coro: Callable[[], Awaitable[list[Counter[str]]]]) -> list[Counter[str]]:
    with asyncio.Runner(loop_factory=FastForwardLoop) as runner:
        return runner.run(coro())  # type: ignore[arg-type]


@pytest.mark.timeout(300)
def test_echo_calls_leave_no_sessions_messages_or_echo_state(tmp_path: Path) -> None:
    base, after = run(lambda: calls_leave_nothing(tmp_path, lambda n: "sip:echo@127.0.0.1"))
    assert after == base, f"held after {CALLS} ended echo calls: {after - base}"
    assert base["EchoCall"] == 0 and base["Session"] == 0


@pytest.mark.timeout(300)
def test_room_joins_leave_no_sessions_messages_or_rooms(tmp_path: Path) -> None:
    base, after = run(
        lambda: calls_leave_nothing(tmp_path, lambda n: f"sip:load-{n % 10}@127.0.0.1")
    )
    assert after == base, f"held after {CALLS} ended room joins: {after - base}"
    assert base["Room"] == 0 and base["Session"] == 0
