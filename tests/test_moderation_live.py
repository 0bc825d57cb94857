"""Moderation through a real ``chorus serve`` (issue 10 item 4), driven by SIP participants
and the admin API:

- the PIN in the INVITE (a ``Pin`` header field, what a dialled ``?pin=`` becomes, or a
  ``;pin=`` Request-URI parameter): wrong 403 ``Wrong PIN``, right joins and is heard;
- no PIN: the caller joins held (its tone reaches nobody, the room sends it nothing) until it
  keys the PIN as RFC 4733 telephone-events, then they hear each other (FFT);
- lock by the API: a new join 403 ``Room is locked``; unlock: joins again;
- mute by the API: the muted participant's tone no longer reaches the others (FFT), unmute
  brings it back; everyone's chat gets the notices;
- private messages disabled by the API: a private message is refused 403, a public one
  still goes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from control.media.tone import tone_power
from control.sip import sdp
from control.sip.session import Session, place_call
from control.sip.transport import Peer
from control.sip.uri import NameAddr, SipUri, parse_uri
from tests.peers.chatclient import ChatClient
from tests.peers.chorus import ChorusProcess
from tests.peers.rtp_endpoint import RtpEndpoint
from tests.peers.sipclient import SipClient
from tests.test_conference import ABSENT, HEARD, mixed_past

pytestmark = pytest.mark.timeout(180)

PIN = "2468"
ALICE_TONE, BOB_TONE = 440.0, 1100.0


@pytest.fixture(scope="module")
def chorus() -> Iterator[ChorusProcess]:
    settings = {"rtp": {"timeout": 120.0}, "conference": {"rooms": {"vault": {"pin": PIN}}}}
    with ChorusProcess(settings) as process:
        yield process
        assert process.alive, process.log()
        assert "Traceback" not in process.log(), process.log()


class AdminClient:
    """The admin API of a ChorusProcess: URL and token from its spool, as the CLI reads."""

    def __init__(self, chorus: ChorusProcess) -> None:
        spool = chorus.workdir / "spool" / "api"
        self.url = (spool / "url").read_text().strip()
        self.token = (spool / "token").read_text().strip()

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token}"}
        async with (
            aiohttp.ClientSession(headers=headers) as http,
            http.request(method, self.url + path, json=body) as response,
        ):
            return response.status, await response.json()


@pytest.fixture
async def admin(chorus: ChorusProcess) -> AsyncIterator[AdminClient]:
    yield AdminClient(chorus)


class NamedClient(SipClient):
    def __init__(self, user: str) -> None:
        super().__init__("udp")
        self.user = user

    def identity(self) -> NameAddr:
        return NameAddr(SipUri(host="127.0.0.1", user=self.user), self.user.title())


class Caller:
    """An audio-only SIP participant with its own identity."""

    def __init__(self, user: str, seed: int) -> None:
        self.client = NamedClient(user)
        self.audio = RtpEndpoint("PCMU", 8000, 0, seed=seed)
        self.session: Session | None = None

    async def call(
        self, chorus: ChorusProcess, room: str, suffix: str = "", pin: str | None = None
    ) -> tuple[int, str]:
        """INVITE ``room`` (``suffix`` after the port; ``pin`` as a Pin header field)."""
        await self.client.__aenter__()
        await self.audio.open()
        uri = parse_uri(f"sip:{room}@127.0.0.1:{chorus.sip_port}{suffix}")
        session, response = await place_call(
            self.client.ua,
            uri,
            from_=self.client.identity(),
            offer=bytes(self.audio.offer()),
            peer=Peer("udp", "127.0.0.1", chorus.sip_port),
            extra_headers=[("Pin", pin)] if pin is not None else [],
        )
        if session is not None:
            self.session = session
            self.audio.answered_sdp(sdp.parse(response.body))
        return response.status, response.reason

    async def close(self) -> None:
        if self.session is not None:
            await self.session.bye()
        self.audio.close()
        if self.client.layer is not None:
            await self.client.__aexit__(None, None, None)


async def heard(listener: RtpEndpoint, talker: RtpEndpoint, freq: float) -> float:
    """How loud ``freq`` is in what ``listener`` heard while ``talker`` played it (dB)."""
    mark = listener.heard().size
    await talker.play(freq, 2.0)
    assert await mixed_past(listener), "the room stopped sending"
    pcm = listener.heard()[mark + int(0.6 * listener.sample_rate) :]
    assert len(pcm) > listener.sample_rate, "too little audio heard"
    return tone_power(pcm, listener.sample_rate, freq)


async def test_pin_in_uri_wrong_403_right_joins(chorus: ChorusProcess) -> None:
    alice, wrong, bob = Caller("alice", 1), Caller("mallory", 2), Caller("bob", 3)
    try:
        assert await wrong.call(chorus, "vault", pin="1111") == (403, "Wrong PIN")
        assert (await alice.call(chorus, "vault", pin=PIN))[0] == 200
        assert (await bob.call(chorus, "vault", f";pin={PIN}"))[0] == 200
        assert await heard(alice.audio, bob.audio, BOB_TONE) > HEARD
    finally:
        for caller in (alice, wrong, bob):
            await caller.close()


async def test_keypad_pin_holds_out_until_keyed(chorus: ChorusProcess, admin: AdminClient) -> None:
    alice, bob = Caller("alice", 4), Caller("bob", 5)
    try:
        assert (await alice.call(chorus, "vault", pin=PIN))[0] == 200
        assert (await bob.call(chorus, "vault"))[0] == 200  # no PIN: held out
        status, room = await admin.call("GET", "/api/rooms/vault")
        assert status == 200
        states = {p["uri"]: p["awaiting_pin"] for p in room["participants"]}
        assert states == {"sip:alice@127.0.0.1": False, "sip:bob@127.0.0.1": True}
        assert await heard(alice.audio, bob.audio, BOB_TONE) < ABSENT, "heard before the PIN"
        sent = len(bob.audio.packets())
        await alice.audio.play(ALICE_TONE, 1.0)
        assert await mixed_past(alice.audio), "the room stopped sending"
        assert len(bob.audio.packets()) == sent, "the room reached bob before the PIN"
        await bob.audio.send_dtmf("1#" + PIN + "#")  # a wrong try first, then the PIN
        _, room = await admin.call("GET", "/api/rooms/vault")
        for _ in range(100):
            if not any(p["awaiting_pin"] for p in room["participants"]):
                break
            await asyncio.sleep(0.1)  # polling the API, not a timing assertion
            _, room = await admin.call("GET", "/api/rooms/vault")
        assert not any(p["awaiting_pin"] for p in room["participants"]), room
        assert await heard(alice.audio, bob.audio, BOB_TONE) > HEARD, "not heard after the PIN"
        assert await heard(bob.audio, alice.audio, ALICE_TONE) > HEARD, "bob hears nothing"
    finally:
        for caller in (alice, bob):
            await caller.close()


async def test_lock_refuses_joins_403(chorus: ChorusProcess, admin: AdminClient) -> None:
    alice, bob, carol = Caller("alice", 6), Caller("bob", 7), Caller("carol", 8)
    try:
        assert (await alice.call(chorus, "locker"))[0] == 200
        status, room = await admin.call("POST", "/api/rooms/locker/lock")
        assert (status, room["locked"]) == (200, True)
        assert await bob.call(chorus, "locker") == (403, "Room is locked")
        status, room = await admin.call("POST", "/api/rooms/locker/unlock")
        assert (status, room["locked"]) == (200, False)
        assert (await carol.call(chorus, "locker"))[0] == 200
    finally:
        for caller in (alice, bob, carol):
            await caller.close()


async def test_mute_via_api_stops_the_tone(chorus: ChorusProcess, admin: AdminClient) -> None:
    async with (
        ChatClient("alice", "Alice") as alice_client,
        ChatClient("bob", "Bob") as bob_client,
    ):
        alice_audio = RtpEndpoint("PCMU", 8000, 0, seed=9)
        bob_audio = RtpEndpoint("PCMU", 8000, 0, seed=10)
        alice = await alice_client.join(chorus, "hush", audio=alice_audio)
        bob = await bob_client.join(chorus, "hush", audio=bob_audio)
        assert await heard(alice_audio, bob_audio, BOB_TONE) > HEARD
        status, who = await admin.call("POST", "/api/rooms/hush/participants/bob@127.0.0.1/mute")
        assert (status, who["muted"]) == (200, True)
        assert await heard(alice_audio, bob_audio, BOB_TONE) < ABSENT, "muted bob still heard"
        assert await heard(bob_audio, alice_audio, ALICE_TONE) > HEARD, "muted bob hears"
        assert await alice.wait_for(lambda: alice.notices("muted"))
        assert await bob.wait_for(lambda: bob.notices("muted")), "bob told he was muted"
        status, who = await admin.call("POST", "/api/rooms/hush/participants/Bob/unmute")
        assert (status, who["muted"]) == (200, False)
        assert await heard(alice_audio, bob_audio, BOB_TONE) > HEARD, "unmuted bob not heard"
        assert await alice.wait_for(lambda: alice.notices("unmuted"))


async def test_private_messages_disabled_403(chorus: ChorusProcess, admin: AdminClient) -> None:
    async with (
        ChatClient("alice", "Alice") as alice_client,
        ChatClient("bob", "Bob") as bob_client,
    ):
        alice = await alice_client.join(chorus, "quiet")
        bob = await bob_client.join(chorus, "quiet")
        first = await alice.send_raw(alice.cpim("psst", to=bob_client.uri))
        assert await alice.status_of(first) == 200
        await bob.wait_text("psst")
        body = {"allowed": False}
        status, room = await admin.call("PUT", "/api/rooms/quiet/private-messages", body)
        assert (status, room["private_messages"]) == (200, False)
        assert await bob.wait_for(lambda: bob.notices("private-messages-off"))
        refused = await alice.send_raw(alice.cpim("psst again", to=bob_client.uri))
        assert await alice.refusal(refused) == 403
        assert await alice.status_of(await alice.say("hello all")) == 200
        await bob.wait_text("hello all")
        assert "psst again" not in bob.texts()
