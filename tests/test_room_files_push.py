"""``[files] push_to_participants`` through a real `chorus serve` (issue 9; SylkServer's
``push_file_transfer``): a file alice uploads into the room is pushed, in a new call from the
room, to every other chat participant (RFC 5547 §8.2: a ``sendonly`` offer with the full
selector, ``a=setup:actpass``); each one's client answers ``recvonly`` (bob and carol
``active``, they connect; frank ``passive``, the room connects to him, RFC 6135) and receives
exactly the stored bytes. A
participant that declines (603) or refuses the m-line (port 0) does not stop the others;
alice (the sender, in any of her sessions) gets no push.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from control.config import ListenAddress
from control.msrp.events import ConnectionFailed, MessageAborted, MessageReceived
from control.msrp.fileselector import HASH_SHA1, FileSelector, parse_file_transfer
from control.msrp.sdp import Setup, accept_msrp, parse_msrp_media
from control.sip import sdp
from control.sip.session import IncomingCall
from control.sip.useragent import IncomingRequest
from tests.peers.chatclient import ChatClient
from tests.peers.chorus import ChorusProcess
from tests.test_msrp_transport import server_context  # noqa: F401 - the fixture
from tests.test_room_files_live import ROOM, Upload, person, push
from tests.test_streams_media import answer_of

pytestmark = pytest.mark.timeout(300)

LISTEN = (ListenAddress("tls", "127.0.0.1", 0),)
SIZE = 3 * 1024 * 1024 + 12345  # several chunks, the last one short


@dataclass
class Receiver:
    """One participant's client as the UAS of pushed calls: answers ``recvonly`` with
    ``a=setup:active`` (as a client behind NAT does, RFC 6135) and keeps what arrived, or
    declines every push with ``refuse`` (a SIP status, or 0 for port 0 on the m-line)."""

    client: ChatClient
    refuse: int | None = None
    passive: bool = False  # answer a=setup:passive (the room connects to our listener)
    offers: list[sdp.SessionDescription] = field(default_factory=list)
    received: list[bytes] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def install(self) -> None:
        ua = self.client.sip.ua
        previous = ua.request_handler

        async def handler(incoming: IncomingRequest) -> None:
            if incoming.request.method != "INVITE":
                assert previous is not None
                await previous(incoming)
                return
            await self._invited(IncomingCall(ua, incoming))

        ua.request_handler = handler

    async def _invited(self, call: IncomingCall) -> None:
        offer = sdp.parse(call.body)
        self.offers.append(offer)
        if self.refuse:
            call.reject(self.refuse)
            return
        media = offer.media[0]
        if self.refuse == 0:
            call.accept(sdp.serialize(answer_of(offer, [sdp.Reject()])))
            return
        theirs = parse_msrp_media(media, offer.direction_of(media))
        transfer = parse_file_transfer(media)
        assert transfer is not None
        local = self.client.msrp.local_uri(theirs.secure)
        accept = accept_msrp(local, ("*",), setup=Setup.ACTIVE, direction=sdp.Direction.RECVONLY)
        call.accept(sdp.serialize(answer_of(offer, [accept])))
        channel = self.client.msrp.open(local, theirs.path, active=True, max_message_size=1 << 30)
        try:
            await channel.wait_connected(20)
            while True:
                event = await asyncio.wait_for(channel.next_event(), 120)
                match event:
                    case MessageReceived(body=body):
                        self.received.append(body)
                        return  # the room ends the call (BYE) once the last 200 is in
                    case MessageAborted() | ConnectionFailed():
                        self.failures.append(str(event))
                        return
        finally:
            await asyncio.sleep(0.5)  # the last chunk's 200 leaves before we close
            channel.close()


@pytest.fixture(scope="module")
def chorus() -> Iterator[ChorusProcess]:
    config: dict[str, dict[str, Any]] = {
        "rtp": {"timeout": 300.0},
        "files": {"push_to_participants": True, "push_concurrency": 2},
    }
    with ChorusProcess(config) as process:
        yield process
        assert process.alive, process.log()
        assert "Traceback" not in process.log(), process.log()


async def test_a_stored_file_is_pushed_to_every_other_chat_participant(
    chorus: ChorusProcess,
    server_context: ssl.SSLContext,  # noqa: F811 - the fixture imported above
) -> None:
    data = random.Random(5).randbytes(SIZE)
    up = Upload(data, hashlib.sha1(data).digest())
    async with (
        person("alice", "Alice") as alice,
        person("bob", "Bob", "udp") as bob,
        person("carol", "Carol", "tcp") as carol,
        person("dave", "Dave", "udp") as dave,
        person("erin", "Erin", "udp") as erin,
        person("frank", "Frank", "udp") as frank,
    ):
        await frank.msrp.start(LISTEN, ssl_server=server_context)
        receivers = {
            "alice": Receiver(alice),
            "bob": Receiver(bob),
            "carol": Receiver(carol),
            "dave": Receiver(dave, refuse=603),
            "erin": Receiver(erin, refuse=0),
            "frank": Receiver(frank, passive=True),  # the room connects (RFC 6135)
        }
        for receiver in receivers.values():
            receiver.install()
        chats = {}
        for name, receiver in receivers.items():
            chats[name] = await receiver.client.join(chorus, ROOM, secure=True)
        statuses = await push(alice, chorus, up)
        assert statuses and set(statuses) == {200}, "alice's upload is stored"

        async def delivered() -> None:
            while not all(receivers[n].received for n in ("bob", "carol", "frank")):
                await asyncio.sleep(0.1)

        await asyncio.wait_for(delivered(), 120)
        for name in ("bob", "carol", "frank"):
            (body,) = receivers[name].received
            assert hashlib.sha1(body).digest() == up.sha1, f"{name} got the stored bytes"
            (offer,) = receivers[name].offers
            (media,) = offer.media
            assert offer.direction_of(media) is sdp.Direction.SENDONLY
            assert media.proto == "TCP/TLS/MSRP"
            transfer = parse_file_transfer(media)
            assert transfer is not None and transfer.transfer_id
            assert transfer.selector == FileSelector(
                name=up.name, type=up.content_type, size=SIZE, hashes=((HASH_SHA1, up.sha1),)
            )
            assert parse_msrp_media(media).setup is Setup.ACTPASS
        assert not receivers["alice"].offers, "the sender gets no push of her own file"
        assert len(receivers["dave"].offers) == 1 and not receivers["dave"].received
        assert len(receivers["erin"].offers) == 1 and not receivers["erin"].received
        # The refusals are logged once each and harm nobody: the room's chat goes on.
        await chats["dave"].say("still here")
        await chats["bob"].wait_text("still here")
        log = chorus.log()
        assert log.count("INVITE answered 603") == 1, log
        assert log.count("file m-line refused (port 0)") == 1, log
        assert log.count(" chunks) to sip:") == 3, "bob's, carol's, frank's pushes ended"
