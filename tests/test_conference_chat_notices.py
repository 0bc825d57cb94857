"""The room's notices and the engine events the room turns into chat, through the server in
this process (so the audio engine's event queue can be fed): joined, media added and removed,
muted by an operator (MuteChanged), audio moved to another media node (StreamMoved: the room
re-INVITEs with the new address and a higher SDP version, RFC 3264 §8), left.

Notices come from the room URI (display name its user part) with ``chorus.Notice: <kind>``
in the ``urn:x-chorus:cpim`` namespace; chat participants are Chorus' own test client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from control.conference import ConferenceApp
from control.media.engine import AudioAnswer, MuteChanged, RoomId, StreamMoved
from control.server import Server
from control.sip import sdp
from control.sip.session import Offer
from tests.peers.chatclient import ChatClient, ChatSession
from tests.peers.inprocess import running_server
from tests.peers.rtp_endpoint import RtpEndpoint
from tests.peers.wait import wait_until

pytestmark = pytest.mark.timeout(60)

ROOM = RoomId("news@127.0.0.1")


class _Ports:
    def __init__(self, port: int) -> None:
        self.sip_port = port
        self.tls_port = port  # no SIP over TLS here; the clients use UDP


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[Server, _Ports]]:
    async with running_server(tmp_path / "spool", rtp={"codecs": ["PCMU"], "timeout": 60.0}) as (
        chorus,
        port,
    ):
        yield chorus, _Ports(port)


def conference(server: Server) -> ConferenceApp:
    app = server.applications["conference"]
    assert isinstance(app, ConferenceApp)
    return app


async def notice(session: ChatSession, kind: str, count: int = 1) -> list[str]:
    assert await session.wait_for(lambda: len(session.notices(kind)) >= count), (
        f"{session.client.user} never got a {kind!r} notice: {[d.text for d in session.received]}"
    )
    return [d.text for d in session.notices(kind)]


async def test_notices_follow_joins_media_mute_moves_and_leaves(
    server: tuple[Server, _Ports],
) -> None:
    chorus, ports = server
    async with (
        ChatClient("alice", "Alice", sip_transport="udp") as alice_client,
        ChatClient("bob", "Bob", sip_transport="udp") as bob_client,
    ):
        alice = await alice_client.join(ports, "news", secure=False)
        audio = RtpEndpoint("PCMU", 8000, 0, seed=3)
        bob = await bob_client.join(ports, "news", secure=False, audio=audio)
        assert await notice(alice, "joined") == ["Bob joined"]
        got = alice.notices("joined")[0]
        assert got.sender is not None and (got.sender.uri, got.sender.display_name) == (
            "sip:news@127.0.0.1",
            "news",
        )
        assert bob.notices() == []  # nothing about oneself, and nothing happened before

        app = conference(chorus)
        (bob_id,) = [p.id for p in app.rooms[ROOM].participants.values() if "bob" in p.uri]
        engine_queue = app.engine._queue  # type: ignore[attr-defined]
        engine_queue.put_nowait(MuteChanged(ROOM, bob_id, muted=True, by_operator=True))
        assert await notice(alice, "muted") == ["Bob was muted"]
        assert await notice(bob, "muted") == ["Bob was muted"]  # told of it too
        assert app.rooms[ROOM].participants[bob_id].muted

        offers: list[bytes] = []

        async def answer(offer: Offer) -> None:
            offers.append(offer.body)
            assert bob.session is not None
            bob.session.answer_reinvite(offer, bytes(bob.sdp.answer(sdp.parse(offer.body), [
                sdp.Accept(port=audio.port, formats=["0"]), sdp.Accept(port=9, formats=["*"]),
            ])))  # fmt: skip

        assert bob.session is not None
        bob.session.on_reinvite = answer
        moved = sdp.Accept(port=40000, formats=["0"])
        engine_queue.put_nowait(StreamMoved(ROOM, bob_id, AudioAnswer(moved, "127.0.0.1")))
        assert await wait_until(lambda: len(offers) == 1)
        offer = sdp.parse(offers[0])
        assert bob.answer is not None and offer.origin.sess_version > bob.answer.origin.sess_version
        assert offer.media[0].port == 40000  # the audio's new home
        assert offer.media[1].port == bob.answer.media[1].port  # chat as it was

        assert (await bob.reinvite(audio=None, chat=True)).status == 200
        assert await notice(alice, "media-removed") == ["Bob removed audio"]
        again = RtpEndpoint("PCMU", 8000, 0, seed=4)
        assert (await bob.reinvite(audio=again, chat=True)).status == 200
        assert await notice(alice, "media-added") == ["Bob added audio"]
        assert len(alice.notices("media-removed")) == 1  # the chat stream was kept throughout

        await bob.leave()
        assert await notice(alice, "left") == ["Bob left"]
        await alice.leave()
