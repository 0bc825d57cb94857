"""Echo's chat against a real `chorus serve`: MSRP over TLS and TCP, 1,000 messages each way
(plain and CPIM-wrapped, every one with its success REPORT), audio and chat in one call,
re-INVITE adding and removing chat, BYE releasing the shared connection, bad bodies refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest

from control.config import ListenAddress
from control.media.codecs import PcmuCodec
from control.msrp import (
    ConnectionFailed,
    CpimAddress,
    CpimMessage,
    MessageReceived,
    ReportReceived,
    ResponseReceived,
    parse_cpim,
)
from control.msrp.chat import ChatStream
from control.msrp.events import Event
from control.msrp.sdp import Setup, parse_msrp_media
from control.msrp.transport import MsrpTransport
from control.sip import sdp
from control.sip.session import Session
from tests.peers.chorus import ChorusProcess
from tests.peers.rtp_tone import RtpToneClient
from tests.peers.sipclient import SipClient, client_tls_context
from tests.peers.wait import wait_until

pytestmark = pytest.mark.timeout(60)

ME = CpimAddress("sip:tester@127.0.0.1", "Tester")


@pytest.fixture(scope="module")
def chorus() -> Iterator[ChorusProcess]:
    with ChorusProcess() as process:
        yield process
        assert process.alive, process.log()
        assert "Traceback" not in process.log(), process.log()


@pytest.fixture
async def msrp() -> AsyncIterator[MsrpTransport]:
    transport = MsrpTransport()
    transport.ssl_client = client_tls_context()
    yield transport
    await transport.stop()


def offer(*media: sdp.MediaDescription) -> bytes:
    description = sdp.build_offer(
        origin=sdp.Origin("tester", "1", 1, "IN", "IP4", "127.0.0.1"),
        connection=sdp.Connection.for_address("127.0.0.1"),
        media=media,
    )
    return sdp.serialize(description)


def audio_line(port: int) -> sdp.MediaDescription:
    return sdp.audio_media(port, [("PCMU", 8000)], ptime=20)


async def call(
    sip: SipClient, chorus: ChorusProcess, body: bytes
) -> tuple[Session, sdp.SessionDescription]:
    port = chorus.tls_port if sip.transport_name == "tls" else chorus.sip_port
    scheme = "sips" if sip.transport_name == "tls" else "sip"
    session, response = await sip.call(f"{scheme}:echo@127.0.0.1:{port}", body, port)
    assert session is not None, response.status
    return session, sdp.parse(response.body)


async def until(stream: ChatStream, kind: type, timeout: float = 10.0) -> Event:
    while True:
        event = await asyncio.wait_for(stream.receive(), timeout)
        if isinstance(event, kind):
            return event


async def echo_round(stream: ChatStream, text: str) -> MessageReceived:
    await stream.send("text/plain", text.encode())
    event = await until(stream, MessageReceived)
    assert isinstance(event, MessageReceived)
    assert event.body == text.encode()
    return event


def cpim(text: str, content_type: str = "text/plain") -> bytes:
    message = CpimMessage.build(
        content_type=content_type,
        body=text.encode(),
        sender=ME,
        recipients=[CpimAddress("sip:echo@127.0.0.1")],
        namespaces={"imdn": "urn:ietf:params:imdn"},
        extra=[("imdn.Message-ID", "abcd1234")],
    )
    return message.serialize()


@pytest.mark.parametrize("secure", [True, False], ids=["msrps", "msrp"])
async def test_thousand_messages_come_back_with_reports(
    chorus: ChorusProcess, msrp: MsrpTransport, secure: bool
) -> None:
    stream = ChatStream(msrp, secure=secure)
    async with SipClient("tls" if secure else "udp") as sip:
        session, answer = await call(sip, chorus, offer(stream.offer_media()))
        media = answer.media[0]
        assert media.proto == ("TCP/TLS/MSRP" if secure else "TCP/MSRP") and media.port
        theirs = parse_msrp_media(media)
        assert theirs.setup is Setup.PASSIVE and theirs.endpoint.secure is secure
        stream.answered(media)
        await stream.wait_connected(10)
        sent: dict[str, int] = {}
        for index in range(1000):
            if index % 2:
                mid = await stream.send(
                    "message/cpim", cpim(f"wrapped {index}"), success_report=True
                )
            else:
                mid = await stream.send(
                    "text/plain", f"plain {index}".encode(), success_report=True
                )
            sent[mid] = index
        echoed: list[MessageReceived] = []
        reports: dict[str, int] = {}
        while len(echoed) < 1000 or len(reports) < 1000:
            event = await asyncio.wait_for(stream.receive(), 20)
            match event:
                case MessageReceived():
                    echoed.append(event)
                case ReportReceived(message_id=mid, status=status):
                    reports[mid] = status
                case ConnectionFailed():
                    pytest.fail(f"connection lost: {event}")
        assert reports == dict.fromkeys(sent, 200)
        for index, event in enumerate(echoed):  # in order, same content type
            if index % 2:
                assert event.content_type == "message/cpim"
                assert event.body is not None
                wrapped = parse_cpim(event.body)
                assert wrapped.body == f"wrapped {index}".encode()
                assert wrapped.sender is not None  # the echo service, as the INVITE named it
                assert wrapped.sender.uri.partition(":")[2].startswith("echo@127.0.0.1")
                assert [r.uri for r in wrapped.recipients] == [ME.uri]
                assert wrapped.value("Message-ID", "urn:ietf:params:imdn") == "abcd1234"
            else:
                assert (event.content_type, event.body) == ("text/plain", f"plain {index}".encode())
        await session.bye()
        assert isinstance(await until(stream, ConnectionFailed), ConnectionFailed)


async def test_audio_and_chat_in_one_session(chorus: ChorusProcess, msrp: MsrpTransport) -> None:
    tone = RtpToneClient(PcmuCodec(), 0)
    port = await tone.open()
    stream = ChatStream(msrp, secure=True)
    try:
        async with SipClient("udp") as sip:
            session, answer = await call(sip, chorus, offer(audio_line(port), stream.offer_media()))
            audio, chat = answer.media
            assert audio.port and audio.rtpmaps()[0].encoding == "PCMU"
            assert chat.port and chat.media == "message"
            stream.answered(chat)
            await stream.wait_connected(10)
            connection = answer.connection_of(audio)
            assert connection is not None
            sent = await tone.play((connection.address, audio.port), 1000.0, 0.4)
            await echo_round(stream, "with audio")
            await wait_until(lambda: len(tone.collector.packets) >= sent)
            assert len(tone.collector.packets) == sent, "the audio did not all come back"
            await session.bye()
    finally:
        tone.close()


async def test_reinvite_adds_then_removes_chat(chorus: ChorusProcess, msrp: MsrpTransport) -> None:
    async with SipClient("udp") as sip:
        session, first = await call(sip, chorus, offer(audio_line(4000)))
        assert len(first.media) == 1
        stream = ChatStream(msrp, secure=False)
        added = await session.reinvite(offer(audio_line(4000), stream.offer_media()))
        assert added.status == 200
        chat = sdp.parse(added.body).media[1]
        assert chat.port
        stream.answered(chat)
        await stream.wait_connected(10)
        await echo_round(stream, "added by re-INVITE")
        # The same m-line again keeps the same MSRP session (same a=path in the answer).
        again = await session.reinvite(offer(audio_line(4000), stream.offer_media()))
        assert sdp.parse(again.body).media[1].get("path") == chat.get("path")
        await echo_round(stream, "still the same session")
        removed_line = stream.offer_media()
        removed_line.port = 0
        removed = await session.reinvite(offer(audio_line(4000), removed_line))
        assert removed.status == 200
        answer = sdp.parse(removed.body)
        assert answer.media[1].port == 0 and answer.media[0].port
        assert isinstance(await until(stream, ConnectionFailed), ConnectionFailed)
        assert msrp.connection_count == 0
        await session.bye()


async def test_bye_releases_the_shared_connection_only_when_unused(
    chorus: ChorusProcess, msrp: MsrpTransport
) -> None:
    async with SipClient("tcp") as sip:
        one, two = ChatStream(msrp, secure=True), ChatStream(msrp, secure=True)
        first, answer_one = await call(sip, chorus, offer(one.offer_media()))
        second, answer_two = await call(sip, chorus, offer(two.offer_media()))
        one.answered(answer_one.media[0])
        two.answered(answer_two.media[0])
        await asyncio.gather(one.wait_connected(10), two.wait_connected(10))
        assert msrp.connection_count == 1  # both sessions on one connection (RFC 4975 §7.3)
        await echo_round(one, "first")
        await echo_round(two, "second")
        await first.bye()
        await echo_round(two, "second, after the first BYE")
        assert msrp.connection_count == 1
        await second.bye()
        assert isinstance(await until(two, ConnectionFailed), ConnectionFailed)
        assert msrp.connection_count == 0


async def test_roles_passive_offer_and_rfc4975_default(chorus: ChorusProcess) -> None:
    listener = MsrpTransport()
    await listener.start([ListenAddress("tcp", "127.0.0.1", 0)])
    try:
        async with SipClient("udp") as sip:
            # a=setup:passive: Chorus connects to us (RFC 6135).
            waiting = ChatStream(listener, secure=False, setup=Setup.PASSIVE)
            session, answer = await call(sip, chorus, offer(waiting.offer_media()))
            assert parse_msrp_media(answer.media[0]).setup is Setup.ACTIVE
            waiting.answered(answer.media[0])
            await waiting.wait_connected(10)
            await echo_round(waiting, "you called me")
            await session.bye()
            # No a=setup: RFC 4975 §5.4, the offerer connects; the answer has no a=setup.
            plain = ChatStream(listener, secure=False, setup=None)
            session, answer = await call(sip, chorus, offer(plain.offer_media()))
            assert answer.media[0].get("setup") is None
            plain.answered(answer.media[0])
            await plain.wait_connected(10)
            await echo_round(plain, "old style")
            await session.bye()
    finally:
        await listener.stop()


async def test_bad_bodies_are_refused_and_the_chat_goes_on(
    chorus: ChorusProcess, msrp: MsrpTransport
) -> None:
    stream = ChatStream(msrp, secure=True, accept_wrapped_types=("text/plain",))
    async with SipClient("udp") as sip:
        session, answer = await call(sip, chorus, offer(stream.offer_media()))
        stream.answered(answer.media[0])
        await stream.wait_connected(10)
        statuses: dict[str, int] = {}
        broken = await stream.send("message/cpim", b"From: <sip:x>\r\nno blank line")
        html = await stream.send("message/cpim", cpim("<p>hi</p>", "text/html"))
        video = await stream.send("video/mp4", b"\x00\x00")
        while len(statuses) < 3:
            event = await until(stream, ResponseReceived)
            assert isinstance(event, ResponseReceived) and event.message_id is not None
            statuses[event.message_id] = event.status
        assert statuses == {broken: 400, html: 415, video: 415}
        await echo_round(stream, "after the bad ones")
        await session.bye()


async def test_nickname_and_unknown_methods_are_answered(
    chorus: ChorusProcess, msrp: MsrpTransport
) -> None:
    """Every request gets an answer (RFC 4975 §7.2): echo does not use nicknames, so its MSRP
    core answers a NICKNAME 403 (RFC 7701 §7.1) at once, where before it went unanswered and
    the sender's transaction ran into its 30 s timeout; an unknown method gets 501."""
    stream = ChatStream(msrp, secure=True)
    async with SipClient("udp") as sip:
        session, answer = await call(sip, chorus, offer(stream.offer_media()))
        channel = stream.answered(answer.media[0])
        await stream.wait_connected(10)
        channel.send_nickname("Tester")
        response = await until(stream, ResponseReceived)
        assert isinstance(response, ResponseReceived)
        assert (response.method, response.status) == ("NICKNAME", 403)
        await echo_round(stream, "the chat goes on")
        await session.bye()

    # An unknown method, written by hand on a plain TCP connection of our own.
    plain = ChatStream(msrp, secure=False)
    async with SipClient("udp") as sip:
        session, answer = await call(sip, chorus, offer(plain.offer_media()))
        theirs = parse_msrp_media(answer.media[0])
        to, me = str(theirs.endpoint), str(plain.local_uri)
        reader, writer = await asyncio.open_connection(theirs.endpoint.host, theirs.endpoint.port)
        try:
            writer.write(
                f"MSRP bind0001 SEND\r\nTo-Path: {to}\r\nFrom-Path: {me}\r\n"
                "Message-ID: bind\r\nByte-Range: 1-0/0\r\n-------bind0001$\r\n"
                f"MSRP frob0001 FROBNICATE\r\nTo-Path: {to}\r\nFrom-Path: {me}\r\n"
                "-------frob0001$\r\n".encode()
            )
            await writer.drain()
            seen = b""
            while b"MSRP frob0001 " not in seen:
                piece = await asyncio.wait_for(reader.read(4096), 10)
                assert piece, f"connection closed; got {seen!r}"
                seen += piece
            assert b"MSRP bind0001 200 OK\r\n" in seen
            assert b"MSRP frob0001 501 " in seen
        finally:
            writer.close()
        await session.bye()
