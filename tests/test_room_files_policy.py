"""Room files' policy at the store (control/files/rooms.py): names as metadata, quotas under
concurrency, retention by age and by room total, the end of a room, and start-up reconcile
(which deletes no completed file). Files go in through the same path a push takes after its
last chunk (the room store's index ``keep`` around the spool's commit), without MSRP; the
wire is tests/test_room_files.py."""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from control.config import ConfigError, FilesConfig, parse_config
from control.files.records import FileStatus
from control.files.rooms import AfterRoomEnds, FilesPolicy, QuotaExceeded, RoomFiles
from control.files.spool import FileMeta, SpoolError, StoredFile
from control.store import DATABASE_NAME

ROOM = "sip:room1@chorus.test"
OTHER = "sip:room2@chorus.test"
ALICE = "sip:alice@chorus.test"
T0 = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)


def keep(
    files: RoomFiles,
    room: str,
    data: bytes,
    *,
    name: str = "notes.txt",
    when: dt.datetime = T0,
) -> StoredFile:
    """Store ``data`` in ``room`` as a completed push is stored: spool upload, then the room
    index's ``keep`` (quota, rename, row) around the upload's commit."""
    store = files.store(room)
    assert store.index is not None
    upload = store.spool.begin()
    upload.write_at(0, data)
    meta = FileMeta(name=name, content_type="text/plain", sender=ALICE, date=when.isoformat())
    sha1 = hashlib.sha1(data).hexdigest()
    try:
        return store.index.keep(lambda: upload.commit(meta, sha1))
    finally:
        if not upload.done:
            upload.discard()


def on_disk(files: RoomFiles) -> list[str]:
    return sorted(p.name for p in files.spool.files_dir.iterdir())


def data_ids(files: RoomFiles) -> list[str]:
    return [n for n in on_disk(files) if not n.startswith(".") and "." in n and len(n) == 57]


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    return tmp_path / "spool"


def test_any_name_is_metadata_returned_exactly(spool_dir: Path) -> None:
    """Traversal, NUL, 10 KB and non-ASCII names are stored and listed exactly as given; on disk
    only the server's ``<sha1>.<token>`` names exist. (On the wire the RFC 5547 parser already
    refuses NUL and names over 1024 characters: those reach the store only from elsewhere.)"""
    names = ["../../etc/passwd", "a\x00b.txt", "n" * 10_240, "/abs/olute", "Æ ø 文件.txt", "."]
    files = RoomFiles.open(spool_dir)
    for n, name in enumerate(names):
        keep(files, ROOM, f"file {n}".encode(), name=name, when=T0 + dt.timedelta(seconds=n))
    assert [f.name for f in files.list(ROOM)] == names
    assert [e.name for e in files.room_files(ROOM)] == names  # control/web's FileSource
    for record in files.list(ROOM):
        found = files.lookup(ROOM, record.sha1)
        assert found is not None and found[0].parent == files.spool.files_dir
        assert found[0].name == record.file_id and found[1].name == record.name
    assert len(data_ids(files)) == len(names) and len(on_disk(files)) == 2 * len(names)
    files.close()
    again = RoomFiles.open(spool_dir)  # the names survive the database and a restart
    assert [f.name for f in again.list(ROOM)] == names
    again.close()


def test_two_uploads_racing_for_the_last_bytes_of_a_quota_one_is_refused(
    spool_dir: Path,
) -> None:
    files = RoomFiles.open(spool_dir, policy=FilesPolicy(room_quota_bytes=150))
    results: list[object] = []
    barrier = threading.Barrier(2)

    def upload(n: int) -> None:
        barrier.wait()
        try:
            results.append(keep(files, ROOM, bytes([n]) * 100))
        except SpoolError as exc:
            results.append(exc)

    threads = [threading.Thread(target=upload, args=(n,)) for n in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    refused = [r for r in results if isinstance(r, QuotaExceeded)]
    assert len(refused) == 1 and refused[0].status == 413
    assert len(files.list(ROOM)) == 1 and files.records.used(ROOM) == 100
    assert len(on_disk(files)) == 2  # one data file and its sidecar, no temporary
    files.close()


def test_a_row_that_cannot_be_written_takes_its_file_with_it(spool_dir: Path) -> None:
    """The 200 needs both: when the row fails (here a row already holding that file_id) the
    renamed file is deleted again and the push is refused (500 in the store, 413 on MSRP)."""
    tokens = itertools.count()
    files = RoomFiles.open(spool_dir, random=lambda n: next(tokens).to_bytes(n, "big"))
    data = b"collides"
    file_id = f"{hashlib.sha1(data).hexdigest()}.{(0).to_bytes(8, 'big').hex()}"
    with sqlite3.connect(spool_dir / DATABASE_NAME) as raw:
        raw.execute(
            "INSERT INTO files (file_id, room, sender, name, type, size, sha1, time_us, status)"
            " VALUES (?, 'sip:x@y', 's', 'n', 't', 1, 'h', 0, 'orphan')",
            (file_id,),
        )
    with pytest.raises(SpoolError) as info:
        keep(files, ROOM, data)
    assert info.value.status == 500
    assert on_disk(files) == [] and files.list(ROOM) == []
    files.close()


def test_retention_by_age_deletes_files_older_than_retain_max_age(spool_dir: Path) -> None:
    policy = FilesPolicy(retain_max_age=1.5 * 86_400)
    files = RoomFiles.open(spool_dir, policy=policy)
    old = keep(files, ROOM, b"old", when=T0)
    mid = keep(files, ROOM, b"middle", when=T0 + DAY)
    new = keep(files, OTHER, b"new", when=T0 + 2 * DAY)
    assert files.expire(now=T0 + 2 * DAY + dt.timedelta(hours=1)) == 1
    assert [f.file_id for f in files.list(ROOM)] == [mid.file_id]
    assert [f.file_id for f in files.list(OTHER)] == [new.file_id]
    assert old.file_id not in on_disk(files) and f"{old.file_id}.json" not in on_disk(files)
    assert files.records.get(old.file_id) is None
    assert files.expire(now=T0 + 2 * DAY + dt.timedelta(hours=1)) == 0
    files.close()


def test_retention_by_room_total_deletes_the_oldest_first(spool_dir: Path) -> None:
    files = RoomFiles.open(spool_dir, policy=FilesPolicy(retain_room_bytes=250))
    stored = [keep(files, ROOM, bytes([n]) * 100, when=T0 + n * DAY) for n in range(4)]
    small = keep(files, OTHER, b"x" * 200, when=T0)
    assert files.expire(now=T0 + 10 * DAY) == 2  # 400 bytes -> 200, the two oldest gone
    assert [f.file_id for f in files.list(ROOM)] == [s.file_id for s in stored[2:]]
    assert [f.file_id for f in files.list(OTHER)] == [small.file_id]  # under its total
    assert sorted(data_ids(files)) == sorted([s.file_id for s in stored[2:]] + [small.file_id])
    files.close()


def test_a_pull_already_reading_keeps_whole_bytes_when_retention_deletes(
    spool_dir: Path,
) -> None:
    files = RoomFiles.open(spool_dir, policy=FilesPolicy(retain_max_age=60.0))
    data = bytes(range(256)) * 4096
    stored = keep(files, ROOM, data, when=T0)
    served = files.store(ROOM).find(stored.sha1)
    assert served is not None
    with files.store(ROOM).spool.open_read(served) as handle:
        assert files.expire(now=T0 + DAY) == 1
        assert files.store(ROOM).find(stored.sha1) is None  # no new pull finds it
        assert handle.read() == data  # the open descriptor still reads every byte
    files.close()


@pytest.mark.parametrize("policy", list(AfterRoomEnds))
def test_files_are_kept_after_the_room_ends_unless_the_policy_deletes(
    spool_dir: Path, policy: AfterRoomEnds
) -> None:
    files = RoomFiles.open(spool_dir, policy=FilesPolicy(after_room_ends=policy))
    stored = keep(files, ROOM, b"agenda")
    keep(files, OTHER, b"other room")
    deleted = files.room_ended(ROOM)
    if policy is AfterRoomEnds.KEEP:
        assert deleted == 0 and files.lookup(ROOM, stored.sha1) is not None
        assert files.store(ROOM).find(stored.sha1) is not None  # the room again serves it
    else:
        assert deleted == 1 and files.lookup(ROOM, stored.sha1) is None
        assert stored.file_id not in on_disk(files)
    assert len(files.list(OTHER)) == 1
    files.close()


def test_start_up_deletes_no_completed_file_and_reconciles_rows(spool_dir: Path) -> None:
    """Six things a crash or an operator can leave, and what opening the store does:

    - a file whose row is missing: the row comes back from its sidecar (room and all), served;
    - a file with neither row nor sidecar: kept, an ``orphan`` row, never served;
    - a row whose file is gone: ``missing``, kept as a record, never served;
    - a retention deletion cut off with the bytes still there: ``stored`` again;
    - a file that lost only its sidecar: the sidecar rewritten from its row;
    - crash temporaries (``.upload-*.part``, ``*.tmp``): removed.
    """
    files = RoomFiles.open(spool_dir)
    rowless = keep(files, ROOM, b"row lost", when=T0)
    bare = keep(files, ROOM, b"sidecar and row lost", when=T0 + DAY)
    gone = keep(files, ROOM, b"bytes lost", when=T0 + 2 * DAY)
    halted = keep(files, OTHER, b"deletion cut off", when=T0 + 3 * DAY)
    unsided = keep(files, OTHER, b"sidecar lost", name="minutes.txt", when=T0 + 4 * DAY)
    files.close()
    with sqlite3.connect(spool_dir / DATABASE_NAME) as raw:
        raw.execute("DELETE FROM files WHERE file_id IN (?, ?)", (rowless.file_id, bare.file_id))
        raw.execute("UPDATE files SET status = 'deleting' WHERE file_id = ?", (halted.file_id,))
    files_dir = spool_dir / "rooms" / "files"
    (files_dir / f"{bare.file_id}.json").unlink()
    (files_dir / f"{unsided.file_id}.json").unlink()
    gone.path.unlink()
    (files_dir / f"{gone.file_id}.json").unlink()
    (files_dir / ".upload-0123456789abcdef.part").write_bytes(b"half a file")
    (files_dir / f"{rowless.file_id}.json.tmp").write_bytes(b"{")
    completed = {rowless.file_id, bare.file_id, halted.file_id, unsided.file_id}

    again = RoomFiles.open(spool_dir)  # reconcile runs here
    assert completed <= set(on_disk(again))
    assert not [n for n in on_disk(again) if n.startswith(".upload-") or n.endswith(".tmp")]
    recovered = again.records.get(rowless.file_id)
    assert recovered is not None and recovered.status is FileStatus.STORED
    assert (recovered.room, recovered.name, recovered.sender) == (ROOM, "notes.txt", ALICE)
    assert again.lookup(ROOM, rowless.sha1) is not None
    orphan = again.records.get(bare.file_id)
    assert orphan is not None and orphan.status is FileStatus.ORPHAN
    assert again.lookup(ROOM, bare.sha1) is None and bare.path.read_bytes() == bare_data()
    missing = again.records.get(gone.file_id)
    assert missing is not None and missing.status is FileStatus.MISSING
    assert again.lookup(ROOM, gone.sha1) is None
    assert again.store(ROOM).find(gone.sha1) is None
    undone = again.records.get(halted.file_id)
    assert undone is not None and undone.status is FileStatus.STORED
    assert [f.file_id for f in again.list(ROOM)] == [rowless.file_id]
    sidecar = again.spool.get(unsided.file_id)  # rewritten from the row, not the minimal one
    assert sidecar is not None and (sidecar.room, sidecar.name) == (OTHER, "minutes.txt")
    assert [f.file_id for f in again.list(OTHER)] == [halted.file_id, unsided.file_id]
    report = again.reconcile()  # a second start finds nothing more to do
    assert (report.rows_recovered, report.orphans, report.missing) == (0, 0, 0)
    assert completed <= set(on_disk(again))
    again.close()


def bare_data() -> bytes:
    return b"sidecar and row lost"


def test_policy_from_config_reads_zero_as_no_limit() -> None:
    policy = FilesPolicy.from_config(FilesConfig())
    assert policy.room_quota_bytes == 1024**3
    assert policy.retain_max_age is None and policy.retain_room_bytes is None
    assert policy.after_room_ends is AfterRoomEnds.KEEP and not policy.push_to_participants
    strict = FilesPolicy.from_config(
        FilesConfig(room_quota_bytes=0, retain_max_age=60.0, after_room_ends="delete")
    )
    assert strict.room_quota_bytes is None and strict.retain_max_age == 60.0
    assert strict.after_room_ends is AfterRoomEnds.DELETE


def test_files_section_parses_the_room_keys_and_refuses_a_bad_policy() -> None:
    config = parse_config(
        {
            "files": {
                "room_quota_bytes": 5000,
                "retain_max_age": 3600,
                "retain_room_bytes": 4000,
                "push_to_participants": True,
                "after_room_ends": "delete",
            }
        }
    )
    assert config.files == FilesConfig(
        room_quota_bytes=5000,
        retain_max_age=3600.0,
        retain_room_bytes=4000,
        push_to_participants=True,
        after_room_ends="delete",
    )
    with pytest.raises(ConfigError, match="after_room_ends"):
        parse_config({"files": {"after_room_ends": "sometimes"}})


def test_it_is_the_web_servers_file_source(spool_dir: Path) -> None:
    """control/web/views.py's FileSource (room_files, room_file) over the same rows."""
    from control.media.engine import RoomId
    from control.web.views import FileSource

    files = RoomFiles.open(spool_dir)
    stored = keep(files, ROOM, b"slides")
    source: FileSource = files
    entry = source.room_file(RoomId(ROOM), stored.sha1)
    assert entry is not None and entry.path.read_bytes() == b"slides"
    assert (entry.name, entry.size, entry.sender) == ("notes.txt", 6, ALICE)
    assert source.room_file(RoomId(OTHER), stored.sha1) is None
    assert list(source.room_files(RoomId(ROOM))) == [entry]
    files.close()


_UPLOADER = """
import hashlib, sys
from pathlib import Path
from control.files.rooms import RoomFiles
from control.files.spool import FileMeta
files = RoomFiles.open(Path(sys.argv[1]))
store = files.store("sip:room1@chorus.test")
n = 0
while True:
    data = n.to_bytes(4, "big") * 50_000
    upload = store.spool.begin()
    for offset in range(0, len(data), 65536):
        upload.write_at(offset, data[offset : offset + 65536])
    meta = FileMeta(name=f"f{n}", content_type="application/octet-stream",
                    sender="sip:a@x", date="2026-12-02T12:00:00+00:00")
    sha1 = hashlib.sha1(data).hexdigest()
    stored = store.index.keep(lambda: upload.commit(meta, sha1))
    print(stored.file_id, n, flush=True)  # what a sender's 200 would follow
    n += 1
"""


def test_every_file_kept_before_kill_9_is_there_after_the_restart(spool_dir: Path) -> None:
    """A process storing room files is killed (SIGKILL, mid-upload as likely as not); the
    store reopened lists and serves every file whose keep had returned, and removed only
    the temporary of the upload that was cut off."""
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen(
        [sys.executable, "-c", _UPLOADER, str(spool_dir)],
        stdout=subprocess.PIPE,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert proc.stdout is not None
    kept: dict[str, int] = {}
    for line in proc.stdout:
        name, count = line.split()
        kept[name.decode()] = int(count)
        if len(kept) == 40:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    files = RoomFiles.open(spool_dir)
    listed = {f.file_id: f for f in files.list(ROOM)}
    assert set(kept) <= set(listed)
    for kept_id, number in kept.items():
        found = files.lookup(ROOM, listed[kept_id].sha1)
        assert found is not None and found[0].read_bytes() == number.to_bytes(4, "big") * 50_000
    assert not [p for p in on_disk(files) if p.startswith(".upload-") or p.endswith(".tmp")]
    files.close()


def test_a_file_removed_by_hand_while_running_is_not_served(spool_dir: Path) -> None:
    files = RoomFiles.open(spool_dir)
    stored = keep(files, ROOM, b"removed by an operator")
    stored.path.unlink()
    assert files.lookup(ROOM, stored.sha1) is None
    assert files.store(ROOM).find(stored.sha1) is None  # a pull is refused (port 0)
    files.close()
    again = RoomFiles.open(spool_dir)
    assert again.reconcile().missing == 0  # already marked at the open before
    record = again.records.get(stored.file_id)
    assert record is not None and record.status is FileStatus.MISSING
    again.close()
