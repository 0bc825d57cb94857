"""No file stored and then forgotten (issue 7 item 3).

- A completed push is checked, committed and indexed as one task a BYE cannot cut in two: the
  transfer that waits for it may be cancelled while the disk thread commits, and the file is
  still in the index when the commit ends (before, the cancel fell between the rename and the
  index update, and pulls were refused until a restart).
- Against a real ``chorus serve``: a push whose last chunk was answered 200, then BYE and a
  pull by hash in the same breath, gives back the same SHA-1; and a BYE sent straight after the
  last chunk, without waiting for its answer, never leaves a file on disk that a pull cannot
  get.
- ``kill -9`` in the middle of an upload, then a restart on the same spool: no partial file is
  visible (its pull is refused), no temporary file is left, and the file completed before the
  kill is still served.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import functools
import hashlib
import logging
import random
import threading
from pathlib import Path

import pytest

from control.files.spool import FileMeta, FileSpool, StoredFile
from control.msrp.fileselector import HASH_SHA1, FileSelector
from control.msrp.filetransfer import FileReceiver, FileSender
from control.msrp.transport import MsrpTransport
from control.sip.sdp import Direction
from control.streams import FileStore, finish_and_commit
from tests import test_echo_files
from tests.peers.chorus import ChorusProcess
from tests.peers.sipclient import SipClient
from tests.peers.wait import wait_until
from tests.test_echo_files import (
    chunk_responses,
    place_file_call,
    pull_file,
    push_chunks,
    selector,
)

pytestmark = pytest.mark.timeout(120)

msrp = test_echo_files.msrp  # the file-transfer client's MSRP transport (a fixture)

CHUNK = 256 * 1024


def sha1_of(data: bytes) -> bytes:
    return hashlib.sha1(data).digest()


def temporaries(files_dir: Path) -> list[str]:
    return (
        sorted(p.name for p in files_dir.iterdir() if p.name.endswith((".part", ".tmp")))
        if files_dir.exists()
        else []
    )


# ---- the store and the index are one step -------------------------------------------------


async def test_cancelled_transfer_still_indexes_the_file_it_was_committing(
    tmp_path: Path,
) -> None:
    """The transfer's task is cancelled (a BYE) while the disk thread is inside the commit;
    the commit finishes and the file is in the index, found by its hash at once."""
    files = FileStore(FileSpool(tmp_path), clock=lambda: _dt.datetime(2026, 1, 1, tzinfo=_dt.UTC))
    data = random.Random(11).randbytes(300_000)
    upload = files.spool.begin()
    receiver = FileReceiver(upload, size=len(data), sha1=sha1_of(data), max_size=1 << 20)
    receiver.receive(0, data[:200_000])
    entered, release = threading.Event(), threading.Event()

    def slow_commit() -> StoredFile:
        entered.set()
        release.wait(60)  # the disk is slow: the BYE comes now
        meta = FileMeta("f.bin", "application/octet-stream", "sip:a@b", "2026-01-01T00:00:00")
        return finish_and_commit(receiver, upload, (200_000, data[200_000:]), len(data), meta)

    async def transfer() -> None:
        await asyncio.shield(files.settle(slow_commit, upload))

    waiting = asyncio.create_task(transfer())
    assert await asyncio.to_thread(entered.wait, 30)
    waiting.cancel()  # what EchoCall.close() does on BYE
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert files.find(sha1_of(data).hex()) is None  # not committed yet
    release.set()
    await asyncio.wait_for(files.settled(), 30)
    stored = files.find(sha1_of(data).hex())
    assert stored is not None and stored.path.read_bytes() == data
    assert temporaries(files.spool.files_dir) == []
    # The index is rebuilt from the sidecars on the next start: the same file.
    assert FileStore(FileSpool(tmp_path)).find(sha1_of(data).hex()) == stored


async def test_a_refused_file_is_discarded_even_when_nobody_waits(tmp_path: Path) -> None:
    files = FileStore(FileSpool(tmp_path))
    data = b"not what was announced"
    upload = files.spool.begin()
    receiver = FileReceiver(upload, size=len(data), sha1=sha1_of(b"other"), max_size=1 << 20)
    meta = FileMeta("f", "text/plain", "sip:a@b", "2026-01-01T00:00:00")
    commit = functools.partial(finish_and_commit, receiver, upload, (0, data), len(data), meta)
    verdict = await files.settle(commit, upload)
    assert verdict.status == 400 and verdict.stored is None
    assert list(files.spool.files_dir.iterdir()) == []


async def test_a_bug_while_storing_is_logged_once_and_leaves_no_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    files = FileStore(FileSpool(tmp_path))
    upload = files.spool.begin()

    def broken() -> StoredFile:
        raise RuntimeError("injected store failure")

    with caplog.at_level(logging.ERROR, logger="chorus.streams.files"):
        with pytest.raises(RuntimeError):
            await files.settle(broken, upload)
        await files.settled()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "injected store failure" in errors[0].getMessage()
    assert list(files.spool.files_dir.iterdir()) == []


# ---- through chorus serve -----------------------------------------------------------------


async def pull_sha1(
    sip: SipClient, chorus: ChorusProcess, msrp: MsrpTransport, sha1: bytes, tag: str
) -> tuple[bytes | None, int]:
    """Pull by hash: the SHA-1 of what came back, or None and the refusal."""
    call, status = await place_file_call(
        sip,
        chorus,
        msrp,
        FileSelector(hashes=((HASH_SHA1, sha1),)),
        Direction.RECVONLY,
        transfer_id=tag,
    )
    if call is None:
        return None, status
    digest, _ = await pull_file(call, sha1)
    call.channel.close()
    await call.session.bye()
    return digest, 200


async def test_push_bye_and_pull_in_the_same_breath(msrp: MsrpTransport) -> None:
    with ChorusProcess() as chorus:
        async with SipClient("tls") as sip:
            for run in range(3):
                data = random.Random(100 + run).randbytes(1024 * 1024 + run * 777)
                push, status = await place_file_call(
                    sip, chorus, msrp, selector(data), Direction.SENDONLY, transfer_id=f"b{run}"
                )
                assert push is not None, status
                await push_chunks(push, data, "image/jpeg", chunk_size=CHUNK)
                pieces = len(list(FileSender(len(data), chunk_size=CHUNK).pieces()))
                assert await chunk_responses(push, pieces) == [200] * pieces
                # The last 200 is in: BYE and pull at once, neither waiting for the other.
                push.channel.close()  # (our own connection goes; the pull opens another)
                bye = asyncio.create_task(push.session.bye())
                digest, status = await pull_sha1(sip, chorus, msrp, sha1_of(data), f"p{run}")
                await bye
                assert digest == sha1_of(data), status
        assert chorus.alive, chorus.log()


async def test_bye_right_after_the_last_chunk_never_hides_a_file(msrp: MsrpTransport) -> None:
    """The BYE goes out as soon as the last chunk is written, before its answer: whichever
    wins on the server, a file that is on disk is served, and no temporary file is left."""
    with ChorusProcess() as chorus:
        files_dir = chorus.workdir / "spool" / "files"
        async with SipClient("tls") as sip:
            for run in range(3):
                data = random.Random(200 + run).randbytes(768 * 1024 + run)
                push, status = await place_file_call(
                    sip, chorus, msrp, selector(data), Direction.SENDONLY, transfer_id=f"q{run}"
                )
                assert push is not None, status
                await push_chunks(push, data, "image/jpeg", chunk_size=CHUNK)
                await push.session.bye()
                digest, status = await pull_sha1(sip, chorus, msrp, sha1_of(data), f"r{run}")
                on_disk = [
                    p
                    for p in files_dir.glob(f"{sha1_of(data).hex()}.*")
                    if not p.name.endswith(".json")
                ]
                if on_disk:
                    assert digest == sha1_of(data), f"{on_disk} is on disk, pull got {status}"
                    assert on_disk[0].read_bytes() == data
                else:
                    assert (digest, status) == (None, 488)
                assert await wait_until(lambda: temporaries(files_dir) == [], timeout=30), (
                    temporaries(files_dir),
                    chorus.log()[-3000:],
                )
        assert chorus.alive, chorus.log()


async def test_kill_9_mid_upload_then_restart(msrp: MsrpTransport) -> None:
    first = ChorusProcess().start()
    spool = first.workdir / "spool"
    files_dir = spool / "files"
    complete = random.Random(300).randbytes(512 * 1024)
    partial = random.Random(301).randbytes(2 * 1024 * 1024)
    try:
        async with SipClient("tls") as sip:
            push, status = await place_file_call(
                sip, first, msrp, selector(complete), Direction.SENDONLY, transfer_id="whole"
            )
            assert push is not None, status
            await push_chunks(push, complete, "image/jpeg", chunk_size=CHUNK)
            assert await chunk_responses(push, 2) == [200, 200]
            await push.session.bye()
            cut, status = await place_file_call(
                sip, first, msrp, selector(partial), Direction.SENDONLY, transfer_id="half"
            )
            assert cut is not None, status
            await push_chunks(cut, partial, "image/jpeg", chunk_size=CHUNK, stop_at=CHUNK * 4)
            assert await chunk_responses(cut, 4) == [200] * 4  # half of it is on the server
            assert [n for n in temporaries(files_dir) if n.endswith(".part")], "no upload?"
            assert first.process is not None
            first.process.kill()  # SIGKILL: no clean-up of any kind
            first.process.wait(30)
            cut.channel.close()
    finally:
        first.stop()
    again = ChorusProcess({"server": {"spool_dir": str(spool)}}).start()
    try:
        assert temporaries(files_dir) == []  # cleaned on start
        assert not list(files_dir.glob(f"{sha1_of(partial).hex()}.*"))
        async with SipClient("tls") as sip:
            assert await pull_sha1(sip, again, msrp, sha1_of(partial), "gone") == (None, 488)
            digest, status = await pull_sha1(sip, again, msrp, sha1_of(complete), "kept")
            assert digest == sha1_of(complete), status  # completed files survive start-up
        assert again.alive, again.log()
    finally:
        again.stop()
