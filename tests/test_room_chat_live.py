"""Chat in conference rooms through a real `chorus serve` (issue 8, "Must show").

Three people in a room: alice (SIP over TLS, msrps, and an RTP audio m-line besides chat),
bob (SIP over TCP, msrps) and carol (SIP over UDP, plain msrp over TCP). Public messages,
private messages (RFC 7701 §7.3: CPIM To names a participant), nicknames (RFC 7701 §7.1),
is-composing (RFC 3994), a spoofed CPIM From, history replayed to a joiner (and after a
restart), and what Blink and msrplib really send. The room's own notices carry
``chorus.Notice`` and are left out wherever messages are counted.

"Exactly once" is checked with a barrier rather than a pause: after the messages under test
every participant sends one more and everyone waits for all of those. The room relays to
each receiver in order over one MSRP session, so anything that was going to arrive (a
duplicate, a copy sent back to its sender, a private message leaking) has arrived by then.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from control.msrp import CpimAddress, parse_iscomposing
from control.msrp.iscomposing import ISCOMPOSING_CONTENT_TYPE, ComposingState
from control.msrp.sdp import parse_msrp_media
from tests.peers.chatclient import (
    CHORUS_NS,
    ChatClient,
    ChatSession,
    Delivered,
    RawChatSession,
    uri_key,
)
from tests.peers.chorus import ChorusProcess
from tests.peers.rtp_endpoint import RtpEndpoint
from tests.peers.wait import wait_until

pytestmark = pytest.mark.timeout(120)

DATA = Path(__file__).parent / "data" / "room"
HISTORY = 5
ROOM_CONFIG: dict[str, dict[str, Any]] = {
    "conference": {"history_messages": HISTORY, "chat_rate": 1000, "chat_burst": 1000},
    # No test here is about RTP timeouts; alice's audio endpoint stays silent.
    "rtp": {"timeout": 300.0},
}
# Recent: [conference] history_max_age (a week by default) must not expire what we send.
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


@pytest.fixture(scope="module")
def chorus() -> Iterator[ChorusProcess]:
    with ChorusProcess(ROOM_CONFIG) as process:
        yield process
        assert process.alive, process.log()
        assert "Traceback" not in process.log(), process.log()


@contextlib.asynccontextmanager
async def people(*specs: tuple[str, str, str]) -> AsyncIterator[list[ChatClient]]:
    """ChatClients for (user, display name, SIP transport), left and closed at the end."""
    async with contextlib.AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(ChatClient(user, display, sip_transport=transport))
            for user, display, transport in specs
        ]


THREE = (("alice", "Alice", "tls"), ("bob", "Bob", "tcp"), ("carol", "Carol", "udp"))


async def join_three(
    chorus: ChorusProcess, room: str, clients: list[ChatClient]
) -> list[ChatSession]:
    alice, bob, carol = clients
    return [
        await alice.join(chorus, room, secure=True, audio=RtpEndpoint("PCMU", 8000, 0)),
        await bob.join(chorus, room, secure=True),
        await carol.join(chorus, room, secure=False),
    ]


async def barrier(sessions: list[ChatSession], tag: str) -> None:
    """Every session says ``<tag> <user>#<n>``; every session waits for all the others'."""
    marks = {}
    for index, session in enumerate(sessions):
        text = f"{tag} {session.client.user}#{index}"
        mid = await session.say(text)
        marks[text] = (session, mid)
    for text, (sender, mid) in marks.items():
        assert await sender.status_of(mid) == 200, f"barrier message {text!r} refused"
        for session in sessions:
            if session is not sender and session.client is not sender.client:
                await session.wait_text(text)


def texts_from(session: ChatSession, barrier_tag: str) -> Counter[str]:
    """What the session received from people, barrier messages left out."""
    return Counter(t for t in session.texts() if not t.startswith(barrier_tag))


def by_text(session: ChatSession, text: str) -> Delivered:
    matches = [d for d in session.public() if d.text == text]
    assert len(matches) == 1, f"{session.client.user}: {len(matches)} copies of {text!r}"
    return matches[0]


# ---- the answer ------------------------------------------------------------------------


async def test_chat_answer_is_a_chat_room(chorus: ChorusProcess) -> None:
    """The room answers chat as SylkServer's rooms do: msrps or msrp as offered, CPIM only,
    any wrapped type, and the chatroom features (RFC 7701 §5.1)."""
    async with people(("alice", "Alice", "tls"), ("carol", "Carol", "udp")) as (alice, carol):
        tls = await alice.join(chorus, "answer", secure=True, audio=RtpEndpoint("PCMU", 8000, 0))
        tcp = await carol.join(chorus, "answer", secure=False)
        assert tls.answer is not None and tls.answer.media[0].port  # audio answered too
        for session, proto in ((tls, "TCP/TLS/MSRP"), (tcp, "TCP/MSRP")):
            line = session.chat_line
            assert (line.media, line.proto, line.formats) == ("message", proto, ["*"]), line
            assert line.port
            theirs = parse_msrp_media(line)
            assert theirs.accept_types == ("message/cpim",)
            assert theirs.accept_wrapped_types == ("*",)
            assert set(theirs.chatroom) >= {
                "nickname",
                "private-messages",
                "com.ag-projects.screen-sharing",
            }, theirs.chatroom
            assert theirs.endpoint.secure is (proto == "TCP/TLS/MSRP")


# ---- public, private, nicknames, is-composing, spoofing --------------------------------


async def test_public_messages_reach_exactly_the_two_others(chorus: ChorusProcess) -> None:
    async with people(*THREE) as clients:
        sessions = await join_three(chorus, "public", clients)
        sent: dict[str, ChatSession] = {}
        for round_ in range(3):
            for index, session in enumerate(sessions):
                text = f"{session.client.user} says {round_}"
                mid = await session.say(text, when=T0 + timedelta(seconds=10 * round_ + index))
                sent[text] = session
                assert await session.status_of(mid) == 200
        await barrier(sessions, "barrier")
        for receiver in sessions:
            expected = Counter(t for t, s in sent.items() if s is not receiver)
            assert texts_from(receiver, "barrier") == expected, receiver.client.user
        for text, sender in sent.items():
            round_, index = int(text[-1]), sessions.index(sender)
            for receiver in sessions:
                if receiver is sender:
                    continue
                got = by_text(receiver, text)
                assert got.wrapped_type == "text/plain"
                assert got.sender is not None
                assert got.sender_key == (sender.client.user, "127.0.0.1"), got.sender
                assert got.sender.display_name == sender.client.display  # no nickname yet
                assert [uri_key(r.uri) for r in got.recipients] == [("public", "127.0.0.1")]
                assert got.datetime == T0 + timedelta(seconds=10 * round_ + index)


async def test_private_message_reaches_the_target_sessions_and_the_senders_other(
    chorus: ChorusProcess,
) -> None:
    """carol (two sessions) to bob (two sessions): bob's both get it, carol's other session
    gets the copy (RFC 7701 §7.3 and SylkServer), alice and carol's sending session do not."""
    async with people(*THREE) as clients:
        alice, bob, carol = await join_three(chorus, "private", clients)
        bob2 = await clients[1].join(chorus, "private", secure=False)
        carol2 = await clients[2].join(chorus, "private", secure=True)
        everyone = [alice, bob, carol, bob2, carol2]
        mid = await carol.whisper(clients[1].uri, "psst, bob")
        assert await carol.status_of(mid) == 200
        for session in (bob, bob2, carol2):
            got = await session.wait_text("psst, bob")
            assert got.sender_key == ("carol", "127.0.0.1"), got.sender
            assert [uri_key(r.uri) for r in got.recipients] == [("bob", "127.0.0.1")]
        await barrier(everyone, "barrier")
        for session in everyone:
            copies = session.texts().count("psst, bob")
            assert copies == (1 if session in (bob, bob2, carol2) else 0), session.client.user


async def test_private_message_to_a_stranger_fails_404(chorus: ChorusProcess) -> None:
    async with people(*THREE) as clients:
        sessions = await join_three(chorus, "stranger", clients)
        carol = sessions[2]
        mid = await carol.whisper("sip:nobody@127.0.0.1", "anyone there?")
        assert await carol.refusal(mid) == 404
        await barrier(sessions, "barrier")
        for session in sessions:
            assert "anyone there?" not in session.texts(), session.client.user


async def test_nicknames_show_as_display_names_and_clash_425(chorus: ChorusProcess) -> None:
    async with people(*THREE) as clients:
        alice, bob, carol = await join_three(chorus, "nicks", clients)
        bob2 = await clients[1].join(chorus, "nicks", secure=False)
        assert await alice.nickname("Ally") == 200
        assert await bob.nickname("ally") == 425  # taken, compared case-insensitively
        assert await carol.nickname("ALLY ") == 425  # outer spaces do not count (RFC 8266)
        assert await bob.nickname("") == 424  # malformed (RFC 7701 §7.1)
        assert await bob.nickname("Bobby") == 200
        assert await bob2.nickname("Bobby") == 200  # bob's other session: the same person
        await alice.say("from Ally")
        await bob.say("from Bobby")
        for session in (bob, carol):
            got = await session.wait_text("from Ally")
            assert got.sender is not None and got.sender.display_name == "Ally"
            assert got.sender_key == ("alice", "127.0.0.1")
        got = await carol.wait_text("from Bobby")
        assert got.sender is not None and got.sender.display_name == "Bobby"
        got = await alice.wait_text("from Bobby")
        assert got.sender is not None and got.sender.display_name == "Bobby"


async def test_is_composing_is_relayed_with_the_senders_identity(chorus: ChorusProcess) -> None:
    async with people(*THREE) as clients:
        alice, bob, carol = await join_three(chorus, "typing", clients)
        mid = await alice.composing(ComposingState.ACTIVE)
        assert await alice.status_of(mid) == 200

        def composing(session: ChatSession) -> list[Delivered]:
            return session.messages(lambda d: d.wrapped_type == ISCOMPOSING_CONTENT_TYPE)

        for session in (bob, carol):

            def seen(s: ChatSession = session) -> bool:
                return bool(composing(s))

            assert await wait_until(seen), session.client.user
            (got,) = composing(session)
            assert got.sender_key == ("alice", "127.0.0.1")
            assert got.cpim is not None
            assert parse_iscomposing(got.cpim.body).state is ComposingState.ACTIVE
        await barrier([alice, bob, carol], "barrier")
        assert not composing(alice)  # not back to its sender
        assert [len(composing(s)) for s in (bob, carol)] == [1, 1]


async def test_spoofed_cpim_from_is_refused_403(chorus: ChorusProcess) -> None:
    async with people(*THREE) as clients:
        sessions = await join_three(chorus, "spoof", clients)
        alice = sessions[0]
        body = alice.cpim("I am bob, honest", sender=CpimAddress("sip:bob@127.0.0.1", "Bob"))
        mid = await alice.send_raw(body)
        assert await alice.refusal(mid) == 403
        await barrier(sessions, "barrier")
        for session in sessions:
            assert "I am bob, honest" not in session.texts(), session.client.user


async def test_notices_come_from_the_room_marked_as_such(chorus: ChorusProcess) -> None:
    """joined, nickname and left, each from the room's URI with ``NS: chorus
    <urn:x-chorus:cpim>`` and ``chorus.Notice``, text/plain; a notice is never a message."""
    async with people(("alice", "Alice", "udp"), ("bob", "Bob", "tcp")) as (alice_c, bob_c):
        alice = await alice_c.join(chorus, "notices", secure=True)
        bob = await bob_c.join(chorus, "notices", secure=False)
        assert await alice.wait_for(lambda: alice.notices("joined")), alice.received
        assert await bob.nickname("Bobby") == 200
        assert await alice.wait_for(lambda: alice.notices("nickname")), alice.received
        await bob.leave()
        assert await alice.wait_for(lambda: alice.notices("left")), alice.received
        for notice in alice.notices():
            assert notice.sender_key == ("notices", "127.0.0.1"), notice.sender
            assert notice.wrapped_type == "text/plain"
            assert notice.cpim is not None
            assert notice.cpim.namespaces.get("chorus") == CHORUS_NS
        assert "bob" in alice.notices("joined")[0].text.lower()
        assert "Bobby" in alice.notices("nickname")[0].text
        assert alice.public() == []  # notices are not counted as messages


async def test_a_failing_receiver_gets_the_sender_a_failure_report(
    chorus: ChorusProcess,
) -> None:
    """Failure-Reports end to end (RFC 4975 §7.1.2): bob's client answers the room's SENDs
    500, so alice, who asked for failure reports (the default), gets a failure REPORT for
    her message, never silence; carol still gets the message."""
    async with people(*THREE) as clients:
        alice = await clients[0].join(chorus, "reports", secure=True)
        carol = await clients[2].join(chorus, "reports", secure=False)
        bob = RawChatSession(clients[1], "reports", secure=True)
        await bob.join(chorus)
        bob.answer_status = 500
        mid = await alice.say("will bob take it?")
        assert await alice.wait_for(lambda: mid in alice.send_status)
        assert alice.send_status[mid] == 200  # the room took it
        await carol.wait_text("will bob take it?")
        status = await alice.refusal(mid)  # and bob's failure came back as a REPORT
        assert mid in alice.reports and status >= 400, status
        await bob.leave()


async def test_bad_input_is_refused_and_the_chat_goes_on(chorus: ChorusProcess) -> None:
    """Malformed CPIM 400, a bare (non-CPIM) body 415, over [conference] max_message_bytes
    413 (RFC 4975 §7.1.2 statuses on the SEND); none reaches anyone, the next message does."""
    async with people(("alice", "Alice", "udp"), ("bob", "Bob", "tcp")) as (alice_c, bob_c):
        alice = await alice_c.join(chorus, "badinput", secure=True)
        bob = await bob_c.join(chorus, "badinput", secure=False)
        broken = await alice.send_raw(b"From: <sip:alice@127.0.0.1>\r\nno blank line")
        bare = await alice.send_raw(b"just text", content_type="text/plain")
        huge = await alice.send_raw(alice.cpim("x" * (1024 * 1024 + 1)))
        assert await alice.refusal(broken) == 400
        assert await alice.refusal(bare) == 415
        assert await alice.refusal(huge) == 413
        assert await alice.status_of(await alice.say("still here")) == 200
        await bob.wait_text("still here")
        assert bob.texts() == ["still here"]


# ---- history ---------------------------------------------------------------------------


def history_of(session: ChatSession) -> list[Delivered]:
    return [d for d in session.received if d.history and d.notice is None]


def assert_replayed(joiner: ChatSession, expected: list[tuple[str, datetime]], nick: str) -> None:
    """The joiner's first messages are exactly ``expected``, in order, marked history, with
    their sender's identity and nickname and their own DateTime."""
    history = history_of(joiner)
    assert [d.text for d in history] == [text for text, _ in expected]
    for got, (_, when) in zip(history, expected, strict=True):
        assert got.sender_key == ("alice", "127.0.0.1"), got.sender
        assert got.sender is not None and got.sender.display_name == nick
        assert got.datetime == when
    people_said = [d for d in joiner.received if d.notice is None]
    assert people_said[: len(history)] == history, "history came after live messages"


async def test_joiner_gets_the_last_messages_as_history(chorus: ChorusProcess) -> None:
    async with people(*THREE, ("dave", "Dave", "udp")) as clients:
        alice, bob, carol = await join_three(chorus, "history", clients[:3])
        assert await alice.nickname("Ally") == 200
        said = [(f"old news {i}", T0 + timedelta(minutes=i)) for i in range(HISTORY + 3)]
        for text, when in said:
            assert await alice.status_of(await alice.say(text, when=when)) == 200
        # A private message is never replayed to anyone else (and by default not stored).
        assert await carol.status_of(await carol.whisper(clients[1].uri, "secret")) == 200
        await bob.wait_text(said[-1][0])
        await bob.wait_text("secret")
        dave = await clients[3].join(chorus, "history", secure=True)
        assert await dave.wait_for(lambda: len(history_of(dave)) >= HISTORY)
        await barrier([alice, bob, carol, dave], "barrier")
        assert_replayed(dave, said[-HISTORY:], "Ally")
        assert "secret" not in [d.text for d in dave.received]
        # History goes to the joiner's new stream only: the others got nothing replayed.
        assert not history_of(bob) and not history_of(alice)


async def test_history_survives_a_restart() -> None:
    """Messages, then the server stopped (SIGTERM) and started again on the same spool,
    then the join: the history comes from the spool's SQLite, not from memory."""
    with ChorusProcess(ROOM_CONFIG) as chorus:
        said = [(f"before restart {i}", T0 + timedelta(minutes=i)) for i in range(HISTORY + 2)]
        async with people(("alice", "Alice", "tcp"), ("bob", "Bob", "udp")) as (alice, bob):
            a = await alice.join(chorus, "durable", secure=True)
            b = await bob.join(chorus, "durable", secure=False)
            assert await a.nickname("Ally") == 200
            for text, when in said:
                assert await a.status_of(await a.say(text, when=when)) == 200
            await b.wait_text(said[-1][0])
        assert chorus.stop() == 0, chorus.log()
        chorus.start()
        async with people(("dave", "Dave", "udp")) as (dave_client,):
            dave = await dave_client.join(chorus, "durable", secure=True)
            assert await dave.wait_for(lambda: len(history_of(dave)) >= HISTORY), (
                f"history after restart: {[d.text for d in dave.received]}\n{chorus.log()[-3000:]}"
            )
            assert_replayed(dave, said[-HISTORY:], "Ally")
        assert chorus.alive, chorus.log()
        assert "Traceback" not in chorus.log(), chorus.log()


# ---- what real clients send ------------------------------------------------------------


async def test_blink_cpim_and_msrplib_nickname_are_taken(chorus: ChorusProcess) -> None:
    """Blink's CPIM (CRLF headers, bare-LF MIME part) and msrplib's unquoted Use-Nickname,
    byte for byte from tests/data/room, through the room to alice."""
    cpim = (DATA / "blink_cpim_lf.cpim").read_bytes()
    nickname = (DATA / "msrplib_nickname.msrp").read_bytes()
    assert b"\r\n\r\nMIME-Version: 1.0\nContent-Type" in cpim  # the vector is what it says
    async with people(("alice", "Alice", "udp"), ("blink", "Blink User", "tcp")) as clients:
        alice = await clients[0].join(chorus, "vectors", secure=True)
        raw = RawChatSession(clients[1], "vectors", secure=True)
        await raw.join(chorus)
        tid = "nick0001"
        raw.write(raw.template(nickname, tid))
        assert await raw.status(tid) == 200, "unquoted Use-Nickname refused"
        assert await raw.status(raw.send(cpim)) == 200, "Blink's bare-LF CPIM refused"
        got = await alice.wait_text("hello from blink")
        assert got.wrapped_type == "text/plain"
        assert got.sender_key == ("blink", "127.0.0.1")
        assert got.sender is not None and got.sender.display_name == "msrplib-user"
        assert got.datetime == datetime(2011, 12, 22, 8, 12, 4, tzinfo=UTC)  # 09:12:04+01:00
        await alice.say("hello blink")
        assert await wait_raw(raw, "hello blink"), [d.text for d in raw.received]
        await raw.leave()


async def wait_raw(raw: RawChatSession, text: str) -> bool:
    return await wait_until(lambda: text in [d.text for d in raw.received])


async def test_stored_private_messages_are_not_replayed_to_others() -> None:
    """With ``store_private = true`` private messages are kept in the spool, and still never
    replayed to anyone but their parties (issue 8, item 4): a joiner gets the public history
    only. (The store replays no private message at all, not even to its parties:
    control/store.py ``HistoryStore.recent``.)"""
    config = {**ROOM_CONFIG, "conference": {**ROOM_CONFIG["conference"], "store_private": True}}
    with ChorusProcess(config) as chorus:
        async with people(*THREE, ("dave", "Dave", "udp")) as clients:
            alice, bob, carol = await join_three(chorus, "parties", clients[:3])
            assert await carol.status_of(await carol.whisper(clients[1].uri, "between us")) == 200
            assert await alice.status_of(await alice.say("for all")) == 200
            await bob.wait_text("for all")
            await bob.wait_text("between us")
            dave = await clients[3].join(chorus, "parties", secure=True)
            assert await wait_until(lambda: "for all" in replayed(dave))
            await barrier([alice, bob, carol, dave], "barrier")
            assert replayed(dave) == ["for all"]
            assert "between us" not in [d.text for d in dave.received]
        assert "Traceback" not in chorus.log(), chorus.log()


def replayed(session: ChatSession) -> list[str]:
    return [d.text for d in history_of(session)]
