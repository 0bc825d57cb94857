"""Echo's file transfer (RFC 5547) against a real `chorus serve`, SIP and MSRP over TLS.

A file pushed to echo (sendonly offer with a=file-selector) is stored in the spool under a
server-chosen name and pulled back (recvonly offer naming its hash) with the same SHA-1. Echo
answers the last chunk of a push only once the file is checked and stored, so its 200 means the
file is there. An aborted, cut-off, wrong-hash, short or oversize push is reported as failed
(a 400 to the last chunk when the file arrived but is wrong; echo ends the session or rejects
the offer) and leaves nothing in the spool, temporary files included.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from control.msrp import (
    ConnectionFailed,
    MessageAborted,
    MessageChunkReceived,
    MessageReceived,
    ReportReceived,
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
from control.msrp.sdp import Setup, msrp_media, parse_msrp_media
from control.msrp.transport import MsrpChannel, MsrpTransport
from control.sip import sdp
from control.sip.sdp import Direction
from control.sip.session import Session
from tests.peers.chorus import ChorusProcess
from tests.peers.sipclient import SipClient, client_tls_context

pytestmark = pytest.mark.timeout(60)

MAX_FILE = 8 * 1024 * 1024


# ---- a file-transfer client (the offerer's side of RFC 5547 §8) ---------------------------


@dataclass
class FileCall:
    """One file-transfer call: the SIP session, the answer's m-line, the MSRP channel."""

    session: Session
    answer: sdp.MediaDescription
    channel: MsrpChannel
    chunk_answers: list[int] = field(default_factory=list)
    chunk_comments: list[str | None] = field(default_factory=list)
    reports: list[int] = field(default_factory=list)  # REPORT statuses (RFC 4975 §7.1.2)


def offer_sdp(media: sdp.MediaDescription) -> bytes:
    return sdp.serialize(
        sdp.build_offer(
            origin=sdp.Origin("tester", "1", 1, "IN", "IP4", "127.0.0.1"),
            connection=sdp.Connection.for_address("127.0.0.1"),
            media=[media],
        )
    )


async def place_file_call(
    sip: SipClient,
    chorus: ChorusProcess,
    msrp: MsrpTransport,
    selector: FileSelector,
    direction: Direction,
    *,
    transfer_id: str,
) -> tuple[FileCall | None, int]:
    """Offer a push (``sendonly``) or pull (``recvonly``); we connect (a=setup:active)."""
    local = msrp.local_uri(True)
    media = msrp_media(
        local,
        ["*"],
        setup=Setup.ACTIVE,
        direction=direction,
        extra=file_transfer_attributes(selector, transfer_id=transfer_id),
    )
    session, response = await sip.call(
        f"sips:echo@127.0.0.1:{chorus.tls_port}", offer_sdp(media), chorus.tls_port
    )
    if session is None:
        return None, response.status
    answer = sdp.parse(response.body).media[0]
    if answer.port == 0:
        return None, 0
    theirs = parse_msrp_media(answer)
    channel = msrp.open(
        local,
        theirs.path,
        active=True,
        accept_types=["*"],
        deliver_chunks=True,
        max_message_size=1 << 30,
    )
    await channel.wait_connected(10)
    return FileCall(session, answer, channel), response.status


async def push_chunks(
    call: FileCall,
    data: bytes,
    content_type: str,
    *,
    chunk_size: int = 256 * 1024,
    stop_at: int | None = None,
    abort: bool = False,
    success_report: bool = False,
) -> None:
    """Send ``data`` as one message; with ``stop_at`` stop there (and send ``#`` if asked)."""
    message_id = f"file{random.getrandbits(48):x}"
    for piece in FileSender(len(data), chunk_size=chunk_size).pieces():
        if stop_at is not None and piece.offset >= stop_at:
            if abort:
                call.channel.send_chunk(
                    message_id,
                    content_type,
                    b"",
                    offset=piece.offset,
                    total=len(data),
                    flag=Flag.ABORT,
                )
            return
        call.channel.send_chunk(
            message_id,
            content_type,
            data[piece.offset : piece.offset + piece.length],
            offset=piece.offset,
            total=len(data),
            flag=Flag.END if piece.last else Flag.CONTINUE,
            success_report=success_report,
        )
        await call.channel.drain()


async def chunk_responses(call: FileCall, count: int, timeout: float = 20.0) -> list[int]:
    while len(call.chunk_answers) < count:
        event = await asyncio.wait_for(call.channel.next_event(), timeout)
        if isinstance(event, ResponseReceived):
            call.chunk_answers.append(event.status)
            call.chunk_comments.append(event.comment)
        elif isinstance(event, ReportReceived):
            call.reports.append(event.status)
        elif isinstance(event, ConnectionFailed):
            break
    return call.chunk_answers


async def until_closed(call: FileCall, timeout: float = 15.0) -> None:
    """Read events until the MSRP connection is gone, recording responses and REPORTs."""
    while True:
        event = await asyncio.wait_for(call.channel.next_event(), timeout)
        if isinstance(event, ResponseReceived):
            call.chunk_answers.append(event.status)
        elif isinstance(event, ReportReceived):
            call.reports.append(event.status)
        elif isinstance(event, ConnectionFailed):
            return


async def pull_file(call: FileCall, sha1: bytes, timeout: float = 30.0) -> tuple[bytes, int]:
    """Receive the one file message, answer its last chunk after checking the hash (as echo
    does for a push); returns its SHA-1 and size."""
    digest = hashlib.sha1()
    expected = 0
    while True:
        event = await asyncio.wait_for(call.channel.next_event(), timeout)
        match event:
            case MessageChunkReceived(offset=offset, data=data):
                assert offset == expected, "echo sends the file in order"
                digest.update(data)
                expected += len(data)
            case MessageReceived(message_id=mid, size=size):
                assert event.awaiting_completion
                ok = digest.digest() == sha1
                call.channel.complete_message(mid, 200 if ok else 400, None if ok else "hash")
                return digest.digest(), size
            case MessageAborted() | ConnectionFailed():
                raise AssertionError(f"pull failed: {event}")


# ---- fixtures and helpers -----------------------------------------------------------------


@pytest.fixture(scope="module")
def chorus() -> Iterator[ChorusProcess]:
    with ChorusProcess({"files": {"max_file_bytes": MAX_FILE}}) as process:
        yield process
        assert process.alive, process.log()


@pytest.fixture
async def msrp() -> AsyncIterator[MsrpTransport]:
    transport = MsrpTransport()
    transport.ssl_client = client_tls_context()
    yield transport
    await transport.stop()


def files_dir(chorus: ChorusProcess) -> Path:
    return chorus.workdir / "spool" / "files"


def spool_entries(chorus: ChorusProcess) -> list[str]:
    directory = files_dir(chorus)
    return sorted(os.listdir(directory)) if directory.exists() else []


def stored_with(chorus: ChorusProcess, sha1_hex: str) -> list[str]:
    return [n for n in spool_entries(chorus) if n.startswith(sha1_hex)]


def stored_metadata(chorus: ChorusProcess, sha1_hex: str) -> dict:
    """The metadata of a stored file: no waiting, since echo answers the last chunk of a push
    only once the file (and this record) is in place."""
    for name in stored_with(chorus, sha1_hex):
        if name.endswith(".json"):
            return json.loads((files_dir(chorus) / name).read_text())
    raise AssertionError(f"{sha1_hex} not stored; spool has {spool_entries(chorus)}")


def selector(data: bytes, name: str = "holiday photo.jpg", **overrides: object) -> FileSelector:
    values: dict[str, object] = {
        "name": name,
        "type": "image/jpeg",
        "size": len(data),
        "hashes": ((HASH_SHA1, hashlib.sha1(data).digest()),),
    }
    values.update(overrides)
    return FileSelector(**values)  # type: ignore[arg-type]


async def ended_by_echo(call: FileCall, timeout: float = 15.0) -> str:
    return await asyncio.wait_for(asyncio.shield(call.session.terminated), timeout)


def no_leftovers(chorus: ChorusProcess, before: list[str]) -> None:
    after = spool_entries(chorus)
    assert after == before, f"spool changed: {sorted(set(after) - set(before))}"
    assert not [n for n in after if n.endswith(".part") or n.endswith(".tmp")]


# ---- tests --------------------------------------------------------------------------------


async def test_push_then_pull_back_by_hash(chorus: ChorusProcess, msrp: MsrpTransport) -> None:
    data = random.Random(1).randbytes(3 * 1024 * 1024 + 12345)
    sha1 = hashlib.sha1(data).digest()
    async with SipClient("tls") as sip:
        push, status = await place_file_call(
            sip,
            chorus,
            msrp,
            selector(data, name="../../etc/passwd"),
            Direction.SENDONLY,
            transfer_id="push1",
        )
        assert push is not None, status
        answered = parse_file_transfer(push.answer)
        assert push.answer.direction is Direction.RECVONLY
        assert answered is not None and answered.selector.sha1 == sha1
        assert answered.transfer_id == "push1"
        await push_chunks(push, data, "image/jpeg", success_report=True)
        pieces = len(list(FileSender(len(data), chunk_size=256 * 1024).pieces()))
        assert await chunk_responses(push, pieces) == [200] * pieces
        record = stored_metadata(chorus, sha1.hex())  # the last 200 came after the commit
        assert record["size"] == len(data) and record["sha1"] == sha1.hex()
        assert record["name"] == "../../etc/passwd" and record["content_type"] == "image/jpeg"
        assert record["sender"] == "sip:tester@127.0.0.1"
        names = stored_with(chorus, sha1.hex())
        data_file = next(n for n in names if not n.endswith(".json"))
        assert (files_dir(chorus) / data_file).read_bytes() == data  # a server-chosen name
        assert not (chorus.workdir / "etc").exists()
        while not push.reports:  # the success REPORT follows the last 200 (RFC 4975 §7.1.2)
            event = await asyncio.wait_for(push.channel.next_event(), 10)
            if isinstance(event, ReportReceived):
                push.reports.append(event.status)
        assert push.reports == [200]
        push.channel.close()
        await push.session.bye()

        pull, status = await place_file_call(
            sip,
            chorus,
            msrp,
            FileSelector(hashes=((HASH_SHA1, sha1),)),
            Direction.RECVONLY,
            transfer_id="pull1",
        )
        assert pull is not None, status
        served = parse_file_transfer(pull.answer)
        assert pull.answer.direction is Direction.SENDONLY
        assert served is not None
        assert served.selector == selector(data, name="../../etc/passwd")
        digest, size = await pull_file(pull, sha1)
        assert size == len(data) and digest == sha1
        pull.channel.close()
        await pull.session.bye()


async def test_pull_of_unknown_hash_is_refused(chorus: ChorusProcess, msrp: MsrpTransport) -> None:
    async with SipClient("tls") as sip:
        call, status = await place_file_call(
            sip,
            chorus,
            msrp,
            FileSelector(hashes=((HASH_SHA1, hashlib.sha1(b"never pushed").digest()),)),
            Direction.RECVONLY,
            transfer_id="nothing",
        )
        assert call is None and status == 488


@pytest.mark.parametrize("how", ["abort", "close"])
async def test_truncated_push_fails_and_leaves_nothing(
    chorus: ChorusProcess, msrp: MsrpTransport, how: str
) -> None:
    data = random.Random(2).randbytes(2 * 1024 * 1024)
    before = spool_entries(chorus)
    async with SipClient("tls") as sip:
        push, status = await place_file_call(
            sip, chorus, msrp, selector(data), Direction.SENDONLY, transfer_id=f"cut-{how}"
        )
        assert push is not None, status
        await push_chunks(push, data, "image/jpeg", stop_at=1024 * 1024, abort=how == "abort")
        # Four 256 KiB chunks went out (and the "#" chunk when aborting): each is answered 200.
        sent = 4 + (how == "abort")
        assert await chunk_responses(push, sent) == [200] * sent
        if how == "close":
            push.channel.close()  # the connection goes: the transfer is cut off
        # Echo ends the call (its BYE): the transfer failed.
        assert await ended_by_echo(push) == "remote BYE"
    no_leftovers(chorus, before)
    assert stored_with(chorus, hashlib.sha1(data).hexdigest()) == []


@pytest.mark.parametrize("how", ["wrong-hash", "short"])
async def test_wrong_file_is_answered_400_and_leaves_nothing(
    chorus: ChorusProcess, msrp: MsrpTransport, how: str
) -> None:
    """The whole message arrives but is not the announced file (RFC 5547 §8.4): its last chunk
    is answered 400 on the wire (RFC 4975 §7.1.1), not 200, and echo ends the session."""
    data = random.Random(3).randbytes(1024 * 1024 + 7 if how == "wrong-hash" else 600 * 1024)
    announced = selector(data)
    sent = data
    if how == "wrong-hash":
        announced = selector(data, hashes=((HASH_SHA1, hashlib.sha1(data[:-1]).digest()),))
    else:
        sent = data[:-1000]  # a complete message, 1000 bytes short of the announced size
    before = spool_entries(chorus)
    async with SipClient("tls") as sip:
        push, status = await place_file_call(
            sip, chorus, msrp, announced, Direction.SENDONLY, transfer_id=how
        )
        assert push is not None, status
        await push_chunks(push, sent, "image/jpeg", success_report=True)
        pieces = len(list(FileSender(len(sent), chunk_size=256 * 1024).pieces()))
        answers = await chunk_responses(push, pieces)
        assert answers == [200] * (pieces - 1) + [400], answers
        if how == "wrong-hash":
            assert push.chunk_comments[-1] == (
                "SHA-1 of the received file does not match a=file-selector"
            )
        assert await ended_by_echo(push) == "remote BYE"
        await until_closed(push)  # everything echo wrote before closing has been read
        assert push.reports == []  # no success REPORT for a file that failed
    no_leftovers(chorus, before)
    assert stored_with(chorus, hashlib.sha1(data).hexdigest()) == []
    assert stored_with(chorus, hashlib.sha1(sent).hexdigest()) == []


async def test_oversize_push_is_refused(chorus: ChorusProcess, msrp: MsrpTransport) -> None:
    before = spool_entries(chorus)
    big = FileSelector("big.iso", "application/octet-stream", MAX_FILE + 1)
    async with SipClient("tls") as sip:
        call, status = await place_file_call(
            sip, chorus, msrp, big, Direction.SENDONLY, transfer_id="big"
        )
        assert call is None and status == 488
    no_leftovers(chorus, before)


async def test_push_growing_past_the_cap_is_stopped(
    chorus: ChorusProcess, msrp: MsrpTransport
) -> None:
    data = random.Random(4).randbytes(MAX_FILE + 512 * 1024)
    before = spool_entries(chorus)
    async with SipClient("tls") as sip:
        push, status = await place_file_call(
            sip,
            chorus,
            msrp,
            FileSelector("sneaky.bin", "application/octet-stream"),  # no size announced
            Direction.SENDONLY,
            transfer_id="sneaky",
        )
        assert push is not None, status
        await push_chunks(push, data, "application/octet-stream", chunk_size=1024 * 1024)
        answers = await chunk_responses(push, 9)
        # Echo answers 413 and ends the session at once; the connection may be reset before
        # that 413 is read (we were still sending), which tells the sender just as well.
        assert 413 in answers or push.channel.closed, answers
        assert set(answers) <= {200, 413}, answers
        assert await ended_by_echo(push) == "remote BYE"
    no_leftovers(chorus, before)
