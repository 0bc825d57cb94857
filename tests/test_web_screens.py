"""The screen viewer's routes and the room page over real HTTP (aiohttp client, loopback):
tokens (403), not sharing (404), frames pushed over the WebSocket and MJPEG, the raw image,
the end of sharing, the room page built from a fake RoomView, and HTTPS from config."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import aiohttp
import pytest

from control.conference.screen import ScreenBoard, ScreenLimits
from control.config import parse_config
from control.web import TokenPurpose, TokenSigner, build_web_server
from tests.peers.chorus import ChorusProcess
from tests.peers.ports import free_port
from tests.test_web_fakes import (
    ALICE,
    BOB,
    OTHER_ROOM,
    ROOM,
    SECRET,
    FakeFileSource,
    alice_and_bob,
    running_web,
)

DATA = Path(__file__).parent / "data" / "screen"
RED = (DATA / "red-320x240.jpg").read_bytes()
GREEN = (DATA / "green-320x240.jpg").read_bytes()
BLUE = (DATA / "blue-320x240.jpg").read_bytes()


async def _status(url: str) -> int:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return resp.status


@pytest.fixture
def board() -> ScreenBoard:
    board = ScreenBoard(ScreenLimits())
    board.receive(ROOM, ALICE, RED, now=0.0)
    return board


async def test_tokens_then_sharing_decide_the_status(tmp_path: Path, board: ScreenBoard) -> None:
    async with running_web(tmp_path, board=board) as web:
        page = web.urls.screen_page(ROOM, ALICE)
        image = web.urls.screen_image(ROOM, ALICE)
        assert await _status(page) == 200
        assert await _status(image) == 200
        token = page.split("?t=")[1]
        base = web.urls.base
        assert await _status(f"{base}/screen/{ROOM}/{ALICE}") == 403  # no token
        assert await _status(f"{base}/screen/{ROOM}/{ALICE}?t=1.abc") == 403  # wrong
        assert await _status(f"{base}/screen/{ROOM}/{BOB}?t={token}") == 403  # Alice's token
        assert await _status(f"{base}/screen/{OTHER_ROOM}/{ALICE}?t={token}") == 403
        expired = TokenSigner(SECRET, 60.0).issue(
            TokenPurpose.SCREEN, ROOM, ALICE, now=time.time() - 61
        )
        assert await _status(f"{base}/screen/{ROOM}/{ALICE}/image.jpg?t={expired}") == 403
        assert await _status(web.urls.screen_page(ROOM, BOB)) == 404  # Bob is not sharing
        assert await _status(web.urls.screen_image(OTHER_ROOM, ALICE)) == 404


async def test_image_is_the_current_frame(tmp_path: Path, board: ScreenBoard) -> None:
    async with running_web(tmp_path, board=board) as web, aiohttp.ClientSession() as session:
        url = web.urls.screen_image(ROOM, ALICE)
        async with session.get(url) as resp:
            assert resp.content_type == "image/jpeg"
            assert resp.headers["Cache-Control"] == "no-store"
            assert (await resp.read(), resp.headers["X-Screen-Sequence"]) == (RED, "1")
        board.receive(ROOM, ALICE, GREEN, now=1.0)
        async with session.get(url) as resp:
            assert (await resp.read(), resp.headers["X-Screen-Sequence"]) == (GREEN, "2")
        board.stop(ROOM, ALICE, now=2.0)
        async with session.get(url) as resp:
            assert resp.status == 404  # sharing ended


async def test_websocket_pushes_each_frame_then_ended(tmp_path: Path, board: ScreenBoard) -> None:
    async with running_web(tmp_path, board=board) as web, aiohttp.ClientSession() as session:
        page = web.urls.screen_page(ROOM, ALICE)
        path, query = page.split("?")
        async with session.ws_connect(f"{path}/ws?{query}") as ws:
            assert await ws.receive_json() == {"sequence": 1, "width": 320, "height": 240}
            assert await ws.receive_bytes() == RED
            await asyncio.sleep(0.05)  # the server now waits on the board
            assert board.viewers(ROOM, ALICE) == 1
            for sequence, jpeg in ((2, GREEN), (3, BLUE)):
                board.receive(ROOM, ALICE, jpeg, now=float(sequence))
                assert (await ws.receive_json())["sequence"] == sequence
                assert await ws.receive_bytes() == jpeg
            board.handle_timer(1000.0)  # idle timeout
            assert await ws.receive_json() == {"state": "ended"}
            closing = await ws.receive()
            assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert await _status(page) == 404


async def test_a_viewer_leaving_leaves_no_waiter(tmp_path: Path, board: ScreenBoard) -> None:
    async with running_web(tmp_path, board=board) as web, aiohttp.ClientSession() as session:
        path, query = web.urls.screen_page(ROOM, ALICE).split("?")
        async with session.ws_connect(f"{path}/ws?{query}") as ws:
            await ws.receive_json()
            await ws.receive_bytes()
        for _ in range(100):
            if board.viewers(ROOM, ALICE) == 0:
                break
            await asyncio.sleep(0.02)
        assert board.viewers(ROOM, ALICE) == 0


async def test_mjpeg_pushes_frames_as_multipart(tmp_path: Path, board: ScreenBoard) -> None:
    async with (
        running_web(tmp_path, board=board) as web,
        aiohttp.ClientSession() as session,
        session.get(web.urls.screen_mjpeg(ROOM, ALICE)) as resp,
    ):
        assert resp.headers["Content-Type"].startswith("multipart/x-mixed-replace; boundary=")
        head = await resp.content.readuntil(b"\r\n\r\n")
        assert b"Content-Type: image/jpeg" in head
        assert f"Content-Length: {len(RED)}".encode() in head
        assert await resp.content.readexactly(len(RED)) == RED
        board.receive(ROOM, ALICE, BLUE, now=1.0)
        await resp.content.readuntil(b"\r\n\r\n")
        assert await resp.content.readexactly(len(BLUE) + 2) == BLUE + b"\r\n"
        board.stop(ROOM, ALICE, now=2.0)
        assert (await resp.content.read()).endswith(b"--\r\n")


async def test_room_page_lists_people_media_files_and_screens(
    tmp_path: Path, board: ScreenBoard
) -> None:
    files = FakeFileSource(tmp_path)
    files.add(ROOM, "notes <1>.txt", b"hello, room\n", "text/plain")
    async with (
        running_web(tmp_path, board=board, files=files) as web,
        aiohttp.ClientSession() as session,
    ):
        async with session.get(web.urls.room_page(ROOM)) as resp:
            assert resp.status == 200
            text = await resp.text()
        assert "Alice" in text and "audio, message" in text
        assert "Bob &lt;b&gt;" in text and "Bob <b>" not in text  # escaped
        assert "notes &lt;1&gt;.txt" in text
        link = re.search(r'class="download" href="([^"]+)"', text)
        assert link is not None
        async with session.get(link[1].replace("&amp;", "&")) as resp:
            assert await resp.read() == b"hello, room\n"
        assert "Screens (1)" in text and f"/screen/{ROOM}/{ALICE}/mjpeg?t=" in text
        other = web.urls.room_page(OTHER_ROOM)
        async with session.get(other) as resp:
            assert resp.status == 404  # neither running nor any file
        token = web.urls.room_page(ROOM).split("?t=")[1]
        async with session.get(f"{web.urls.base}/room/{OTHER_ROOM}?t={token}") as resp:
            assert resp.status == 403


async def test_room_page_of_an_ended_room_with_files(tmp_path: Path) -> None:
    files = FakeFileSource(tmp_path)
    files.add(ROOM, "kept.bin", b"\x00" * 10, "application/octet-stream")
    rooms = alice_and_bob()
    rooms.rooms.clear()
    async with (
        running_web(tmp_path, rooms=rooms, files=files) as web,
        aiohttp.ClientSession() as session,
        session.get(web.urls.room_page(ROOM)) as r,
    ):
        assert r.status == 200
        text = await r.text()
    assert "not running" in text and "kept.bin" in text


async def test_https_from_config_with_the_node_certificate(tmp_path: Path) -> None:
    config = parse_config(
        {
            "server": {"spool_dir": str(tmp_path)},
            "web": {"listen": "https:127.0.0.1:0", "public_url": "https://conf.example.com"},
        }
    )
    board = ScreenBoard(ScreenLimits())
    board.receive(ROOM, ALICE, RED, now=0.0)
    web = build_web_server(config, board, rooms=alice_and_bob())
    assert web is not None
    await web.start()
    try:
        assert web.bound is not None
        announced = web.urls.screen_image(ROOM, ALICE)
        assert announced.startswith(f"https://conf.example.com/screen/{ROOM}/{ALICE}/image.jpg?t=")
        local = announced.replace("https://conf.example.com", f"https://127.0.0.1:{web.bound[1]}")
        async with aiohttp.ClientSession() as session:
            async with session.get(local, ssl=False) as resp:
                assert resp.status == 200 and await resp.read() == RED
            plain = local.replace("https://", "http://")
            with pytest.raises(aiohttp.ClientError):
                async with session.get(plain) as resp:
                    await resp.read()
    finally:
        await web.stop()
    assert (tmp_path / "tls" / "chorus.crt").exists()
    assert (tmp_path / "web" / "token_secret").exists()
    assert build_web_server(parse_config({}), board) is None  # [web] listen unset: off


async def test_chorus_serve_runs_the_web_server_from_config() -> None:
    port = free_port("tcp")
    chorus = ChorusProcess({"web": {"listen": f"https:127.0.0.1:{port}"}})
    await asyncio.to_thread(chorus.start)
    try:
        base = f"https://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base}/static/screen.js", ssl=False) as resp:
                assert resp.status == 200 and "WebSocket" in await resp.text()
            async with session.get(f"{base}/room/{ROOM}?t=1.x", ssl=False) as resp:
                assert resp.status == 403
        assert (chorus.workdir / "spool" / "web" / "token_secret").exists()
    finally:
        assert await asyncio.to_thread(chorus.stop) == 0
    assert "web listening on https://127.0.0.1" in chorus.log()


async def test_stopping_the_server_ends_live_pushes(tmp_path: Path, board: ScreenBoard) -> None:
    async with running_web(tmp_path, board=board) as web, aiohttp.ClientSession() as session:
        path, query = web.urls.screen_page(ROOM, ALICE).split("?")
        ws = await session.ws_connect(f"{path}/ws?{query}")
        await ws.receive_json()
        await ws.receive_bytes()
        mjpeg = await session.get(web.urls.screen_mjpeg(ROOM, ALICE))
        await mjpeg.content.readuntil(b"\r\n\r\n")
        await asyncio.wait_for(web.stop(), 30)
        closing = await ws.receive()
        assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert board.viewers(ROOM, ALICE) == 0  # no waiter left behind
        mjpeg.close()
