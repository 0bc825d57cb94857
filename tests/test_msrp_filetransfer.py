"""File transfer bookkeeping (RFC 5547 §8.4) and the spool: complete, out of order, truncated,
hash mismatch and oversize transfers, with nothing left on disk after a failure (temporary
files included). The last tests run two MSRP cores back to back into a real spool."""

from __future__ import annotations

import hashlib
import json
import random as pyrandom
from pathlib import Path

import pytest

from control.files.spool import FileMeta, FileSpool, SpoolError
from control.msrp import (
    MessageAborted,
    MessageChunkReceived,
    MessageReceived,
    MsrpConnection,
    MsrpSession,
    MsrpUri,
    ProtocolError,
    ResponseReceived,
)
from control.msrp.fileselector import FileRange
from control.msrp.filetransfer import (
    BytesSink,
    ChunkPlan,
    FileReceiver,
    FileSender,
    FileTransferError,
    ReceiverState,
)
from control.msrp.message import Flag


class CountingRandom:
    """Deterministic stand-in for os.urandom."""

    def __init__(self, seed: int = 1) -> None:
        self._rng = pyrandom.Random(seed)

    def __call__(self, n: int) -> bytes:
        return self._rng.randbytes(n)


def payload(size: int, seed: int = 7) -> bytes:
    return pyrandom.Random(seed).randbytes(size)


def sha1(data: bytes) -> bytes:
    return hashlib.sha1(data).digest()


def leftovers(spool: FileSpool) -> list[str]:
    return sorted(p.name for p in spool.files_dir.iterdir()) if spool.files_dir.exists() else []


# ---- FileReceiver -----------------------------------------------------------------------


def test_in_order_transfer_checks_size_and_hash() -> None:
    data = payload(100_000)
    sink = BytesSink()
    receiver = FileReceiver(sink, size=len(data), sha1=sha1(data), max_size=1 << 20)
    for offset in range(0, len(data), 4096):
        receiver.receive(offset, data[offset : offset + 4096], len(data))
    result = receiver.finish(len(data))
    assert result.size == len(data) and result.sha1 == sha1(data) and result.verified
    assert receiver.state is ReceiverState.COMPLETE
    assert bytes(sink.data) == data


def test_out_of_order_and_overlapping_pieces_hash_correctly() -> None:
    data = payload(50_000)
    pieces = [(o, data[o : o + 3000]) for o in range(0, len(data), 3000)]
    pyrandom.Random(3).shuffle(pieces)
    sink = BytesSink()
    receiver = FileReceiver(sink, size=len(data), sha1=sha1(data), max_size=len(data))
    for offset, piece in pieces:
        receiver.receive(offset, piece)
    receiver.receive(1000, data[1000:9000])  # a resent stretch changes nothing
    assert receiver.received == len(data)
    assert receiver.finish(len(data)).sha1 == sha1(data)


def test_truncated_transfer_fails() -> None:
    data = payload(10_000)
    receiver = FileReceiver(BytesSink(), size=len(data), sha1=sha1(data), max_size=1 << 20)
    receiver.receive(0, data[:6000])
    with pytest.raises(FileTransferError) as info:
        receiver.finish(None)
    assert info.value.status == 400 and "truncated" in info.value.reason
    assert receiver.state is ReceiverState.FAILED
    with pytest.raises(FileTransferError):
        receiver.receive(6000, data[6000:])  # a failed transfer stays failed


def test_gap_in_the_middle_fails() -> None:
    data = payload(10_000)
    receiver = FileReceiver(BytesSink(), size=len(data), sha1=None, max_size=1 << 20)
    receiver.receive(0, data[:4000])
    receiver.receive(5000, data[5000:])
    with pytest.raises(FileTransferError, match="truncated"):
        receiver.finish(len(data))


def test_hash_mismatch_fails() -> None:
    data = payload(10_000)
    receiver = FileReceiver(BytesSink(), size=len(data), sha1=sha1(b"other"), max_size=1 << 20)
    receiver.receive(0, data)
    with pytest.raises(FileTransferError, match="SHA-1") as info:
        receiver.finish(len(data))
    assert info.value.status == 400 and receiver.state is ReceiverState.FAILED


def test_announced_size_over_cap_is_413() -> None:
    with pytest.raises(FileTransferError) as info:
        FileReceiver(BytesSink(), size=2000, sha1=None, max_size=1000)
    assert info.value.status == 413


def test_bytes_past_cap_or_announced_size_are_413() -> None:
    sink = BytesSink()
    capped = FileReceiver(sink, size=None, sha1=None, max_size=1000)
    capped.receive(0, bytes(1000))
    with pytest.raises(FileTransferError) as info:
        capped.receive(1000, b"x")
    assert info.value.status == 413 and len(sink.data) == 1000
    announced = FileReceiver(BytesSink(), size=10, sha1=None, max_size=1000)
    with pytest.raises(FileTransferError) as info:
        announced.receive(5, bytes(6))
    assert info.value.status == 413


def test_total_contradicting_selector_is_refused() -> None:
    receiver = FileReceiver(BytesSink(), size=10, sha1=None, max_size=1000)
    with pytest.raises(FileTransferError) as info:
        receiver.receive(0, b"abc", total=11)
    assert info.value.status == 400
    over = FileReceiver(BytesSink(), size=None, sha1=None, max_size=1000)
    with pytest.raises(FileTransferError) as info:
        over.receive(0, b"abc", total=5000)
    assert info.value.status == 413


def test_message_longer_than_announced_at_the_end_fails() -> None:
    receiver = FileReceiver(BytesSink(), size=None, sha1=None, max_size=1000)
    receiver.receive(0, b"abcdef")
    with pytest.raises(FileTransferError):
        receiver.finish(9)


def test_missing_hash_when_required() -> None:
    receiver = FileReceiver(BytesSink(), size=3, sha1=None, max_size=10, require_hash=True)
    receiver.receive(0, b"abc")
    with pytest.raises(FileTransferError, match="no hash"):
        receiver.finish(3)
    lenient = FileReceiver(BytesSink(), size=3, sha1=None, max_size=10)
    lenient.receive(0, b"abc")
    result = lenient.finish(3)
    assert result.sha1 == sha1(b"abc") and not result.verified


def test_empty_file() -> None:
    receiver = FileReceiver(BytesSink(), size=0, sha1=sha1(b""), max_size=10)
    receiver.receive(0, b"", 0)
    assert receiver.finish(0).verified


def test_range_receive_writes_at_file_offsets() -> None:
    data = payload(5000)
    sink = BytesSink()
    receiver = FileReceiver(
        sink, size=len(data), sha1=sha1(data), max_size=10_000, file_range=FileRange(1001, 2000)
    )
    with pytest.raises(FileTransferError):
        FileReceiver(
            BytesSink(), size=5000, sha1=None, max_size=10_000, file_range=FileRange(1001, 2000)
        ).receive(0, b"x")
    receiver.receive(1000, data[1000:2000])
    result = receiver.finish(None)
    assert result.size == 1000 and not result.verified  # the file's hash covers all of it
    assert bytes(sink.data[1000:2000]) == data[1000:2000]


def test_abort_marks_failed() -> None:
    receiver = FileReceiver(BytesSink(), size=10, sha1=None, max_size=100)
    error = receiver.abort("sender sent #")
    assert receiver.state is ReceiverState.FAILED and error.status == 400


# ---- FileSender -------------------------------------------------------------------------


def test_sender_pieces() -> None:
    assert list(FileSender(0).pieces()) == [ChunkPlan(0, 0, True)]
    assert list(FileSender(10, chunk_size=5).pieces()) == [
        ChunkPlan(0, 5, False),
        ChunkPlan(5, 5, True),
    ]
    assert list(FileSender(11, chunk_size=5).pieces())[-1] == ChunkPlan(10, 1, True)
    ranged = FileSender(100, chunk_size=30, file_range=FileRange(11, 70))
    assert ranged.length == 60
    assert list(ranged.pieces()) == [ChunkPlan(10, 30, False), ChunkPlan(40, 30, True)]
    assert list(FileSender(100, file_range=FileRange(51, None)).pieces()) == [
        ChunkPlan(50, 50, True)
    ]


# ---- the spool --------------------------------------------------------------------------


def meta(name: str = "report.pdf") -> FileMeta:
    return FileMeta(name, "application/pdf", "sip:alice@example.com", "2024-01-02T03:04:05+00:00")


def test_spool_commit_uses_server_names_and_keeps_metadata(tmp_path: Path) -> None:
    spool = FileSpool(tmp_path, max_file_bytes=1 << 20, random=CountingRandom())
    data = payload(70_000)
    upload = spool.begin()
    assert upload.path.parent == spool.files_dir and upload.path.name.endswith(".part")
    receiver = FileReceiver(upload, size=len(data), sha1=sha1(data), max_size=1 << 20)
    receiver.receive(0, data)
    result = receiver.finish(len(data))
    stored = upload.commit(meta("../../etc/passwd"), result.sha1_hex)
    assert stored.path.parent == spool.files_dir
    assert stored.file_id.startswith(sha1(data).hex() + ".")
    assert "passwd" not in stored.file_id and stored.name == "../../etc/passwd"
    assert stored.path.read_bytes() == data
    assert sorted(leftovers(spool)) == sorted([stored.file_id, stored.file_id + ".json"])
    record = json.loads((spool.files_dir / (stored.file_id + ".json")).read_text())
    assert record["sha1"] == sha1(data).hex() and record["size"] == len(data)
    assert record["sender"] == "sip:alice@example.com"
    assert spool.find(sha1(data).hex().upper()) == stored
    assert spool.get(stored.file_id) == stored and spool.files() == [stored]
    assert spool.find(sha1(b"nope").hex()) is None and spool.find("../x") is None
    with spool.open_read(stored) as handle:
        assert handle.read() == data
    spool.delete(stored)
    assert leftovers(spool) == [] and spool.find(sha1(data).hex()) is None


def test_spool_survives_a_restart(tmp_path: Path) -> None:
    spool = FileSpool(tmp_path, random=CountingRandom(2))
    upload = spool.begin()
    upload.write_at(0, b"hello")
    stored = upload.commit(meta(), sha1(b"hello").hex())
    again = FileSpool(tmp_path)
    assert again.prepare() == 0
    assert again.find(sha1(b"hello").hex()) == stored


@pytest.mark.parametrize(
    ("failure", "status", "reason"),
    [
        ("truncated", 400, "truncated"),
        ("hash", 400, "SHA-1 of the received file does not match"),
        ("oversize", 413, ""),
    ],
)
def test_failed_upload_leaves_nothing(
    tmp_path: Path, failure: str, status: int, reason: str
) -> None:
    spool = FileSpool(tmp_path, max_file_bytes=8000, random=CountingRandom(3))
    data = payload(6000)
    upload = spool.begin()
    announced = sha1(b"x") if failure == "hash" else sha1(data)
    receiver = FileReceiver(upload, size=None, sha1=announced, max_size=spool.max_file_bytes)
    receiver.receive(0, data[:3000])
    with pytest.raises(FileTransferError) as info:
        if failure == "truncated":
            receiver.finish(len(data))  # the message said 6000 bytes; 3000 came
        elif failure == "hash":
            receiver.receive(3000, data[3000:])
            receiver.finish(len(data))  # all of it, but not the announced file
        else:
            receiver.receive(3000, payload(6000, seed=9))  # 9000 bytes > the 8000 cap
    assert info.value.status == status
    assert info.value.reason.startswith(reason), info.value.reason
    assert receiver.state is ReceiverState.FAILED
    assert leftovers(spool) == [upload.path.name]  # only the temporary file, so far
    upload.discard()
    assert leftovers(spool) == []
    upload.discard()  # twice is fine


def test_upload_refuses_writes_past_the_cap(tmp_path: Path) -> None:
    spool = FileSpool(tmp_path, max_file_bytes=100)
    upload = spool.begin()
    with pytest.raises(SpoolError) as info:
        upload.write_at(90, bytes(11))
    assert info.value.status == 413
    upload.discard()
    assert leftovers(spool) == []


def test_prepare_removes_what_a_crash_left_and_keeps_every_completed_file(
    tmp_path: Path,
) -> None:
    spool = FileSpool(tmp_path, random=CountingRandom(4))
    kept = spool.begin()
    kept.write_at(0, b"kept")
    stored = kept.commit(meta(), sha1(b"kept").hex())
    crashed = spool.begin()
    crashed.write_at(0, b"half")
    (spool.files_dir / "x.json.tmp").write_bytes(b"{")
    # A sidecar written just before a crash, its data file never renamed into place.
    (spool.files_dir / f"{'cd' * 20}.0123456789abcdef.json").write_text("{}")
    # A completed file whose sidecar is gone: kept, and given its sidecar back.
    lost = f"{sha1(b'lost').hex()}.00000000000000aa"
    (spool.files_dir / lost).write_bytes(b"lost")
    # A data file whose bytes do not match its name: kept (never deleted), never served.
    wrong = f"{'ab' * 20}.0123456789abcdef"
    (spool.files_dir / wrong).write_bytes(b"not ab...")
    assert spool.prepare() == 3
    assert leftovers(spool) == sorted(
        [stored.file_id, stored.file_id + ".json", lost, lost + ".json", wrong]
    )
    restored = spool.find(sha1(b"lost").hex())
    assert restored is not None and restored.size == 4 and restored.path.read_bytes() == b"lost"
    assert spool.find("ab" * 20) is None
    assert spool.prepare() == 0  # nothing more to do on the next start


def test_commit_refuses_a_bad_hash_string(tmp_path: Path) -> None:
    spool = FileSpool(tmp_path)
    upload = spool.begin()
    with pytest.raises(SpoolError):
        upload.commit(meta(), "../../evil")
    upload.discard()
    assert leftovers(spool) == []


# ---- two MSRP cores back to back into the spool -----------------------------------------

ALICE = MsrpUri("alice.example.com", 2855, "alice1", "tcp", True)
BOB = MsrpUri("bob.example.com", 2855, "bob1", "tcp", True)


def receive_over_msrp(
    spool: FileSpool,
    data: bytes,
    announced: bytes,
    *,
    chunk: int = 16384,
    stop_after: int | None = None,
    abort: bool = False,
    announce_size: bool = True,
) -> tuple[str, MessageAborted | None, list[tuple[int, str | None]]]:
    """Alice sends ``data`` chunk by chunk; Bob's file session writes into the spool.

    Returns the outcome, the abort event if any, and the responses Alice got: Bob answers the
    last chunk only after checking the file (``complete_message``), with 200 or the failure.
    """
    alice = MsrpConnection(random=CountingRandom(10))
    bob = MsrpConnection(random=CountingRandom(11), body_piece_size=4096)
    alice.add_session(MsrpSession(ALICE, [BOB]))
    bob.add_session(
        MsrpSession(BOB, [ALICE], deliver_chunks=True, max_message_size=spool.max_file_bytes)
    )
    upload = spool.begin()
    receiver = FileReceiver(
        upload,
        size=len(data) if announce_size else None,
        sha1=announced,
        max_size=spool.max_file_bytes,
    )
    mid = alice.new_message_id()
    outcome = "incomplete"
    aborted = None
    for plan in FileSender(len(data), chunk_size=chunk).pieces():
        if stop_after is not None and plan.offset >= stop_after:
            if abort:
                wire = alice.send_chunk(
                    [BOB],
                    [ALICE],
                    mid,
                    "application/octet-stream",
                    b"",
                    now=0.0,
                    offset=plan.offset,
                    total=len(data),
                    flag=Flag.ABORT,
                )
                bob.receive_data(wire, 0.0)
            break
        wire = alice.send_chunk(
            [BOB],
            [ALICE],
            mid,
            "application/octet-stream",
            data[plan.offset : plan.offset + plan.length],
            now=0.0,
            offset=plan.offset,
            total=len(data),
            flag=Flag.END if plan.last else Flag.CONTINUE,
        )
        bob.receive_data(wire, 0.0)
    wire = bob.data_to_send()
    try:
        for event in bob.events():
            match event:
                case MessageChunkReceived(offset=offset, data=piece, total=total):
                    receiver.receive(offset, piece, total)
                case MessageReceived(size=size):
                    assert event.awaiting_completion
                    try:
                        result = receiver.finish(size)
                    except FileTransferError as exc:
                        wire += bob.complete_message("bob1", mid, exc.status, exc.reason)
                        raise
                    upload.commit(meta(), result.sha1_hex)
                    wire += bob.complete_message("bob1", mid)
                    outcome = "stored"
                case MessageAborted():
                    aborted = event
                case ProtocolError(status=status):
                    outcome = f"refused {status}"
    except FileTransferError as exc:
        outcome = f"failed {exc.status}"
    if outcome != "stored":
        upload.discard()
    alice.receive_data(wire, 0.0)
    answers = [(e.status, e.comment) for e in alice.events() if isinstance(e, ResponseReceived)]
    return outcome, aborted, answers


def test_msrp_transfer_into_spool(tmp_path: Path) -> None:
    spool = FileSpool(tmp_path, max_file_bytes=1 << 20, random=CountingRandom(5))
    data = payload(200_000)
    outcome, _, answers = receive_over_msrp(spool, data, sha1(data))
    assert outcome == "stored"
    assert answers == [(200, "OK")] * 13  # the last one only after the commit
    stored = spool.find(sha1(data).hex())
    assert stored is not None and stored.path.read_bytes() == data


def test_msrp_aborted_transfer_leaves_nothing(tmp_path: Path) -> None:
    spool = FileSpool(tmp_path, max_file_bytes=1 << 20, random=CountingRandom(6))
    data = payload(100_000)
    outcome, aborted, _ = receive_over_msrp(spool, data, sha1(data), stop_after=50_000, abort=True)
    assert outcome == "incomplete" and aborted is not None and aborted.status is None
    assert leftovers(spool) == []


def test_msrp_cut_off_transfer_leaves_nothing(tmp_path: Path) -> None:
    spool = FileSpool(tmp_path, max_file_bytes=1 << 20, random=CountingRandom(7))
    data = payload(100_000)
    outcome, _, _ = receive_over_msrp(spool, data, sha1(data), stop_after=50_000)
    assert outcome == "incomplete" and leftovers(spool) == []


def test_msrp_hash_mismatch_leaves_nothing(tmp_path: Path) -> None:
    spool = FileSpool(tmp_path, max_file_bytes=1 << 20, random=CountingRandom(8))
    data = payload(100_000)
    outcome, _, answers = receive_over_msrp(spool, data, sha1(data[:-1]))
    assert outcome == "failed 400" and leftovers(spool) == []
    assert answers[:-1] == [(200, "OK")] * 6
    assert answers[-1] == (400, "SHA-1 of the received file does not match a=file-selector")


def test_msrp_oversize_transfer_is_stopped(tmp_path: Path) -> None:
    spool = FileSpool(tmp_path, max_file_bytes=50_000, random=CountingRandom(9))
    data = payload(100_000)
    refused = spool.begin()
    with pytest.raises(FileTransferError) as info:
        FileReceiver(refused, size=len(data), sha1=None, max_size=spool.max_file_bytes)
    assert info.value.status == 413
    refused.discard()
    # Announcing no size does not help: the core answers 413 past the session limit.
    outcome, _, _ = receive_over_msrp(spool, data, sha1(data), chunk=60_000, announce_size=False)
    assert outcome == "refused 413"
    assert leftovers(spool) == []
