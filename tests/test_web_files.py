"""File download (control/web/files.py): RFC 9110 §14 single byte ranges (206 with
Content-Range, 416, whole-file 200), If-Range and ETag, tokens, names as metadata only.
Served by a real aiohttp server on loopback from a fake FileSource (tests/test_web_fakes.py)."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import aiohttp
import pytest
from multidict import CIMultiDict

from control.web import TokenPurpose, TokenSigner, parse_range
from control.web.files import ByteRange, FullBody, Unsatisfiable, content_disposition
from tests.test_web_fakes import OTHER_ROOM, ROOM, SECRET, FakeFileSource, running_web

SIZE = 3 * 1024 * 1024 + 17  # spans several 256 KiB chunks, not a multiple of one
DATA = os.urandom(SIZE)


@pytest.mark.parametrize(
    ("value", "size", "expected"),
    [
        (None, 1000, FullBody()),
        ("bytes=0-99", 1000, ByteRange(0, 99)),  # first 100 bytes (§14.1.2 example)
        ("bytes=900-", 1000, ByteRange(900, 999)),  # from 900 to the end
        ("bytes=-100", 1000, ByteRange(900, 999)),  # suffix: the last 100
        ("bytes=-5000", 1000, ByteRange(0, 999)),  # suffix longer than the file: all of it
        ("bytes=500-5000", 1000, ByteRange(500, 999)),  # last-pos past the end is clamped
        ("bytes=999-999", 1000, ByteRange(999, 999)),
        (" BYTES = 1 - 2 ", 1000, ByteRange(1, 2)),
        ("bytes=1000-", 1000, Unsatisfiable()),  # starts at the end
        ("bytes=2000-3000", 1000, Unsatisfiable()),
        ("bytes=-0", 1000, Unsatisfiable()),
        ("bytes=0-", 0, Unsatisfiable()),  # nothing to send from an empty file
        ("bytes=0-1,5-6", 1000, FullBody()),  # several ranges: the whole file
        ("bytes=5-1", 1000, FullBody()),  # invalid: ignored
        ("bytes=-", 1000, FullBody()),
        ("bytes=a-b", 1000, FullBody()),
        ("items=0-1", 1000, FullBody()),  # unknown unit: ignored
    ],
)
def test_parse_range(value: str | None, size: int, expected: object) -> None:
    assert parse_range(value, size) == expected


def test_content_disposition_keeps_the_name_as_metadata_only() -> None:
    header = content_disposition("../../etc/passwd\x00.txt")
    assert "/" not in header.split("filename*=")[0]
    assert "\x00" not in header
    assert header.startswith('attachment; filename="_.._etc_passwd_.txt"')  # no leading dots
    assert "filename*=UTF-8''_.._etc_passwd_.txt" in header
    assert "filename*=UTF-8''r%C3%A9sum%C3%A9.pdf" in content_disposition("résumé.pdf")
    assert len(content_disposition("x" * 10000)) < 700


async def _get(url: str, **headers: str) -> tuple[int, CIMultiDict[str], bytes]:
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as resp:
        return resp.status, resp.headers.copy(), await resp.read()


@pytest.fixture
def files(tmp_path: Path) -> FakeFileSource:
    source = FakeFileSource(tmp_path)
    source.add(ROOM, "../../etc/passwd", DATA, "application/octet-stream")
    return source


async def test_whole_file_and_ranges_over_http(tmp_path: Path, files: FakeFileSource) -> None:
    sha1 = hashlib.sha1(DATA).hexdigest()
    async with running_web(tmp_path, files=files) as web:
        url = web.urls.file_download(ROOM, sha1)
        status, headers, body = await _get(url)
        assert status == 200 and body == DATA
        assert headers["ETag"] == f'"{sha1}"' and headers["Accept-Ranges"] == "bytes"
        assert headers["Content-Length"] == str(SIZE)
        assert headers["Content-Disposition"].startswith('attachment; filename="_.._etc_passwd"')

        status, headers, body = await _get(url, Range="bytes=0-99")
        assert (status, body) == (206, DATA[:100])
        assert headers["Content-Range"] == f"bytes 0-99/{SIZE}"

        status, headers, body = await _get(url, Range="bytes=-100")
        assert (status, body) == (206, DATA[-100:])
        assert headers["Content-Range"] == f"bytes {SIZE - 100}-{SIZE - 1}/{SIZE}"

        start = 1024 * 1024 - 3  # a range crossing chunk boundaries
        status, headers, body = await _get(url, Range=f"bytes={start}-")
        assert (status, body) == (206, DATA[start:])
        assert headers["Content-Length"] == str(SIZE - start)

        status, headers, body = await _get(url, Range=f"bytes={SIZE}-")
        assert status == 416 and headers["Content-Range"] == f"bytes */{SIZE}"

        status, _, body = await _get(url, Range="bytes=0-1,4-5")
        assert (status, body) == (200, DATA)

        status, _, body = await _get(url, Range="bytes=0-9", **{"If-Range": f'"{sha1}"'})
        assert (status, body) == (206, DATA[:10])
        status, _, body = await _get(url, Range="bytes=0-9", **{"If-Range": '"other"'})
        assert (status, body) == (200, DATA)  # §13.1.5: a changed validator gets it all

        status, _, body = await _get(url, **{"If-None-Match": f'"{sha1}"'})
        assert (status, body) == (304, b"")

        async with aiohttp.ClientSession() as session, session.head(url) as resp:
            assert resp.status == 200 and resp.headers["Content-Length"] == str(SIZE)
            assert await resp.read() == b""


async def test_tokens_and_unknown_files(tmp_path: Path, files: FakeFileSource) -> None:
    sha1 = hashlib.sha1(DATA).hexdigest()
    async with running_web(tmp_path, files=files) as web:
        base = web.urls.base
        good = web.urls.file_download(ROOM, sha1)
        token = good.split("?t=")[1]
        assert (await _get(f"{base}/files/{ROOM}/{sha1}"))[0] == 403  # no token
        assert (await _get(good[:-3] + "AAA"))[0] == 403  # tampered
        expired = TokenSigner(SECRET, 60.0).issue(
            TokenPurpose.FILE, ROOM, sha1, now=time.time() - 120
        )
        assert (await _get(f"{base}/files/{ROOM}/{sha1}?t={expired}"))[0] == 403
        assert (await _get(f"{base}/files/{OTHER_ROOM}/{sha1}?t={token}"))[0] == 403
        # A valid token for a file the room does not have: 404, never another room's file.
        assert (await _get(web.urls.file_download(OTHER_ROOM, sha1)))[0] == 404
        assert (await _get(web.urls.file_download(ROOM, "0" * 40)))[0] == 404
        assert (await _get(web.urls.file_download(ROOM, "../../etc/passwd")))[0] in (403, 404)
