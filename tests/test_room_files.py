"""Room files over the real stream layer (issue 9, item 1): MsrpFileStream on a loopback MSRP
transport (TLS for the server, as a participant's msrps session) writing to and serving from
RoomFiles' per-room stores; the client side is a plain MsrpTransport channel sending chunks
(push, RFC 5547 §8.2) and receiving them (pull, §8.4)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import random
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import pytest

from control.files.rooms import FileRefusal, FilesPolicy, RoomFiles
from control.msrp.events import (
    ConnectionFailed,
    MessageAborted,
    MessageChunkReceived,
    MessageReceived,
    ResponseReceived,
)
from control.msrp.fileselector import (
    HASH_SHA1,
    FileSelector,
    file_transfer_attributes,
    parse_file_transfer,
)
from control.msrp.filetransfer import FileSender
from control.msrp.message import Flag
from control.msrp.sdp import msrp_media, parse_msrp_media
from control.msrp.session import make_ident
from control.msrp.transport import MsrpTransport
from control.msrp.uri import MsrpUri
from control.sip import sdp
from control.store import DATABASE_NAME
from control.streams import FileStore, MsrpFileStream
from tests import test_streams_media as media
from tests.test_streams_media import answer_of, offer_of

pytestmark = pytest.mark.timeout(180)

# The loopback MSRP fixtures of the stream-layer tests: a TLS+TCP server transport, a client.
server_context = media.server_context
server = media.server
client = media.client

ROOM = "sip:room1@chorus.test"
OTHER = "sip:room2@chorus.test"
ALICE = "sip:alice@chorus.test"


@dataclass
class Pushed:
    stream: MsrpFileStream | None  # None: the m-line was refused (port 0)
    statuses: list[int]  # the responses to our chunks, in order
    last_comment: str | None
    chunks: int


def push_offer(
    client: MsrpTransport,
    data: bytes,
    name: str = "report.pdf",
    content_type: str = "application/pdf",
    *,
    announce_size: bool = True,
) -> tuple[sdp.SessionDescription, MsrpUri]:
    selector = FileSelector(
        name=name,
        type=content_type,
        size=len(data) if announce_size else None,
        hashes=((HASH_SHA1, hashlib.sha1(data).digest()),),
    )
    return file_offer(client, selector, sdp.Direction.SENDONLY)


async def push(
    server: MsrpTransport,
    client: MsrpTransport,
    store: FileStore,
    data: bytes,
    *,
    name: str = "report.pdf",
    content_type: str = "application/pdf",
    announce_size: bool = True,
    chunk_size: int = 256 * 1024,
) -> Pushed:
    """Offer a push (sendonly, TLS), send ``data`` in chunks, collect every response."""
    offer, local = push_offer(client, data, name, content_type, announce_size=announce_size)
    stream = MsrpFileStream.open(server, store, offer, 0, sender=ALICE)
    if stream is None:
        return Pushed(None, [], None, 0)
    answer = answer_of(offer, [stream.accept]).media[0]
    path = parse_msrp_media(answer).path
    assert path[0].secure, "the server answers msrps for an msrps offer"
    channel = client.open(local, path, active=True)
    running = asyncio.create_task(stream.run())
    statuses: list[int] = []
    comment: str | None = None
    try:
        await channel.wait_connected(10)
        message_id = make_ident(os.urandom)
        pieces = list(FileSender(len(data), chunk_size=chunk_size).pieces())
        for piece in pieces:
            channel.send_chunk(
                message_id,
                content_type,
                data[piece.offset : piece.offset + piece.length],
                offset=piece.offset,
                total=len(data) if announce_size else None,
                flag=Flag.END if piece.last else Flag.CONTINUE,
            )
            await channel.drain()
        while len(statuses) < len(pieces):
            event = await asyncio.wait_for(channel.next_event(), 60)
            match event:
                case ResponseReceived(status=status):
                    statuses.append(status)
                    comment = event.comment
                    if status != 200:
                        break
                case ConnectionFailed():
                    break
    finally:
        channel.close()
        await asyncio.wait_for(running, 30)
        await stream.close()
    return Pushed(stream, statuses, comment, len(pieces))


def file_offer(
    client: MsrpTransport, selector: FileSelector, direction: sdp.Direction
) -> tuple[sdp.SessionDescription, MsrpUri]:
    """One file-transfer m-line (msrps) offering ``selector`` in ``direction``."""
    local = client.local_uri(True)
    media = msrp_media(
        local,
        ["*"],
        direction=direction,
        extra=file_transfer_attributes(selector, transfer_id=make_ident(os.urandom)),
    )
    return offer_of(media), local


def pull_offer(
    client: MsrpTransport, selector: FileSelector
) -> tuple[sdp.SessionDescription, MsrpUri]:
    return file_offer(client, selector, sdp.Direction.RECVONLY)


def by_hash(sha1: bytes, **parts: object) -> FileSelector:
    return FileSelector(hashes=((HASH_SHA1, sha1),), **parts)  # type: ignore[arg-type]


@dataclass
class Pulled:
    sha1: bytes
    size: int
    chunks: int
    answer: sdp.MediaDescription


async def pull(
    server: MsrpTransport, client: MsrpTransport, store: FileStore, selector: FileSelector
) -> Pulled | None:
    """Offer a pull (recvonly) naming ``selector``; receive the file as it arrives, hashing
    it; answer its last chunk 200. ``None``: the m-line was refused."""
    offer, local = pull_offer(client, selector)
    await store.settled()
    stream = MsrpFileStream.open(server, store, offer, 0, sender="sip:late@chorus.test")
    if stream is None:
        return None
    answer = answer_of(offer, [stream.accept]).media[0]
    channel = client.open(
        local,
        parse_msrp_media(answer).path,
        active=True,
        deliver_chunks=True,
        max_message_size=1 << 30,
    )
    running = asyncio.create_task(stream.run())
    await channel.wait_connected(10)
    digest = hashlib.sha1()
    chunks = expected = 0
    try:
        while True:
            event = await asyncio.wait_for(channel.next_event(), 60)
            match event:
                case MessageChunkReceived(offset=offset, data=data):
                    assert offset == expected
                    digest.update(data)
                    expected += len(data)
                    chunks += 1
                case MessageReceived(message_id=mid, size=size):
                    channel.complete_message(mid, 200)
                    return Pulled(digest.digest(), size, chunks, answer)
                case MessageAborted() | ConnectionFailed():
                    raise AssertionError(f"pull failed: {event}")
    finally:
        channel.close()
        await asyncio.wait_for(running, 30)
        await stream.close()


def leftovers(files: RoomFiles) -> list[str]:
    """Temporaries in the room spool (a refused or failed upload must leave none)."""
    return [
        p.name
        for p in files.spool.files_dir.iterdir()
        if p.name.startswith(".upload-") or p.name.endswith(".tmp")
    ]


def data_files(files: RoomFiles) -> list[str]:
    return sorted(p.name for p in files.spool.files_dir.iterdir() if not p.name.startswith("."))


def rows(spool_dir: Path) -> list[tuple[str, str, str]]:
    with sqlite3.connect(spool_dir / DATABASE_NAME) as db:
        return db.execute("SELECT room, name, status FROM files ORDER BY id").fetchall()


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    return tmp_path / "spool"


async def test_20_mb_over_tls_survives_a_restart_and_is_pulled_by_hash(
    server: MsrpTransport, client: MsrpTransport, spool_dir: Path
) -> None:
    """Must-show: 20 MB into a room over TLS, the store reopened (a restart: new spool and
    database objects), then a later participant pulls it by hash: SHA-1 equal."""
    data = random.Random(20).randbytes(20 * 1024 * 1024)
    sha1 = hashlib.sha1(data).digest()
    files = RoomFiles.open(spool_dir)
    pushed = await push(server, client, files.store(ROOM), data)
    assert pushed.stream is not None and pushed.stream.outcome == "stored"
    assert pushed.statuses == [200] * pushed.chunks  # the last 200: file and row kept
    (record,) = files.list(ROOM)
    assert (record.sha1, record.size, record.sender) == (sha1.hex(), len(data), ALICE)
    files.close()

    again = RoomFiles.open(spool_dir)  # the restart
    report = again.reconcile()
    assert (report.rows_recovered, report.missing, report.orphans) == (0, 0, 0)
    assert again.list(ROOM) == [record]
    pulled = await pull(server, client, again.store(ROOM), by_hash(sha1))
    assert pulled is not None
    assert pulled.sha1 == sha1 and pulled.size == len(data)
    assert pulled.chunks >= len(data) // again.chunk_size  # read from disk chunk by chunk
    served = parse_file_transfer(pulled.answer)
    assert pulled.answer.direction is sdp.Direction.SENDONLY
    assert served is not None and served.selector.sha1 == sha1
    assert served.selector.size == len(data) and served.selector.name == "report.pdf"
    found = again.lookup(ROOM, sha1.hex())
    assert found is not None and found[0].read_bytes() == data and found[1] == record
    again.close()


async def test_unknown_hash_and_another_rooms_hash_are_refused(
    server: MsrpTransport, client: MsrpTransport, spool_dir: Path
) -> None:
    data = b"minutes of the meeting\n" * 100
    sha1 = hashlib.sha1(data).digest()
    files = RoomFiles.open(spool_dir)
    assert (await push(server, client, files.store(ROOM), data)).statuses[-1] == 200
    unknown = hashlib.sha1(b"never uploaded").digest()
    assert await pull(server, client, files.store(ROOM), by_hash(unknown)) is None
    assert await pull(server, client, files.store(OTHER), by_hash(sha1)) is None  # port 0
    offer, _ = pull_offer(client, by_hash(sha1))
    assert files.explain(OTHER, offer, 0) == FileRefusal(404, "File Not Found")
    assert files.lookup(OTHER, sha1.hex()) is None and files.list(OTHER) == []
    # A selector naming the hash and a wrong size does not fit the file either (RFC 5547 §5).
    assert await pull(server, client, files.store(ROOM), by_hash(sha1, size=1)) is None
    fits = await pull(
        server, client, files.store(ROOM), by_hash(sha1, name="report.pdf", size=len(data))
    )
    assert fits is not None and fits.sha1 == sha1
    files.close()


async def test_traversal_name_is_metadata_only(
    server: MsrpTransport, client: MsrpTransport, spool_dir: Path
) -> None:
    """``../../etc/passwd`` travels in a=file-selector: it is stored as the row's name, the
    bytes under the server's ``<sha1>.<token>``, nothing outside the spool, and the pull's
    answer carries the name back exactly."""
    data = b"root:x:0:0:not really\n"
    sha1 = hashlib.sha1(data).digest()
    files = RoomFiles.open(spool_dir)
    pushed = await push(server, client, files.store(ROOM), data, name="../../etc/passwd")
    assert pushed.statuses == [200]
    (record,) = files.list(ROOM)
    assert record.name == "../../etc/passwd"
    assert data_files(files) == [record.file_id, f"{record.file_id}.json"]
    assert record.file_id.startswith(sha1.hex() + ".")
    assert not (spool_dir.parent / "etc").exists() and not (spool_dir / "etc").exists()
    pulled = await pull(server, client, files.store(ROOM), by_hash(sha1))
    assert pulled is not None
    served = parse_file_transfer(pulled.answer)
    assert served is not None and served.selector.name == "../../etc/passwd"
    files.close()


async def test_file_over_the_per_file_limit_is_refused_and_leaves_nothing(
    server: MsrpTransport,
    client: MsrpTransport,
    spool_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    files = RoomFiles.open(spool_dir, policy=FilesPolicy(max_file_bytes=100_000))
    big = random.Random(1).randbytes(150_000)
    with caplog.at_level(logging.INFO):
        refused = await push(server, client, files.store(ROOM), big)
    assert refused.stream is None  # an announced size over the limit: port 0
    assert files.explain(ROOM, push_offer(client, big)[0], 0) == FileRefusal(413, "File Too Large")
    assert "file too large: 150000 bytes, per-file limit 100000" in caplog.text
    assert ROOM in caplog.text
    # Unannounced size: stopped with 413 when it grows past the limit.
    grown = await push(server, client, files.store(ROOM), big, announce_size=False)
    assert grown.stream is not None and grown.stream.outcome is not None
    assert grown.stream.outcome.startswith("failed")
    assert 413 in grown.statuses
    assert leftovers(files) == [] and data_files(files) == [] and rows(spool_dir) == []
    files.close()


async def test_room_quota_refuses_with_413_insufficient_storage_and_leaves_nothing(
    server: MsrpTransport,
    client: MsrpTransport,
    spool_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    files = RoomFiles.open(spool_dir, policy=FilesPolicy(room_quota_bytes=300_000))
    first = random.Random(2).randbytes(200_000)
    second = random.Random(3).randbytes(200_000)
    assert (await push(server, client, files.store(ROOM), first)).statuses[-1] == 200
    before = data_files(files)
    with caplog.at_level(logging.INFO):
        offered = await push(server, client, files.store(ROOM), second)
    assert offered.stream is None  # the offer announced a size that does not fit: port 0
    refusal = files.explain(ROOM, push_offer(client, second)[0], 0)
    assert refusal == FileRefusal(413, "Room Storage Full")
    assert "room quota exceeded (insufficient storage): 200000 of 300000 bytes used" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO):
        unannounced = await push(server, client, files.store(ROOM), second, announce_size=False)
    # Every chunk but the last taken, the last answered 413 with the reason (RFC 4975 §7.3).
    assert unannounced.statuses == [200] * (unannounced.chunks - 1) + [413]
    assert unannounced.last_comment == "room quota exceeded (insufficient storage)"
    assert f"room {ROOM}: file 'report.pdf' (200000 bytes" in caplog.text
    assert leftovers(files) == [] and data_files(files) == before
    assert [(room, status) for room, _, status in rows(spool_dir)] == [(ROOM, "stored")]
    # Another room has its own quota.
    other = await push(server, client, files.store(OTHER), second)
    assert other.statuses[-1] == 200
    files.close()


async def test_ten_simultaneous_pullers_receive_the_same_bytes(
    server: MsrpTransport, client: MsrpTransport, spool_dir: Path
) -> None:
    data = random.Random(10).randbytes(3 * 1024 * 1024 + 17)
    sha1 = hashlib.sha1(data).digest()
    files = RoomFiles.open(spool_dir)
    assert (await push(server, client, files.store(ROOM), data)).statuses[-1] == 200
    store = files.store(ROOM)
    pulled = await asyncio.gather(*(pull(server, client, store, by_hash(sha1)) for _ in range(10)))
    assert all(p is not None and p.sha1 == sha1 and p.size == len(data) for p in pulled)
    assert all(p is not None and p.chunks > 1 for p in pulled)  # chunked from disk
    files.close()
