"""The dashboard's routes in-process (control/web/dashboard.py over the real model,
control/web/dashboard_model.py, of a server built by ``build_server``): the WebSocket wants
the operator's token as its first message (else an error and close 4401); a chat
participant joining and leaving is pushed as it happens (Room.listeners), with the room's
signed links; the drain route is 401 without the token and 409 outside cluster mode; the
links never leak into the model's snapshot."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from control.conference import ConferenceApp
from control.conference.screen import ScreenBoard, ScreenLimits
from control.config import ListenAddress
from control.metrics import MetricSources
from control.server import Server
from control.web import TokenPurpose, TokenSigner, WebServer
from control.web.dashboard import REFUSED, with_links
from control.web.dashboard_model import NodeDashboard
from tests.peers.chatclient import ChatClient
from tests.peers.inprocess import running_server

pytestmark = pytest.mark.timeout(120)

TOKEN = "dashboard-token-0123456789"
SIGNER = TokenSigner(b"k" * 32, 600.0)


class _Ports:
    def __init__(self, port: int) -> None:
        self.sip_port = port
        self.tls_port = port  # the clients use UDP


def model_of(server: Server) -> NodeDashboard:
    conference = server.applications["conference"]
    assert isinstance(conference, ConferenceApp)
    return NodeDashboard(MetricSources(server.ua, server.msrp, conference=conference))


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[tuple[Server, _Ports, str]]:
    async with running_server(tmp_path, rtp={}) as (server, port):
        web = WebServer(
            listen=ListenAddress("http", "127.0.0.1", 0),
            signer=SIGNER,
            screens=ScreenBoard(ScreenLimits()),
            dashboard=model_of(server),
            operator_token=TOKEN,
        )
        await web.start()
        assert web.bound is not None
        try:
            yield server, _Ports(port), f"http://127.0.0.1:{web.bound[1]}"
        finally:
            await web.stop()


async def _next(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    message = await asyncio.wait_for(ws.receive(), 20)
    assert message.type is aiohttp.WSMsgType.TEXT, message
    data: dict[str, Any] = json.loads(message.data)
    return data


async def test_a_wrong_token_is_refused(node: tuple[Server, _Ports, str]) -> None:
    _, _, base = node
    async with aiohttp.ClientSession() as http:
        for first in (json.dumps({"token": "w" * 26}), "not json", json.dumps({"token": 5})):
            async with http.ws_connect(base + "/dashboard/ws") as ws:
                await ws.send_str(first)
                assert (await _next(ws)) == {"error": "invalid token"}
                closed = await asyncio.wait_for(ws.receive(), 20)
                assert closed.type is aiohttp.WSMsgType.CLOSE and ws.close_code == REFUSED
        async with http.get(base + "/dashboard") as page:
            assert page.status == 200 and "dashboard.js" in await page.text()
            assert "script-src 'self'" in page.headers["Content-Security-Policy"]


async def test_joins_and_leaves_are_pushed_with_signed_links(
    node: tuple[Server, _Ports, str],
) -> None:
    server, ports, base = node
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(base + "/dashboard/ws") as ws,
        ChatClient("alice", "Alice") as alice,
    ):
        await ws.send_str(json.dumps({"token": TOKEN}))
        first = await _next(ws)
        assert first["rooms"] == [] and first["node"]["rooms"] == 0
        assert first["node"]["cluster"] is None and first["node"]["can_drain"] is False
        session = await alice.join(ports, "board", secure=False)
        snapshot = await _next(ws)
        while not snapshot["rooms"] or not snapshot["rooms"][0]["participant_list"]:
            snapshot = await _next(ws)
        [room] = snapshot["rooms"]
        assert room["id"] == "board@127.0.0.1"
        idle = model_of(server)
        assert idle.snapshot() == idle.snapshot()  # nothing changed: nothing to push
        [person] = room["participant_list"]
        assert (person["name"], [s["kind"] for s in person["streams"]]) == ("Alice", ["chat"])
        token = room["page"].partition("?t=")[2]
        SIGNER.verify(token, TokenPurpose.ROOM, "board@127.0.0.1", "", now=time.time())
        await session.leave()
        while snapshot["rooms"]:
            snapshot = await _next(ws)
        assert snapshot["node"]["participants"] == 0


async def test_drain_needs_the_token_and_cluster_mode(node: tuple[Server, _Ports, str]) -> None:
    _, _, base = node
    async with aiohttp.ClientSession() as http:
        async with http.post(base + "/dashboard/drain", json={"undo": False}) as response:
            assert response.status == 401
        auth = {"Authorization": f"Bearer {TOKEN}"}
        async with http.post(base + "/dashboard/drain", json={}, headers=auth) as response:
            assert response.status == 409


async def test_links_are_added_to_a_copy(tmp_path: Path) -> None:
    async with running_server(tmp_path, rtp={}) as (server, _):
        snapshot = model_of(server).snapshot()
    snapshot["rooms"] = [
        {"id": "r@h", "files": [{"sha1": "ab" * 20, "name": "f"}], "screens": ["p1"]}
    ]
    before = json.dumps(snapshot, sort_keys=True)
    web = WebServer(
        listen=ListenAddress("http", "127.0.0.1", 0),
        signer=SIGNER,
        screens=ScreenBoard(ScreenLimits()),
    )
    linked = with_links(snapshot, web.urls)
    assert json.dumps(snapshot, sort_keys=True) == before
    [room] = linked["rooms"]
    assert "/room/r@h?t=" in room["page"]
    assert f"/files/r@h/{'ab' * 20}?t=" in room["files"][0]["url"]
    assert (
        room["screens"][0]["participant"] == "p1"
        and "/screen/r@h/p1?t=" in room["screens"][0]["url"]
    )


def test_the_dashboard_needs_the_operator_token(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="operator"):
        WebServer(
            listen=ListenAddress("http", "127.0.0.1", 0),
            signer=SIGNER,
            screens=ScreenBoard(ScreenLimits()),
            dashboard=NodeDashboard.__new__(NodeDashboard),
        )
