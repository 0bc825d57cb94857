"""File download with Range requests (RFC 9110 §14), streamed from disk in chunks.

`parse_range` is the sans-IO part: a ``Range`` value and the file size in, a decision out.
We serve a single byte range (§14.1.2: ``first-last``, ``first-`` and the suffix ``-length``)
as 206 with ``Content-Range``; a set of several ranges is answered whole with 200 (a server
MAY ignore Range, §14.2, and serving one 200 beats building multipart/byteranges); a range
that starts at or past the end is 416 with ``Content-Range: bytes */size`` (§15.5.17); a
syntactically invalid value or another unit is ignored (§14.2). ``If-Range`` (§13.1.5) with
our strong ETag keeps the range, anything else gets the whole file. The ETag is the file's
SHA-1: its bytes never change under that name.

The file's name is metadata only: it goes into ``Content-Disposition: attachment`` (RFC 6266,
``filename*`` per RFC 8187), cleaned of separators and control characters; the path comes
from the `FileSource`, never from the request.
"""

from __future__ import annotations

import asyncio
import logging
import re
import urllib.parse
from dataclasses import dataclass
from typing import BinaryIO

from aiohttp import web

from control.media.engine import RoomId
from control.web.context import verify_token
from control.web.tokens import TokenPurpose
from control.web.views import FileEntry, FileSource

__all__ = ["ByteRange", "FullBody", "Unsatisfiable", "content_disposition", "parse_range"]

log = logging.getLogger("chorus.web")

CHUNK_BYTES = 256 * 1024  # one read from disk and one write to the socket
_SHA1 = re.compile(r"[0-9a-f]{40}")
_MIME = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*")
_RANGE_SPEC = re.compile(r"\s*(\d*)\s*-\s*(\d*)\s*")


@dataclass(frozen=True, slots=True)
class ByteRange:
    start: int
    end: int  # inclusive (§14.1.2 last-pos)

    @property
    def length(self) -> int:
        return self.end - self.start + 1


@dataclass(frozen=True, slots=True)
class FullBody:
    """Serve the whole representation with 200."""


@dataclass(frozen=True, slots=True)
class Unsatisfiable:
    """416: no byte of the requested range exists."""


RangeDecision = ByteRange | FullBody | Unsatisfiable


def parse_range(value: str | None, size: int) -> RangeDecision:
    """What to send for ``Range: value`` on a file of `size` bytes (RFC 9110 §14.1-14.2)."""
    if value is None:
        return FullBody()
    unit, eq, specs = value.partition("=")
    if not eq or unit.strip().lower() != "bytes":
        return FullBody()  # §14.2: a unit we do not know is ignored
    parts = specs.split(",")
    if len(parts) != 1:
        return FullBody()  # several ranges: the whole file (§14.2 MAY ignore)
    match = _RANGE_SPEC.fullmatch(parts[0])
    if match is None or not (match[1] or match[2]) or len(parts[0]) > 40:
        return FullBody()  # invalid ranges-specifier: ignored
    first, last = match[1], match[2]
    if not first:  # suffix-range: the last `last` bytes (§14.1.2)
        length = int(last)
        if length == 0 or size == 0:
            return Unsatisfiable()
        return ByteRange(max(size - length, 0), size - 1)
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return FullBody()  # last-pos below first-pos: invalid, ignored
    if start >= size:
        return Unsatisfiable()
    return ByteRange(start, min(end, size - 1))


def _clean_name(name: str) -> str:
    cleaned = "".join(
        "_" if ch in '/\\"' or ord(ch) < 0x20 or ord(ch) == 0x7F else ch for ch in name
    )
    cleaned = cleaned.strip(" .") or "file"
    return cleaned[:200]


def content_disposition(name: str) -> str:
    """``attachment`` with an ASCII fallback and the UTF-8 name (RFC 6266 §4.3, RFC 8187)."""
    cleaned = _clean_name(name)
    fallback = "".join(ch if 0x20 <= ord(ch) < 0x7F else "_" for ch in cleaned)
    quoted = urllib.parse.quote(cleaned, safe="")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quoted}"


def _etag(entry: FileEntry) -> str:
    return f'"{entry.sha1}"'


def _if_range_allows(value: str | None, entry: FileEntry) -> bool:
    """§13.1.5: keep the range only when If-Range is absent or our ETag (strong match)."""
    return value is None or value.strip() == _etag(entry)


class FileDownloads:
    """The download route: ``GET /files/{room}/{sha1}?t=TOKEN`` (token: FILE, room, sha1)."""

    def __init__(self, files: FileSource, *, chunk_bytes: int = CHUNK_BYTES) -> None:
        self.files = files
        self.chunk_bytes = chunk_bytes

    async def download(self, request: web.Request) -> web.StreamResponse:
        room = RoomId(request.match_info["room"])
        sha1 = request.match_info["sha1"].lower()
        verify_token(request, TokenPurpose.FILE, room, sha1)
        entry = self.files.room_file(room, sha1) if _SHA1.fullmatch(sha1) else None
        if entry is None:
            raise web.HTTPNotFound(text="no such file in this room\n")
        headers = {
            "ETag": _etag(entry),
            "Accept-Ranges": "bytes",
            "Content-Disposition": content_disposition(entry.name),
            "Content-Type": entry.content_type
            if _MIME.fullmatch(entry.content_type)
            else "application/octet-stream",
            "Cache-Control": "private, no-cache",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "sandbox",
        }
        if request.headers.get("If-None-Match", "").strip() in (_etag(entry), "*"):
            return web.Response(status=304, headers={"ETag": _etag(entry)})
        decision: RangeDecision = FullBody()
        if _if_range_allows(request.headers.get("If-Range"), entry):
            decision = parse_range(request.headers.get("Range"), entry.size)
        if isinstance(decision, Unsatisfiable):
            return web.Response(
                status=416,
                headers={"Content-Range": f"bytes */{entry.size}", "ETag": _etag(entry)},
            )
        if isinstance(decision, ByteRange):
            status, start, length = 206, decision.start, decision.length
            headers["Content-Range"] = f"bytes {decision.start}-{decision.end}/{entry.size}"
        else:
            status, start, length = 200, 0, entry.size
        try:
            handle = await asyncio.to_thread(open, entry.path, "rb")
        except OSError as exc:
            log.warning("file %s of room %s is listed but unreadable: %s", sha1, room, exc)
            raise web.HTTPNotFound(text="file not available\n") from exc
        try:
            response = web.StreamResponse(status=status, headers=headers)
            response.content_length = length
            await response.prepare(request)
            if request.method != "HEAD":
                await self._copy(handle, start, length, response)
            await response.write_eof()
            return response
        finally:
            await asyncio.to_thread(handle.close)

    async def _copy(
        self, handle: BinaryIO, start: int, length: int, response: web.StreamResponse
    ) -> None:
        """Disk to socket one chunk at a time; `write` waits while the peer is slow."""
        await asyncio.to_thread(handle.seek, start)
        remaining = length
        while remaining > 0:
            chunk = await asyncio.to_thread(handle.read, min(self.chunk_bytes, remaining))
            if not chunk:  # shorter on disk than its metadata: the client sees a short body
                raise ConnectionResetError("file shorter than its recorded size")
            await response.write(chunk)
            remaining -= len(chunk)
