"""Files in conference rooms through a real `chorus serve` (issue 9, "Must show", files).

alice and bob chat in a room; alice uploads 20 MB in a session of its own over SIP TLS and
msrps (RFC 5547 §8.2: a ``sendonly`` m-line with ``a=file-selector``, as Blink sends a file);
the other chat participants get the room's ``chorus.Notice: file`` with the file's facts and
its signed download URL. The server is restarted; carol, who joins afterwards, pulls the file
by hash (§8.4: a ``recvonly`` offer whose selector names the SHA-1) and gets the same bytes, once
in an INVITE of its own and once by re-INVITE of her chat session. An unknown hash is refused:
the m-line at port 0 next to chat, the INVITE 404 when it asked for nothing else. Ten pullers
at once all receive the same bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from control.conference.files import file_details
from control.conference.notices import (
    CHORUS_NS,
    HEADER_VALUE_CHARS,
    NoticeKind,
    build_notice,
    shown_text,
)
from control.files.spool import StoredFile
from control.msrp.cpim import CpimAddress, parse_cpim
from control.msrp.events import (
    ConnectionFailed,
    MessageAborted,
    MessageChunkReceived,
    MessageReceived,
    ResponseReceived,
)
from control.msrp.fileselector import HASH_SHA1, FileSelector, parse_file_transfer
from control.msrp.filetransfer import FileSender
from control.msrp.message import Flag
from control.msrp.sdp import parse_msrp_media
from control.msrp.session import make_ident
from control.msrp.uri import MsrpUri
from control.sip import sdp
from control.sip.message import Response
from control.sip.session import Session
from tests.peers.chatclient import HOST, ChatClient, ChatSession
from tests.peers.chorus import ChorusProcess
from tests.peers.ports import free_port
from tests.peers.sipclient import client_tls_context
from tests.peers.wait import wait_until
from tests.test_room_files import by_hash, file_offer

pytestmark = pytest.mark.timeout(300)

ROOM = "files"
BIG = 20 * 1024 * 1024
CHUNK = 256 * 1024
NOW = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Upload:
    data: bytes
    sha1: bytes
    name: str = "minutes.pdf"
    content_type: str = "application/pdf"


@pytest.fixture(scope="module")
def upload() -> Upload:
    data = random.Random(9).randbytes(BIG)
    return Upload(data, hashlib.sha1(data).digest())


@pytest.fixture(scope="module")
def chorus() -> Iterator[ChorusProcess]:
    web_port = free_port("tcp")
    config: dict[str, dict[str, Any]] = {
        "web": {"listen": f"https:127.0.0.1:{web_port}"},
        "rtp": {"timeout": 300.0},
        "conference": {"chat_rate": 1000, "chat_burst": 1000},
    }
    with ChorusProcess(config) as process:
        yield process
        assert process.alive, process.log()
        assert "Traceback" not in process.log(), process.log()


@contextlib.asynccontextmanager
async def person(
    user: str, display: str | None = None, transport: str = "tls"
) -> AsyncIterator[ChatClient]:
    async with ChatClient(user, display, sip_transport=transport) as client:
        yield client


def _body(offer: sdp.SessionDescription) -> bytes:
    text = sdp.serialize(offer)
    return text if isinstance(text, bytes) else text.encode()


async def call(
    client: ChatClient, chorus: ChorusProcess, offer: sdp.SessionDescription, room: str = ROOM
) -> tuple[Session | None, Response]:
    """An INVITE of the room (SIP over the client's transport); the session is None when it
    was refused."""
    tls = client.sip.transport_name == "tls"
    port = chorus.tls_port if tls else chorus.sip_port
    uri = f"{'sips' if tls else 'sip'}:{room}@{HOST}:{port}"
    return await client.sip.call(uri, _body(offer), port)


async def send_file(
    client: ChatClient, local: MsrpUri, path: tuple[MsrpUri, ...], up: Upload
) -> list[int]:
    """Send ``up`` on a new MSRP session to ``path`` in 256 KiB chunks; every response."""
    channel = client.msrp.open(local, path, active=True)
    try:
        await channel.wait_connected(10)
        message_id = make_ident(os.urandom)
        pieces = list(FileSender(len(up.data), chunk_size=CHUNK).pieces())
        for piece in pieces:
            channel.send_chunk(
                message_id,
                up.content_type,
                up.data[piece.offset : piece.offset + piece.length],
                offset=piece.offset,
                total=len(up.data),
                flag=Flag.END if piece.last else Flag.CONTINUE,
            )
            await channel.drain()
        statuses: list[int] = []
        while len(statuses) < len(pieces):
            event = await asyncio.wait_for(channel.next_event(), 60)
            match event:
                case ResponseReceived(status=status):
                    statuses.append(status)
                case ConnectionFailed():
                    break
        return statuses
    finally:
        channel.close()


async def push(
    client: ChatClient, chorus: ChorusProcess, up: Upload, room: str = ROOM
) -> list[int]:
    """A file session of its own (as Blink sends a file): INVITE, the file, BYE."""
    selector = FileSelector(
        name=up.name, type=up.content_type, size=len(up.data), hashes=((HASH_SHA1, up.sha1),)
    )
    offer, local = file_offer(client.msrp, selector, sdp.Direction.SENDONLY)
    session, response = await call(client, chorus, offer, room)
    assert session is not None, f"push INVITE answered {response.status} {response.reason}"
    answer = sdp.parse(response.body).media[0]
    assert answer.port and answer.direction is sdp.Direction.RECVONLY
    path = parse_msrp_media(answer).path
    assert path[0].secure, "msrps offered, msrps answered"
    try:
        return await send_file(client, local, path, up)
    finally:
        await session.bye()


async def receive_file(client: ChatClient, local: MsrpUri, path: tuple[MsrpUri, ...]) -> bytes:
    """Receive one file on a new MSRP session; its SHA-1 (answering its last chunk 200)."""
    channel = client.msrp.open(
        local, path, active=True, deliver_chunks=True, max_message_size=1 << 30
    )
    digest = hashlib.sha1()
    expected = 0
    try:
        await channel.wait_connected(10)
        while True:
            event = await asyncio.wait_for(channel.next_event(), 120)
            match event:
                case MessageChunkReceived(offset=offset, data=data):
                    assert offset == expected, "chunks arrive in order, from the start"
                    digest.update(data)
                    expected += len(data)
                case MessageReceived(message_id=mid):
                    channel.complete_message(mid, 200)
                    await channel.drain()
                    return digest.digest()
                case MessageAborted() | ConnectionFailed():
                    raise AssertionError(f"pull failed: {event}")
    finally:
        channel.close()


async def pull(client: ChatClient, chorus: ChorusProcess, sha1: bytes, room: str = ROOM) -> bytes:
    """A pull in an INVITE of its own (recvonly, the selector naming only the hash)."""
    offer, local = file_offer(client.msrp, by_hash(sha1), sdp.Direction.RECVONLY)
    session, response = await call(client, chorus, offer, room)
    assert session is not None, f"pull INVITE answered {response.status} {response.reason}"
    answer = sdp.parse(response.body).media[0]
    assert answer.direction is sdp.Direction.SENDONLY
    try:
        return await receive_file(client, local, parse_msrp_media(answer).path)
    finally:
        await session.bye()


async def reinvite_with(chat: ChatSession, media: sdp.MediaDescription) -> sdp.MediaDescription:
    """Re-INVITE ``chat``'s session with its m-lines as they are plus ``media``; our answer."""
    assert chat.session is not None
    offer = chat.sdp.offer([*(slot.media for slot in chat.slots), media])
    response = await chat.session.reinvite(bytes(offer))
    assert response.status == 200, f"re-INVITE answered {response.status}"
    answer = sdp.parse(response.body)
    assert len(answer.media) == len(chat.slots) + 1
    assert answer.media[0].port, "the chat m-line stays"
    return answer.media[-1]


def notice_value(delivered: Any, name: str) -> str | None:
    return delivered.cpim.value(name, "urn:x-chorus:cpim") if delivered.cpim else None


async def test_a_file_uploaded_before_a_restart_is_pulled_by_a_later_joiner(
    chorus: ChorusProcess, upload: Upload
) -> None:
    async with person("alice", "Alice") as alice, person("bob", "Bob", "tcp") as bob:
        alice_chat = await alice.join(chorus, ROOM, secure=True)
        bob_chat = await bob.join(chorus, ROOM, secure=True)
        statuses = await push(alice, chorus, upload)
        assert statuses == [200] * (BIG // CHUNK), "the last 200: the file is stored"
        assert await bob_chat.wait_for(lambda: bob_chat.notices("file"))
        (notice,) = bob_chat.notices("file")
        assert notice_value(notice, "File-Name") == upload.name
        assert notice_value(notice, "File-Size") == str(BIG)
        assert notice_value(notice, "File-Type") == upload.content_type
        hash_value = "sha-1:" + upload.sha1.hex(":").upper()  # RFC 5547 §6's token
        assert notice_value(notice, "File-Hash") == hash_value
        assert "Alice shared minutes.pdf (20.0 MiB)" in notice.text
        url = notice_value(notice, "File-URL")
        assert url is not None and url.startswith("https://127.0.0.1:")
        assert f"/files/{ROOM}@{HOST}/{upload.sha1.hex()}?t=" in url
        # The sender's chat is told too (the link is its to hand on), once; the upload
        # session is a transfer, not a person: neither joined nor left.
        await bob_chat.say("barrier")
        await alice_chat.wait_text("barrier")
        assert [n.text for n in alice_chat.notices("file")] == [notice.text]
        assert [n.text for n in bob_chat.notices("joined")] == []  # alice came before bob
        assert not bob_chat.notices("left"), "the upload session was not announced"
        context = client_tls_context()
        ranged = {"Range": "bytes=0-99"}
        async with (
            aiohttp.ClientSession() as web,  # the URL serves the file (with Range)
            web.get(url, ssl=context, headers=ranged) as got,
        ):
            assert got.status == 206 and await got.read() == upload.data[:100]

    assert chorus.stop() == 0
    chorus.start()

    async with person("carol", "Carol") as carol, person("dave", "Dave", "tcp") as dave:
        dave_chat = await dave.join(chorus, ROOM, secure=True)
        assert await pull(carol, chorus, upload.sha1) == upload.sha1  # SHA-1 equal
        # The same pull by re-INVITE of a participant's chat session.
        carol_chat = await carol.join(chorus, ROOM, secure=True)
        offer, local = file_offer(carol.msrp, by_hash(upload.sha1), sdp.Direction.RECVONLY)
        answer = await reinvite_with(carol_chat, offer.media[0])
        assert answer.port and answer.direction is sdp.Direction.SENDONLY
        served = parse_file_transfer(answer)
        assert served is not None and served.selector.name == upload.name
        assert served.selector.size == BIG and served.selector.sha1 == upload.sha1
        sha1 = await receive_file(carol, local, parse_msrp_media(answer).path)
        assert sha1 == upload.sha1
        # Her chat's MSRP connection carried the transfer too, so she ends it by re-INVITE
        # (the m-line at port 0); offered again with the same a=file-transfer-id it is no new
        # pull (RFC 5547 §8.1: a new transfer has a new id) and stays refused.
        assert carol_chat.session is not None
        removed = offer.media[0].copy()
        removed.port = 0
        for line in (removed, offer.media[0]):
            again = carol_chat.sdp.offer([*(slot.media for slot in carol_chat.slots), line])
            response = await carol_chat.session.reinvite(bytes(again))
            assert response.status == 200
            media = sdp.parse(response.body).media
            assert media[0].port and media[-1].port == 0
        ended = f"file stream of sip:carol@{HOST} in {ROOM}@{HOST} ended: sent"
        assert await wait_until(lambda: chorus.log().count(ended) == 2, timeout=30)
        # Carol's chat goes on after the transfer's session ended.
        await carol_chat.say("still here")
        await dave_chat.wait_text("still here")


async def test_an_unknown_hash_is_refused(chorus: ChorusProcess, upload: Upload) -> None:
    unknown = hashlib.sha1(b"never uploaded").digest()
    async with person("erin", "Erin") as erin:
        offer, _ = file_offer(erin.msrp, by_hash(unknown), sdp.Direction.RECVONLY)
        session, response = await call(erin, chorus, offer)
        assert session is None
        assert (response.status, response.reason) == (404, "File Not Found")
        chat = await erin.join(chorus, ROOM, secure=True)
        offer, _ = file_offer(erin.msrp, by_hash(unknown), sdp.Direction.RECVONLY)
        answer = await reinvite_with(chat, offer.media[0])
        assert answer.port == 0, "next to chat, the pull is refused in place"


async def test_ten_simultaneous_pullers_receive_the_same_bytes(chorus: ChorusProcess) -> None:
    data = random.Random(10).randbytes(5 * 1024 * 1024 + 17)
    up = Upload(data, hashlib.sha1(data).digest(), name="slides.odp", content_type="x/y")
    async with contextlib.AsyncExitStack() as stack:
        pullers = [await stack.enter_async_context(person(f"p{n}", None, "tcp")) for n in range(10)]
        async with person("frank", "Frank") as frank:
            assert (await push(frank, chorus, up))[-1] == 200
        got = await asyncio.gather(*(pull(p, chorus, up.sha1) for p in pullers))
        assert got == [up.sha1] * 10


def test_a_file_notice_carries_any_name_on_one_header_line() -> None:
    """A sender's name is metadata: ``../../etc/passwd``, NUL, line breaks and 10 KB names
    give one-line ``chorus.File-Name`` headers (RFC 3862 §3.2 escapes: the name comes back
    exactly, a 10 KB one cut) and a clean text line."""
    names = ["../../etc/passwd", "a\x00b\r\nFrom: <sip:evil@x>\\c", "n" * 10_000]
    for name in names:
        stored = StoredFile("f", name, "text/plain", 3, "ab" * 20, "2026-01-01", "sip:a@b", Path())
        url = f"https://web/files/room/{'ab' * 20}?t=1.x"
        body = build_notice(
            CpimAddress("sip:room@b", "room"), NoticeKind.FILE, "x", NOW, file_details(stored, url)
        )
        head = body.split(b"\r\n\r\n", 1)[0].decode()
        # From, To, DateTime, NS, Notice and the five File-* facts: no line broken off.
        assert len(head.split("\r\n")) == 10, head[:300]
        parsed = parse_cpim(body)
        assert parsed.sender is not None and parsed.sender.uri == "sip:room@b"  # not spoofed
        got = parsed.value("File-Name", CHORUS_NS)
        assert got is not None
        if len(name) <= HEADER_VALUE_CHARS:
            assert got == name
        else:
            assert got == name[: HEADER_VALUE_CHARS - 1] + "\u2026"
        assert parsed.value("File-URL", CHORUS_NS) == url
        assert "\x00" not in shown_text(name) and len(shown_text(name)) <= 200


async def test_a_transfer_session_left_open_is_ended_by_the_room(
    chorus: ChorusProcess,
) -> None:
    """A puller that has its file but never sends BYE: once its MSRP session is gone the
    room's transfer stream ends and the room ends the session it leaves empty."""
    data = b"agenda\n" * 1000
    up = Upload(data, hashlib.sha1(data).digest(), name="agenda.txt", content_type="text/plain")
    async with person("gus", "Gus") as gus, person("hal", "Hal", "tcp") as hal:
        assert (await push(gus, chorus, up))[-1] == 200
        offer, local = file_offer(hal.msrp, by_hash(up.sha1), sdp.Direction.RECVONLY)
        session, response = await call(hal, chorus, offer)
        assert session is not None, response.status
        path = parse_msrp_media(sdp.parse(response.body).media[0]).path
        assert await receive_file(hal, local, path) == up.sha1  # closes our MSRP session
        reason = await asyncio.wait_for(asyncio.shield(session.terminated), 30)
        assert reason, "the room sent BYE"


# ---- the files policy: quotas, retention, the room's end -------------------------------


@pytest.fixture(scope="module")
def strict() -> Iterator[ChorusProcess]:
    config: dict[str, dict[str, Any]] = {
        "files": {
            "max_file_bytes": 3_000_000,
            "room_quota_bytes": 2_000_000,
            "retain_max_age": 4.0,
            "retention_interval": 1.0,
            "after_room_ends": "delete",
        },
    }
    with ChorusProcess(config) as process:
        yield process
        assert process.alive, process.log()
        assert "Traceback" not in process.log(), process.log()


def _sized(size: int, seed: int) -> Upload:
    data = random.Random(seed).randbytes(size)
    return Upload(data, hashlib.sha1(data).digest(), name=f"f{seed}.bin", content_type="x/y")


async def _offer_push(client: ChatClient, chorus: ChorusProcess, up: Upload) -> Response:
    selector = FileSelector(
        name=up.name, type=up.content_type, size=len(up.data), hashes=((HASH_SHA1, up.sha1),)
    )
    offer, _ = file_offer(client.msrp, selector, sdp.Direction.SENDONLY)
    session, response = await call(client, chorus, offer)
    if session is not None:
        await session.bye()
    return response


async def test_quotas_refuse_a_lone_push_with_413(strict: ChorusProcess) -> None:
    async with person("ida", "Ida") as ida:
        chat = await ida.join(strict, ROOM, secure=True)  # keeps the room alive
        too_big = await _offer_push(ida, strict, _sized(3_000_001, 1))
        assert (too_big.status, too_big.reason) == (413, "File Too Large")
        assert (await push(ida, strict, _sized(1_500_000, 2)))[-1] == 200
        full = await _offer_push(ida, strict, _sized(1_000_000, 3))
        assert (full.status, full.reason) == (413, "Room Storage Full")
        assert "room quota exceeded (insufficient storage)" in strict.log()
        await chat.leave()


async def test_retention_deletes_old_files_on_its_timer(strict: ChorusProcess) -> None:
    up = _sized(10_000, 4)
    async with person("jo", "Jo") as jo:
        chat = await jo.join(strict, "aging", secure=True)  # the room lives throughout
        assert (await push(jo, strict, up, "aging"))[-1] == 200
        expired = f"room aging@{HOST}: deleted"
        assert await wait_until(lambda: expired in strict.log(), timeout=30)
        assert "older than retain_max_age" in strict.log()
        offer, _ = file_offer(jo.msrp, by_hash(up.sha1), sdp.Direction.RECVONLY)
        session, response = await call(jo, strict, offer, "aging")
        assert session is None and response.status == 404
        assert chat.session is not None and not chat.session.terminated.done()


async def test_after_room_ends_delete_removes_the_rooms_files(strict: ChorusProcess) -> None:
    up = _sized(10_000, 5)
    async with person("kim", "Kim") as kim:
        # The upload's session is all the room has: the room ends with it.
        assert (await push(kim, strict, up, "ephemeral"))[-1] == 200
        deleted = f"room ephemeral@{HOST} ended: 1 files deleted (after_room_ends)"
        assert await wait_until(lambda: deleted in strict.log(), timeout=30)
        offer, _ = file_offer(kim.msrp, by_hash(up.sha1), sdp.Direction.RECVONLY)
        session, response = await call(kim, strict, offer, "ephemeral")
        assert session is None and response.status == 404


async def test_a_restart_is_no_rooms_end() -> None:
    """after_room_ends=delete: a room still live when the server stops keeps its files (the
    shutdown ends the sessions, not the room), and the shutdown logs no error."""
    up = _sized(10_000, 6)
    with ChorusProcess({"files": {"after_room_ends": "delete"}}) as node:
        async with person("lou", "Lou") as lou:
            await lou.join(node, "lasting", secure=True)  # in the room when the server stops
            assert (await push(lou, node, up, "lasting"))[-1] == 200
            assert await asyncio.to_thread(node.stop) == 0  # lou answers its BYE meanwhile
        assert "Traceback" not in node.log() and " ERROR " not in node.log(), node.log()
        node.start()
        async with person("mia", "Mia") as mia:  # a new client: lou's connections are gone
            assert await pull(mia, node, up.sha1, "lasting") == up.sha1


@pytest.mark.parametrize(
    "name",
    ["../../etc/passwd", "../minutes\x00.pdf", "n" * 10_000],
    ids=["traversal", "nul", "10-kb"],
)
async def test_a_hostile_name_is_metadata_only(chorus: ChorusProcess, name: str) -> None:
    """Through the whole room: ``../../etc/passwd``, a name with a NUL (percent-encoded, as
    RFC 5547 §10 allows) and a 10 KB name travel in a=file-selector (RFC 5547 §5), are kept
    as the row's name, come back in the notice (exactly, or cut past its header limit) and
    exactly in the pull's answer, and the download names them cleaned; the bytes sit under a
    server-chosen name in the spool and nothing lands anywhere else."""
    data = b"root:x:0:0:not really\n" + random.Random(name).randbytes(999)
    up = Upload(data, hashlib.sha1(data).digest(), name=name, content_type="text/plain")
    async with person("nat", "Nat") as nat, person("oz", "Oz", "tcp") as oz:
        watcher = await oz.join(chorus, "names", secure=True)
        assert (await push(nat, chorus, up, "names"))[-1] == 200
        assert await watcher.wait_for(lambda: watcher.notices("file"))
        notice = watcher.notices("file")[-1]
        if len(name) <= HEADER_VALUE_CHARS:
            assert notice_value(notice, "File-Name") == name
        else:
            assert notice_value(notice, "File-Name") == name[: HEADER_VALUE_CHARS - 1] + "\u2026"
        offer, local = file_offer(nat.msrp, by_hash(up.sha1), sdp.Direction.RECVONLY)
        session, response = await call(nat, chorus, offer, "names")
        assert session is not None
        answer = sdp.parse(response.body).media[0]
        served = parse_file_transfer(answer)
        assert served is not None and served.selector.name == name
        assert await receive_file(nat, local, parse_msrp_media(answer).path) == up.sha1
        await session.bye()
        url = notice_value(notice, "File-URL")
        assert url is not None
        async with (
            aiohttp.ClientSession() as web,
            web.get(url, ssl=client_tls_context()) as got,
        ):
            assert got.status == 200 and await got.read() == data
            disposition = got.headers["Content-Disposition"]
        assert disposition.startswith("attachment;") and "/" not in disposition
        assert "\x00" not in disposition and len(disposition) < 1000
    spool = chorus.workdir / "spool" / "rooms" / "files"
    assert any(p.name.startswith(up.sha1.hex() + ".") for p in spool.iterdir())
    assert not (chorus.workdir / "etc").exists() and not (chorus.workdir / "spool" / "etc").exists()


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("n" * 16_385, "Bad File Selector: file name longer than 16384 characters"),
        ("%" * 19_200, "Bad File Selector: a=file-selector longer than 57344 characters"),
    ],
    ids=["name-over-cap", "selector-over-cap"],
)
async def test_names_the_selector_parser_refuses_leave_nothing(
    chorus: ChorusProcess, name: str, reason: str
) -> None:
    """A name over the parser's caps (16,384 characters decoded, 56 KiB of a=file-selector)
    never reaches the store: the lone push is refused 488 with the parser's reason and
    nothing is written."""
    data = random.Random(name).randbytes(1000)
    up = Upload(data, hashlib.sha1(data).digest(), name=name, content_type="text/plain")
    async with person("pia", "Pia") as pia:
        response = await _offer_push(pia, chorus, up)
        assert (response.status, response.reason) == (488, reason)
    spool = chorus.workdir / "spool" / "rooms" / "files"
    assert not any(p.name.startswith(up.sha1.hex()) for p in spool.iterdir())
    assert not any(p.name.startswith(".upload-") for p in spool.iterdir())
