"""The admin API (control/web/api.py) on a real loopback socket over rooms held in memory:
RFC 6750 bearer tokens (missing and wrong both 401 with a challenge), every route in the
OpenAPI document, bad input 400 with a JSON error, unknown names 404, each action reaching
moderation; the token file made once with mode 0600. The live tests
(tests/test_admin_api_live.py) drive a real ``chorus serve`` with SIP participants."""

from __future__ import annotations

import stat
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest

from control.conference.moderation import Moderation, ModerationPolicy
from control.conference.room import Room
from control.config import ApiConfig, Config, ServerConfig
from control.media.engine import RoomId
from control.web.api import ROUTES, AdminApi, load_token, openapi_document
from tests.test_moderation import RecordingHost, _person, _room

TOKEN = "t" * 32


class HeldRooms:
    """Rooms in memory with real moderation over a recording host (the ConferenceControl
    the API reads); the live tests use the conference application itself."""

    def __init__(self) -> None:
        self.host = RecordingHost()
        self.moderation = Moderation(ModerationPolicy(), self.host)  # type: ignore[arg-type]
        self.rooms: dict[RoomId, Room] = {}

    def subscription_count(self, room: Room) -> int:
        return 7


@pytest.fixture
async def api() -> AsyncIterator[tuple[str, HeldRooms]]:
    held = HeldRooms()
    room, _ = _room("ops")
    room.add(_person("pa", "sip:alice@h"))
    room.add(_person("pb", "sip:bob@h"))
    held.rooms[room.id] = room
    server = AdminApi(held, TOKEN)
    url = await server.start("127.0.0.1", 0)
    yield url, held
    await server.stop()


def _auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_token_missing_or_wrong_is_401_with_challenge(api: tuple[str, HeldRooms]) -> None:
    url, _ = api
    async with aiohttp.ClientSession() as http:
        async with http.get(url + "/api/rooms") as response:
            assert response.status == 401
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
            assert "error" in await response.json()
        async with http.get(url + "/api/rooms", headers=_auth("x" * 32)) as response:
            assert response.status == 401
            assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
        async with http.get(url + "/api/rooms", headers={"Authorization": "Basic abc"}) as r:
            assert r.status == 401
        async with http.get(url + "/api/rooms", headers=_auth()) as response:
            assert response.status == 200
            rooms = (await response.json())["rooms"]
            assert [r["id"] for r in rooms] == ["ops@h"]
            assert rooms[0]["participants"] == 2
        async with http.get(url + "/api/health") as response:  # public
            assert response.status == 200
            assert (await response.json())["participants"] == 2


async def test_every_route_is_in_the_openapi_document(api: tuple[str, HeldRooms]) -> None:
    url, _ = api
    async with aiohttp.ClientSession() as http, http.get(url + "/api/openapi.json") as response:
        assert response.status == 200
        document = await response.json()
    assert document == openapi_document()
    assert document["openapi"].startswith("3.")
    served = AdminApi(HeldRooms(), TOKEN).app.router.routes()
    pairs = {
        (route.method, route.resource.canonical)
        for route in served
        if route.resource is not None and route.method != "HEAD"
    }
    documented = {
        (method.upper(), path) for path, ops in document["paths"].items() for method in ops
    }
    assert pairs == documented
    assert len(pairs) == len(ROUTES)
    for path, ops in document["paths"].items():
        for op in ops.values():
            names = {p["name"] for p in op["parameters"]}
            assert names == {p[1:-1] for p in path.split("/") if p.startswith("{")}


async def test_room_view_and_actions(api: tuple[str, HeldRooms]) -> None:
    url, held = api
    room = held.rooms[RoomId("ops@h")]
    async with aiohttp.ClientSession(headers=_auth()) as http:
        async with http.get(url + "/api/rooms/ops") as response:  # by user part
            data = await response.json()
        assert data["subscriptions"] == 7
        assert [p["uri"] for p in data["participants"]] == ["sip:alice@h", "sip:bob@h"]
        assert data["participants"][0]["role"] == "participant"
        async with http.post(url + "/api/rooms/ops@h/participants/bob@h/mute") as response:
            assert response.status == 200
            assert (await response.json())["muted"] is True
        assert held.host.muted == [("pb", True)]
        async with http.post(url + "/api/rooms/ops/participants/pb/unmute") as response:
            assert (await response.json())["muted"] is False
        async with http.post(url + "/api/rooms/ops/lock") as response:
            assert (await response.json())["locked"] is True
        assert room.locked
        async with http.post(url + "/api/rooms/ops/unlock") as response:
            assert (await response.json())["locked"] is False
        async with http.put(url + "/api/rooms/ops/pin", json={"pin": "1234"}) as response:
            assert (await response.json())["has_pin"] is True
        assert room.pin == "1234"
        async with http.put(url + "/api/rooms/ops/pin", json={"pin": None}) as response:
            assert (await response.json())["has_pin"] is False
        async with http.put(url + "/api/rooms/ops/private-messages", json={"allowed": False}) as r:
            assert (await r.json())["private_messages"] is False
        async with http.post(url + "/api/rooms/ops/participants/sip:alice@h/kick") as response:
            assert (await response.json())["kicked"] == "sip:alice@h"
        assert held.host.ended == [("pa", "kicked")]
        async with http.post(url + "/api/rooms/ops/end") as response:
            assert (await response.json())["participants"] == 2
        assert ("pb", "room ended") in held.host.ended


async def test_bad_input_400_unknown_404(api: tuple[str, HeldRooms]) -> None:
    url, held = api
    async with aiohttp.ClientSession(headers=_auth()) as http:
        for body in ({"pin": "12#"}, {"pin": 12}, {}, {"pin": ""}):
            async with http.put(url + "/api/rooms/ops/pin", json=body) as response:
                assert response.status == 400, body
                assert "error" in await response.json()
        async with http.put(url + "/api/rooms/ops/pin", data=b"{not json") as response:
            assert response.status == 400
        async with http.put(url + "/api/rooms/ops/pin", json=[1]) as response:
            assert response.status == 400
        async with http.put(url + "/api/rooms/ops/private-messages", json={"allowed": 1}) as r:
            assert r.status == 400
        async with http.get(url + "/api/rooms/nope") as response:
            assert response.status == 404
            assert "nope" in (await response.json())["error"]
        async with http.post(url + "/api/rooms/ops/participants/carol/kick") as response:
            assert response.status == 404
        async with http.get(url + "/api/nothing-here") as response:
            assert response.status == 404
            assert "error" in await response.json()
        async with http.post(url + "/api/rooms/ops/pin", json={"pin": "1"}) as response:
            assert response.status == 405
    assert held.rooms[RoomId("ops@h")].pin is None


def test_token_generated_once_mode_0600(tmp_path: Path) -> None:
    config = replace(Config(), server=replace(ServerConfig(), spool_dir=tmp_path))
    token = load_token(config)
    path = tmp_path / "api" / "token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(token) >= 32 and load_token(config) == token
    fixed = replace(config, api=replace(ApiConfig(), token="f" * 20))
    assert load_token(fixed) == "f" * 20
