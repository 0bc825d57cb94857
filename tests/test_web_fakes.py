"""Fakes of what the conference and the room-files store will implement for the web side
(`RoomDirectory`/`RoomView` and `FileSource` of control/web/views.py), named as fakes, and a
web server on a free loopback port around them. No tests here: the test_web_* modules use it.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from control.conference.screen import ScreenBoard, ScreenLimits
from control.config import ListenAddress
from control.media.engine import ParticipantId, RoomId
from control.web import FileEntry, ParticipantView, TokenSigner, WebServer

ROOM = RoomId("team@conference.example.com")
OTHER_ROOM = RoomId("other@conference.example.com")
ALICE = ParticipantId("a1ice")
BOB = ParticipantId("b0b")
SECRET = b"0123456789abcdef0123456789abcdef"


@dataclass
class FakeRoomView:
    """A live room as the conference's RoomView will present it."""

    room_id: RoomId
    uri: str
    people: list[ParticipantView] = field(default_factory=list)

    def participants(self) -> Sequence[ParticipantView]:
        return self.people


@dataclass
class FakeRoomDirectory:
    rooms: dict[RoomId, FakeRoomView] = field(default_factory=dict)

    def room_view(self, room: RoomId) -> FakeRoomView | None:
        return self.rooms.get(room)


@dataclass
class FakeFileSource:
    """The room-files store as the web sees it: metadata plus a path, by room and SHA-1."""

    directory: Path
    entries: dict[RoomId, list[FileEntry]] = field(default_factory=dict)

    def add(self, room: RoomId, name: str, data: bytes, content_type: str) -> FileEntry:
        sha1 = hashlib.sha1(data).hexdigest()
        path = self.directory / f"{sha1}.bin"
        path.write_bytes(data)
        entry = FileEntry(
            sha1,
            name,
            content_type,
            len(data),
            "sip:alice@example.com",
            "2026-12-02T18:00:00Z",
            path,
        )
        self.entries.setdefault(room, []).append(entry)
        return entry

    def room_files(self, room: RoomId) -> Sequence[FileEntry]:
        return self.entries.get(room, [])

    def room_file(self, room: RoomId, sha1: str) -> FileEntry | None:
        return next((e for e in self.entries.get(room, []) if e.sha1 == sha1), None)


def alice_and_bob() -> FakeRoomDirectory:
    view = FakeRoomView(
        ROOM,
        f"sip:{ROOM}",
        [
            ParticipantView(ALICE, "Alice", "sip:alice@example.com", ("audio", "message"), 1.8e9),
            ParticipantView(BOB, "Bob <b>", "sip:bob@example.com", ("audio",), 1.8e9),
        ],
    )
    return FakeRoomDirectory({ROOM: view})


@contextlib.asynccontextmanager
async def running_web(
    tmp_path: Path,
    *,
    board: ScreenBoard | None = None,
    rooms: FakeRoomDirectory | None = None,
    files: FakeFileSource | None = None,
    ttl: float = 600.0,
) -> AsyncIterator[WebServer]:
    """A plain-HTTP web server on 127.0.0.1, port 0 (loopback: what config allows)."""
    server = WebServer(
        listen=ListenAddress("http", "127.0.0.1", 0),
        signer=TokenSigner(SECRET, ttl),
        screens=board or ScreenBoard(ScreenLimits()),
        rooms=rooms if rooms is not None else alice_and_bob(),
        files=files if files is not None else FakeFileSource(tmp_path),
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
