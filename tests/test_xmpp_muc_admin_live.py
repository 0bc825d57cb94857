"""XMPP MUC occupants in the operator's views and limits (issue 12 loose ends), through a real
Prosody: a slixmpp occupant of a room with a SIP participant is listed by the admin API over
HTTP (``kind: "xmpp"``, its nick and bare JID, the SIP identity conference-info shows for it)
and by the dashboard's model; the API's kick removes it from the MUC (its own presence with
110 and 307); and ``[conference] max_participants`` counts XMPP occupants for a SIP INVITE
as a MUC join counts SIP participants."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from control.conference import ConferenceApp
from control.conference.infosubs import room_snapshot
from control.media.engine import RoomId
from control.metrics import MetricSources
from control.web.api import AdminApi
from control.web.dashboard_model import NodeDashboard
from tests.peers.wait import wait_until
from tests.test_xmpp_muc_live import (
    ROOM,
    STANZAS_NS,
    Setup,
    chorus_with_muc,
    codes,
    is_self_presence,
    occupant,
    presence_from,
    sip_person,
)

pytestmark = [pytest.mark.timeout(240), pytest.mark.peer("prosody"), pytest.mark.peer("sipp")]


class Admin:
    """The admin API of the in-process node over HTTP, with its bearer token (what
    ``chorus serve`` starts: control/cli.py)."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.headers = {"Authorization": f"Bearer {token}"}

    async def call(self, method: str, path: str) -> tuple[int, Any]:
        async with (
            aiohttp.ClientSession(headers=self.headers) as http,
            http.request(method, self.url + path) as response,
        ):
            return response.status, await response.json()


@contextlib.asynccontextmanager
async def admin_api(setup: Setup) -> AsyncIterator[Admin]:
    conference = setup.server.applications["conference"]
    assert isinstance(conference, ConferenceApp)
    token = secrets.token_urlsafe(32)
    api = AdminApi(conference, token)
    url = await api.start("127.0.0.1", 0)
    try:
        yield Admin(url, token)
    finally:
        await api.stop()


def conference_of(setup: Setup) -> ConferenceApp:
    conference = setup.server.applications["conference"]
    assert isinstance(conference, ConferenceApp)
    return conference


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    async with chorus_with_muc(tmp_path) as running:
        yield running


async def test_the_admin_api_and_dashboard_list_an_occupant_and_the_api_kicks_it(
    setup: Setup,
) -> None:
    xmpp_domain = setup.prosody.xmpp_domain
    async with (
        sip_person("alice", "Alice") as alice,
        occupant(setup, "bob") as bob,
        admin_api(setup) as admin,
    ):
        a = await alice.join(setup.ports, ROOM, secure=False)
        bob.join("Bob")
        await bob.joined("Bob")

        status, room = await admin.call("GET", f"/api/rooms/{ROOM}")
        assert status == 200
        by_kind = {p["kind"]: p for p in room["participants"]}
        assert set(by_kind) == {"sip", "xmpp"} and len(room["participants"]) == 2
        xmpp = by_kind["xmpp"]
        assert xmpp["nickname"] == "Bob"
        assert xmpp["jid"] == f"bob@{xmpp_domain}"
        assert xmpp["uri"] == f"sip:bob@{xmpp_domain}"
        assert [s["kind"] for s in xmpp["streams"]] == ["chat"]
        assert room["xmpp_occupants"] == 1
        # the same source as conference-info: its user for the occupant has that URI and nick
        live = conference_of(setup).rooms[RoomId(room["id"])]
        user = room_snapshot(live).users[xmpp["uri"]]
        assert user.display_text == xmpp["nickname"]
        assert by_kind["sip"]["uri"] in room_snapshot(live).users

        status, one = await admin.call("GET", f"/api/rooms/{ROOM}/participants/bob@{xmpp_domain}")
        assert status == 200 and one["kind"] == "xmpp" and one["nickname"] == "Bob"

        # the dashboard's model (what its page renders) lists it too
        sources = MetricSources(setup.server.ua, setup.server.msrp, conference=conference_of(setup))
        [shown] = NodeDashboard(sources).snapshot()["rooms"]
        kinds = {p["kind"]: p for p in shown["participant_list"]}
        assert kinds["xmpp"]["jid"] == f"bob@{xmpp_domain}"

        status, kicked = await admin.call("POST", f"/api/rooms/{ROOM}/participants/Bob/kick")
        assert status == 200 and kicked["kind"] == "xmpp"
        gone = await bob.wait(lambda s: presence_from(s, f"{setup.room_jid}/Bob", "unavailable"))
        assert {"110", "307"} <= codes(gone)
        assert await a.wait_for(lambda: a.notices("kicked"))
        status, room = await admin.call("GET", f"/api/rooms/{ROOM}")
        assert [p["kind"] for p in room["participants"]] == ["sip"]
        bob.say("still here?", id="after-kick")
        error = await bob.wait(lambda s: s.get("id") == "after-kick" and s.get("type") == "error")
        assert error.find(f"{{jabber:client}}error/{{{STANZAS_NS}}}not-acceptable") is not None


async def test_max_participants_counts_xmpp_occupants_for_a_sip_invite(tmp_path: Path) -> None:
    async with (
        chorus_with_muc(tmp_path, conference={"max_participants": 2}) as setup,
        sip_person("alice", "Alice") as alice,
        sip_person("dave", "Dave") as dave,
        occupant(setup, "bob") as bob,
        occupant(setup, "carol") as carol,
    ):
        await alice.join(setup.ports, ROOM, secure=False)
        bob.join("Bob")
        await bob.joined("Bob")
        # one SIP participant and one XMPP occupant: the room of two is full for SIP ...
        with pytest.raises(AssertionError, match="answered 486"):
            await dave.join(setup.ports, ROOM, secure=False)
        # ... and for MUC (XEP-0045 §7.2.10)
        carol.join("Carol")
        refusal = await carol.wait(
            lambda s: s.get("type") == "error" and (s.get("from") or "").endswith("/Carol")
        )
        assert refusal.find(f".//{{{STANZAS_NS}}}service-unavailable") is not None
        # the occupant leaves: there is a seat again for the SIP INVITE
        bob.leave("Bob")
        await bob.wait(lambda s: presence_from(s, f"{setup.room_jid}/Bob", "unavailable"))
        [room] = conference_of(setup).rooms.values()
        assert await wait_until(lambda: not room.full)
        await dave.join(setup.ports, ROOM, secure=False)
        assert not any(is_self_presence(s, "Carol") for s in carol.stanzas)
