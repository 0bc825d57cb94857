"""The stream layer over real sockets: an MSRP chat stream answered by control/streams/chat.py
with control/msrp/chat.py's ChatStream as the offering client (TLS and TCP, loopback), and the
audio stream against the real EmbeddedMixer."""

from __future__ import annotations

import asyncio
import hashlib
import random
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from control.config import ListenAddress
from control.files.spool import FileSpool
from control.media.engine import ParticipantId, RoomId
from control.media.mixer import EmbeddedMixer
from control.media.ports import PortAllocator
from control.msrp.chat import ChatStream
from control.msrp.cpim import CpimAddress, CpimHeader, CpimMessage
from control.msrp.errors import MsrpError
from control.msrp.events import Event, MessageReceived, NicknameRequested, ResponseReceived
from control.msrp.fileselector import (
    HASH_SHA1,
    FileSelector,
    file_transfer_attributes,
    selector_for,
)
from control.msrp.sdp import msrp_media, parse_msrp_media
from control.msrp.transport import MsrpTransport
from control.sip import sdp
from control.sip.errors import SipError
from control.streams import (
    AudioStream,
    ChatOptions,
    FileStore,
    MediaKind,
    MsrpChatStream,
    MsrpFileStream,
    Stream,
    StreamRequest,
    negotiate,
)
from control.tls import generate_self_signed
from tests.peers.rtp_endpoint import RtpEndpoint
from tests.peers.sipclient import client_tls_context
from tests.peers.wait import wait_until

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def server_context(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "c.pem", directory / "k.pem"
    generate_self_signed(cert, key, ["127.0.0.1"])
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


@pytest.fixture
async def server(server_context: ssl.SSLContext) -> AsyncIterator[MsrpTransport]:
    transport = MsrpTransport()
    await transport.start(
        (ListenAddress("tls", "127.0.0.1", 0), ListenAddress("tcp", "127.0.0.1", 0)),
        ssl_server=server_context,
    )
    yield transport
    await transport.stop()


@pytest.fixture
async def client() -> AsyncIterator[MsrpTransport]:
    transport = MsrpTransport()
    transport.ssl_client = client_tls_context()
    await transport.start((ListenAddress("tcp", "127.0.0.1", 0),))
    yield transport
    await transport.stop()


def offer_of(*media: sdp.MediaDescription) -> sdp.SessionDescription:
    text = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    desc = sdp.parse(text)
    desc.media.extend(media)
    return sdp.parse(sdp.serialize(desc))


def answer_of(
    offer: sdp.SessionDescription, decisions: list[sdp.Accept | sdp.Reject]
) -> sdp.SessionDescription:
    return sdp.SdpSession(sess_id=7, address="127.0.0.1").answer(offer, decisions)


def cpim(body: bytes, content_type: str = "text/plain", sender: str = "sip:alice@x") -> bytes:
    return CpimMessage(
        (CpimHeader("From", str(CpimAddress(sender))), CpimHeader("To", "<sip:room@x>")),
        (("Content-Type", content_type),),
        body,
    ).serialize()


async def response_to(stream: ChatStream, message_id: str) -> ResponseReceived:
    while True:
        event: Event = await stream.receive()
        if isinstance(event, ResponseReceived) and event.message_id == message_id:
            return event


def spoof_check(content_type: str | None, body: bytes, message: CpimMessage | None) -> None:
    if message is not None and (message.sender is None or message.sender.uri != "sip:alice@x"):
        raise MsrpError(403, "CPIM From is not the sender")


@pytest.mark.parametrize("secure", [True, False], ids=["msrps", "msrp"])
async def test_chat_stream_answers_checks_and_sends(
    server: MsrpTransport, client: MsrpTransport, secure: bool
) -> None:
    offering = ChatStream(client, secure=secure, accept_types=("message/cpim",))
    offer = offer_of(offering.offer_media())
    options = ChatOptions(
        accept_types=("message/cpim",),
        accept_wrapped_types=("text/plain", "text/html"),
        chatroom=("nickname", "private-messages"),
        check=spoof_check,
    )
    stream = MsrpChatStream.open(server, offer, 0, options)
    assert stream is not None and stream.kind is MediaKind.CHAT and stream.index == 0
    assert stream.offered.secure is secure and stream.channel.local_uri.secure is secure
    answer = answer_of(offer, [stream.accept])
    media = answer.media[0]
    assert media.get("accept-types") == "message/cpim"
    assert media.get("accept-wrapped-types") == "text/plain text/html"
    assert media.get("chatroom") == "nickname private-messages"
    assert media.get("setup") == "passive"  # RFC 6135: we listen, the offerer connects
    assert media.proto == ("TCP/TLS/MSRP" if secure else "TCP/MSRP")
    offering.answered(media)
    await offering.wait_connected(10)
    await stream.channel.wait_connected(10)

    good = await offering.send("message/cpim", cpim(b"hello"))
    assert (await response_to(offering, good)).status == 200
    event = await stream.channel.next_event()
    assert isinstance(event, MessageReceived) and event.body == cpim(b"hello")

    malformed = await offering.send("message/cpim", b"no headers at all")
    assert (await response_to(offering, malformed)).status == 400
    wrapped = await offering.send("message/cpim", cpim(b"x", "application/x-other"))
    assert (await response_to(offering, wrapped)).status == 415
    spoofed = await offering.send("message/cpim", cpim(b"x", sender="sip:mallory@x"))
    assert (await response_to(offering, spoofed)).status == 403

    stream.channel.send_message("message/cpim", cpim(b"back"))
    await stream.channel.drain()
    while not isinstance(got := await offering.receive(), MessageReceived):
        pass
    assert got.body == cpim(b"back")

    # A re-offer of the same m-line keeps the stream (same a=path); another path does not.
    assert stream.fits(offer, 0)
    other = ChatStream(client, secure=secure, accept_types=("message/cpim",))
    assert not stream.fits(offer_of(other.offer_media()), 0)
    other.close()
    await stream.close()
    assert stream.closed
    offering.close()


async def test_chat_refused_without_the_listener_the_offer_needs(client: MsrpTransport) -> None:
    only_tcp = MsrpTransport()
    await only_tcp.start((ListenAddress("tcp", "127.0.0.1", 0),))
    try:
        offering = ChatStream(client, secure=True)
        offer = offer_of(offering.offer_media())
        assert MsrpChatStream.open(only_tcp, offer, 0) is None  # no msrps listener: port 0
        offering.close()
    finally:
        await only_tcp.stop()


async def test_holdconn_is_refused(server: MsrpTransport, client: MsrpTransport) -> None:
    offering = ChatStream(client, secure=False)
    media = offering.offer_media()
    media.set("setup", "holdconn")
    assert MsrpChatStream.open(server, offer_of(media), 0) is None
    offering.close()


def _mixer(seed: int) -> EmbeddedMixer:
    low = random.randrange(20000, 60000, 2)
    return EmbeddedMixer(
        PortAllocator(low, low + 200),
        host="127.0.0.1",
        codecs=("PCMU", "telephone-event"),
        rng=random.Random(seed),
        rtp_timeout=60.0,
        srtp="optional",
    )


async def test_audio_stream_attaches_updates_and_detaches_on_the_real_mixer(
    server: MsrpTransport, client: MsrpTransport
) -> None:
    mixer = _mixer(3)
    peer = RtpEndpoint("PCMU", 8000, 0)
    room, who = RoomId("r1"), ParticipantId("p1")
    try:
        await peer.open()
        chat = ChatStream(client, secure=False)
        audio_media = peer.offer().media[0]
        offer = offer_of(audio_media, audio_media.copy(), chat.offer_media())

        async def answerer(request: StreamRequest) -> Stream | None:
            if request.kind is MediaKind.AUDIO:
                return await AudioStream.open(mixer, room, who, request)
            if request.kind is MediaKind.CHAT:
                return MsrpChatStream.open(server, request.offer, request.index)
            return None

        first = await negotiate(offer, {}, answerer)
        # one audio stream per participant: the second audio m-line is refused in place
        assert [isinstance(d, sdp.Accept) for d in first.decisions] == [True, False, True]
        audio = first.streams[0]
        assert isinstance(audio, AudioStream)
        assert (room, who) in await mixer.quality()
        assert audio.accept.formats[0] == "0"

        held = offer_of(
            peer.offer(sdp.Direction.SENDONLY).media[0],
            audio_media.copy(),
            offer.media[2],
        )
        second = await negotiate(held, first.streams, answerer)
        assert second.streams[0] is audio and second.streams[2] is first.streams[2]
        # the engine's answer to the hold, narrowed by the offer (RFC 3264 §6.1)
        assert answer_of(held, second.decisions).media[0].direction is sdp.Direction.RECVONLY
        assert (room, who) in await mixer.quality()

        off = offer_of(audio_media.copy(), audio_media.copy(), offer.media[2])
        off.media[0].port = 0
        third = await negotiate(off, second.streams, answerer)
        assert third.removed == [audio] and (room, who) in await mixer.quality()
        await third.commit()
        assert (room, who) not in await mixer.quality()
        await first.streams[2].close()
        chat.close()
    finally:
        peer.close()
        await mixer.close()


async def connected_chat(
    server: MsrpTransport, client: MsrpTransport, options: ChatOptions
) -> tuple[ChatStream, MsrpChatStream]:
    offering = ChatStream(client, secure=False)
    offer = offer_of(offering.offer_media())
    stream = MsrpChatStream.open(server, offer, 0, options)
    assert stream is not None
    offering.answered(answer_of(offer, [stream.accept]).media[0])
    await offering.wait_connected(10)
    await stream.channel.wait_connected(10)
    return offering, stream


async def nickname_response(offering: ChatStream) -> ResponseReceived:
    while True:
        event = await offering.receive()
        if isinstance(event, ResponseReceived) and event.method == "NICKNAME":
            return event


async def test_nicknames_reach_the_application_only_when_asked_for(
    server: MsrpTransport, client: MsrpTransport
) -> None:
    offering, stream = await connected_chat(server, client, ChatOptions(nicknames=True))
    assert offering.channel is not None
    offering.channel.send_nickname("alice")
    event = await stream.channel.next_event()
    assert isinstance(event, NicknameRequested) and event.nickname == "alice"
    stream.channel.respond(event.transaction_id, 425, "Nickname usage failed")
    assert (await nickname_response(offering)).status == 425
    offering.close()
    await stream.close()

    offering, stream = await connected_chat(server, client, ChatOptions())
    assert offering.channel is not None
    offering.channel.send_nickname("alice")
    assert (await nickname_response(offering)).status == 403  # the core: no nicknames here
    offering.close()
    await stream.close()


async def test_file_stream_pushes_into_the_store_it_is_given_and_serves_from_it(
    server: MsrpTransport, client: MsrpTransport, tmp_path: Path
) -> None:
    """A room (later) passes its own store: the pushed file lands there, a pull of its hash
    from the same store is answered with the file's full selector (RFC 5547 §8.2, §8.4)."""
    store = FileStore(FileSpool(tmp_path / "room"))
    data = random.Random(5).randbytes(70_000)
    sha1 = hashlib.sha1(data).digest()
    local = client.local_uri(False)
    push = msrp_media(
        local,
        ["*"],
        direction=sdp.Direction.SENDONLY,
        extra=file_transfer_attributes(
            selector_for("a.bin", "application/octet-stream", len(data), sha1), transfer_id="t1"
        ),
    )
    offer = offer_of(push)
    stream = MsrpFileStream.open(server, store, offer, 0, sender="sip:alice@x")
    assert stream is not None and stream.kind is MediaKind.FILE
    answer = answer_of(offer, [stream.accept]).media[0]
    assert answer.direction is sdp.Direction.RECVONLY
    assert answer.get("file-transfer-id") == "t1"
    assert stream.fits(offer, 0)
    channel = client.open(local, parse_msrp_media(answer).path, active=True)
    running = asyncio.create_task(stream.run())
    await channel.wait_connected(10)
    sent = channel.send_message("application/octet-stream", data)
    await wait_until(lambda: store.find(sha1.hex()) is not None)
    responses = [e for e in channel.events() if isinstance(e, ResponseReceived)]
    assert responses and all(r.message_id == sent and r.status == 200 for r in responses)
    stored = store.find(sha1.hex())
    assert (
        stored is not None and stored.path.read_bytes() == data and stored.sender == "sip:alice@x"
    )
    assert stream.outcome == "stored" and stream.transfers == 1
    channel.close()
    await asyncio.wait_for(running, 10)
    await stream.close()

    pull_local = client.local_uri(False)
    pull = msrp_media(
        pull_local,
        ["*"],
        direction=sdp.Direction.RECVONLY,
        extra=file_transfer_attributes(FileSelector(hashes=((HASH_SHA1, sha1),)), transfer_id="t2"),
    )
    served = MsrpFileStream.open(server, store, offer_of(pull), 0, sender="sip:bob@x")
    assert served is not None and served.serve == stored
    assert answer_of(offer_of(pull), [served.accept]).media[0].direction is sdp.Direction.SENDONLY
    await served.close()
    other_store = FileStore(FileSpool(tmp_path / "other"))
    assert MsrpFileStream.open(server, other_store, offer_of(pull), 0, sender="sip:bob@x") is None


async def test_audio_the_engine_refuses_fails_the_offer_only_when_alone(
    server: MsrpTransport, client: MsrpTransport
) -> None:
    mixer = _mixer(4)  # PCMU only
    peer = RtpEndpoint("PCMA", 8000, 8)
    try:
        await peer.open()
        room, who = RoomId("r2"), ParticipantId("p2")

        async def answerer(request: StreamRequest) -> Stream | None:
            if request.kind is MediaKind.AUDIO:
                return await AudioStream.open(mixer, room, who, request)
            return MsrpChatStream.open(server, request.offer, request.index)

        with pytest.raises(SipError) as raised:
            await negotiate(offer_of(peer.offer().media[0]), {}, answerer)
        assert raised.value.status == 488  # the engine's status: no common codec

        chat = ChatStream(client, secure=False)
        both = offer_of(peer.offer().media[0], chat.offer_media())
        result = await negotiate(both, {}, answerer)
        assert [isinstance(d, sdp.Accept) for d in result.decisions] == [False, True]
        assert (room, who) not in await mixer.quality()
        await result.abort()
        chat.close()
    finally:
        peer.close()
        await mixer.close()
