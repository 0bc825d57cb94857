"""The room's chat on a fake wire (control.conference.roomchat, fanout): a message is stored
before the validator returns (so before its 200), history comes first and in order, a slow
receiver is dropped without holding up the others, a failed delivery becomes a failure
REPORT to the sender (RFC 4975 §7.1.2), and NICKNAME is answered (RFC 7701 §6)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from control.conference.chat import ChatCore, ChatLimits, ChatMember, ChatSessionId
from control.conference.roomchat import HistoryPolicy, RoomChat
from control.media.engine import ParticipantId
from control.msrp.errors import MsrpError
from control.msrp.events import (
    ConnectionFailed,
    Event,
    MessageReceived,
    NicknameRequested,
    ResponseReceived,
)
from control.msrp.message import ByteRange, FailureReport
from control.store import HistoryStore
from tests.peers.wait import wait_until

WALL = datetime(2026, 12, 2, 18, 0, tzinfo=UTC)


class FakeChannel:
    """A protocol-level fake of MsrpChannel's application side: what was sent, answered and
    reported is recorded; ``stalled`` makes drain() block like a peer that stopped reading."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.closed = False
        self.sent: list[tuple[str, bytes]] = []
        self.responses: list[tuple[str, int]] = []
        self.reports: list[tuple[str, ByteRange, int]] = []
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self.stalled = False
        self._unstall = asyncio.Event()
        self.connected = asyncio.Event()
        self.connected.set()

    def send_message(
        self,
        content_type: str,
        body: bytes,
        *,
        success_report: bool = False,
        failure_report: FailureReport = FailureReport.YES,
    ) -> str:
        if self.closed:
            raise ConnectionError("closed")
        self.sent.append((content_type, body))
        return f"{self.name}-out-{len(self.sent)}"

    async def wait_connected(self, timeout: float | None = None) -> None:
        await self.connected.wait()

    async def drain(self) -> None:
        if self.stalled:
            await self._unstall.wait()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.events.put_nowait(ConnectionFailed("closed"))

    async def next_event(self) -> Event:
        return await self.events.get()

    def respond(self, transaction_id: str, status: int, comment: str | None = None) -> None:
        self.responses.append((transaction_id, status))

    def send_report(self, message_id: str, byte_range: ByteRange, status: int) -> None:
        self.reports.append((message_id, byte_range, status))

    def texts(self) -> list[bytes]:
        return [body.rpartition(b"\r\n\r\n")[2] for _, body in self.sent]


def cpim(text: str, sender: str) -> bytes:
    return (
        f"From: <{sender}>\r\nTo: <sip:lobby@h>\r\nDateTime: 2026-12-02T17:00:00+00:00\r\n"
        f"\r\nContent-Type: text/plain\r\n\r\n{text}"
    ).encode()


class Room:
    def __init__(self, store: HistoryStore | None = None, **limits: object) -> None:
        self.counter = 0
        self.closed: list[ChatSessionId] = []
        self.chat = RoomChat(
            ChatCore("lobby@h", "sip:lobby@h", "lobby", ChatLimits(**limits)),  # type: ignore[arg-type]
            store=store,
            history=HistoryPolicy(messages=3, max_age=86400.0),
            token=self._token,
            on_closed=self.closed.append,
            wall=lambda: WALL,
        )
        self.channels: dict[str, FakeChannel] = {}

    def _token(self) -> str:
        self.counter += 1
        return f"id{self.counter}"

    def join(self, name: str, *, connected: bool = True) -> FakeChannel:
        channel = FakeChannel(name)
        if not connected:
            channel.connected.clear()
        self.channels[name] = channel
        member = ChatMember(ChatSessionId(name), ParticipantId("p-" + name), f"sip:{name}@h")
        self.chat.attach(member, channel)
        return channel

    def say(self, name: str, text: str, *, failure_report: str = "yes") -> str:
        """What the MSRP core does: validate, then hand the message up."""
        body = cpim(text, f"sip:{name}@h")
        self.chat.validate(ChatSessionId(name), "message/cpim", body)
        mid = f"{name}-in-{text}"
        headers = (("Failure-Report", failure_report),)
        event = MessageReceived(name, mid, "message/cpim", body, headers, len(body))
        self.channels[name].events.put_nowait(event)
        return mid


async def test_public_message_is_stored_before_the_validator_returns(tmp_path: Path) -> None:
    store = HistoryStore.open(tmp_path / "h.sqlite3")
    room = Room(store)
    bob = room.join("bob")
    room.join("alice")
    room.chat.validate(ChatSessionId("alice"), "message/cpim", cpim("kept", "sip:alice@h"))
    (kept,) = store.recent("lobby@h", limit=10, now=WALL)  # before any event was handed up
    assert (kept.body, kept.sender_uri) == (b"kept", "sip:alice@h")
    assert bob.sent == []  # delivered only once the message is complete and answered
    room.chat.close()


async def test_history_first_in_order_then_live(tmp_path: Path) -> None:
    store = HistoryStore.open(tmp_path / "h.sqlite3")
    room = Room(store)
    room.join("alice")
    for n in range(5):
        room.say("alice", f"old {n}")
    dave = room.join("dave", connected=False)  # a passive session: the peer connects later
    room.say("alice", "live")
    await asyncio.sleep(0)
    assert dave.sent == []  # nothing is written (and lost) before the peer is there
    dave.connected.set()
    assert await wait_until(lambda: len(dave.sent) == 4)
    assert dave.texts() == [b"old 2", b"old 3", b"old 4", b"live"]
    assert all(b"chorus.History: yes" in body for _, body in dave.sent[:3])
    assert b"chorus.History" not in dave.sent[3][1]
    room.chat.close()


async def test_slow_receiver_is_dropped_and_the_others_keep_chatting() -> None:
    room = Room(rate=1e6, burst=100)
    alice, bob, slow = room.join("alice"), room.join("bob"), room.join("slow")
    slow.stalled = True
    count = 1500  # beyond one receiver's queue (QUEUE_CAPACITY + history + 2 bursts)
    for n in range(count):
        room.say("alice", f"m{n}")
        if n % 100 == 99:
            await asyncio.sleep(0)  # the next read from alice's connection
    assert await wait_until(lambda: len(bob.sent) == count)
    assert bob.texts() == [f"m{n}".encode() for n in range(count)]  # all, in order
    assert await wait_until(lambda: room.closed == [ChatSessionId("slow")])
    assert slow.closed and not bob.closed
    assert ChatSessionId("slow") not in room.chat.sessions
    # What the slow one never got comes back to the sender as failure REPORTs, not silence.
    assert alice.reports and {status for _, _, status in alice.reports} <= {413, 481}
    room.chat.close()


async def test_a_refused_delivery_becomes_a_failure_report_to_the_sender() -> None:
    room = Room()
    alice, bob = room.join("alice"), room.join("bob")
    mid = room.say("alice", "hi")
    assert await wait_until(lambda: len(bob.sent) == 1)
    bob.events.put_nowait(ResponseReceived("bob", "t1", "bob-out-1", "SEND", 481, None))
    size = len(cpim("hi", "sip:alice@h"))
    assert await wait_until(lambda: alice.reports == [(mid, ByteRange(1, size, size), 481)])
    room.say("alice", "quiet", failure_report="no")
    assert await wait_until(lambda: len(bob.sent) == 2)
    bob.events.put_nowait(ResponseReceived("bob", "t2", "bob-out-2", "SEND", 408, None))
    await asyncio.sleep(0)
    assert len(alice.reports) == 1  # Failure-Report: no asks for nothing
    room.chat.close()


async def test_private_to_a_stranger_is_refused_404_and_one_of_several_reported() -> None:
    room = Room()
    alice = room.join("alice")
    room.join("bob")
    body = b"To: <sip:zed@h>\r\n\r\nContent-Type: text/plain\r\n\r\nx"
    with pytest.raises(MsrpError) as caught:
        room.chat.validate(ChatSessionId("alice"), "message/cpim", body)
    assert caught.value.status == 404
    body = b"To: <sip:zed@h>\r\ncc: <sip:bob@h>\r\n\r\nContent-Type: text/plain\r\n\r\nx"
    room.chat.validate(ChatSessionId("alice"), "message/cpim", body)
    alice.events.put_nowait(MessageReceived("alice", "m9", "message/cpim", body, (), len(body)))
    assert await wait_until(lambda: [s for _, _, s in alice.reports] == [404])
    room.chat.close()


async def test_nickname_requests_are_answered() -> None:
    room = Room()
    alice, bob = room.join("alice"), room.join("bob")
    alice.events.put_nowait(NicknameRequested("alice", "n1", "Ally"))
    bob.events.put_nowait(NicknameRequested("bob", "n2", "ALLY"))
    bob.events.put_nowait(NicknameRequested("bob", "n3", None))
    assert await wait_until(lambda: len(bob.responses) == 2)
    assert alice.responses == [("n1", 200)]
    assert bob.responses == [("n2", 425), ("n3", 424)]
    assert await wait_until(lambda: any(b"chorus.Notice: nickname" in b for _, b in bob.sent))
    room.chat.close()
