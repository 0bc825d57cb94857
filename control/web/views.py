"""What the web side reads from the rest of the node: small read-only protocols.

The web server never reaches into rooms or the file store. The conference implements
`RoomDirectory` (room id -> a `RoomView` of its participants and their media), the room-files
store implements `FileSource` (a room's files, and one file's path on disk by room and SHA-1),
and screens come from the `ScreenBoard` (control/conference/screen.py). All are synchronous
reads of in-memory state: a handler calls them, renders, and never holds on to them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from control.media.engine import ParticipantId, RoomId

__all__ = ["FileEntry", "FileSource", "ParticipantView", "RoomDirectory", "RoomView"]


@dataclass(frozen=True, slots=True)
class ParticipantView:
    id: ParticipantId
    name: str  # display name, else the URI's user part
    uri: str  # the SIP identity (From URI without parameters)
    media: tuple[str, ...]  # the kinds of its streams ("audio", "message", ...), in m-line order
    joined_at: float  # Unix time


@dataclass(frozen=True, slots=True)
class FileEntry:
    """A stored file of a room. `name` is metadata only: it never becomes a path here."""

    sha1: str  # lower-case hex, the file's identity in URLs and in conference-info
    name: str
    content_type: str
    size: int
    sender: str
    date: str  # ISO 8601, UTC
    path: Path  # where its bytes are, read in chunks


class RoomView(Protocol):
    """A live room as the room page shows it."""

    @property
    def room_id(self) -> RoomId: ...

    @property
    def uri(self) -> str:  # the room's SIP URI
        ...

    def participants(self) -> Sequence[ParticipantView]: ...


class RoomDirectory(Protocol):
    def room_view(self, room: RoomId) -> RoomView | None:
        """The live room, or None when no such room is running on this node."""
        ...


class FileSource(Protocol):
    def room_files(self, room: RoomId) -> Sequence[FileEntry]:
        """Every stored file of the room (kept after the room ends, per the files policy)."""
        ...

    def room_file(self, room: RoomId, sha1: str) -> FileEntry | None:
        """One file of the room by SHA-1 (lower-case hex); None if the room has no such file."""
        ...
