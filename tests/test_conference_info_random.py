"""Conference information against the admin API, live (issue 10, "Must show"): a Python watcher
(tests/peers/watcher.py: the project's subscriber core over UDP) rebuilds the room from the
full and partial documents of a real ``chorus serve`` and, after each of 200 seeded random
operations — joins (chat, audio, both; one identity on two sessions), leaves, holds and
resumes, nickname changes, media added and removed by re-INVITE, and the admin API's mute,
unmute, lock, unlock and kick — settles on exactly the room the token-authenticated admin API
shows. Every document validates against the RFC 4575 schema, versions go up by one (a
partial after a gap is refused by the rebuilder), and each moderation action reached the
room's chat as a notice. No timing is asserted: each step waits for the views to agree.

And two units: two sessions of one UA (one Contact) are two endpoints of the user (RFC 4575
§5.7: one per session); the admin API's participant carries what the documents show of it
(nickname, each stream's direction). A PIN set by the API: a caller without it is a pending
endpoint until it keys it, and PIN and private-message changes are chat notices.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from control.conference.info import when
from control.conference.infosubs import room_snapshot
from control.sip import sdp
from control.streams import MediaKind
from control.web.api import participant_json
from tests.peers.chatclient import ChatClient, ChatSession
from tests.peers.chorus import ChorusProcess
from tests.peers.confinfo import ConfModel, StandInDialog, stream, world
from tests.peers.ports import free_ports
from tests.peers.rtp_endpoint import RtpEndpoint
from tests.peers.watcher import ConferenceWatcher

ROOM = "shuffle"
TOKEN = "random-room-token-0123456789abcdef"
USERS = ("alice", "bob", "carol", "dave", "erin")
STEPS = 200
MAX_SESSIONS = 8
_TYPES = {"audio": "audio", "chat": "message", "file": "file"}

View = dict[str, Any]


# --- the two views, in one shape ----------------------------------------------------------------


def api_model(room: dict[str, Any]) -> View:
    """What the conference-info documents must say, read from the admin API's room: one user
    per SIP identity, one endpoint per session (keyed by its media ids, which name the
    participant), statuses by RFC 4575 §5.7.1.4 from the API's mute and stream directions."""
    users: dict[str, Any] = {}
    for p in room["participants"]:
        if p["transfer_only"]:
            continue
        audio = [s["direction"] for s in p["streams"] if s["kind"] == "audio"]
        if p["awaiting_pin"]:
            status = "pending"  # held out of the room until it keys the PIN
        elif audio and all(d in ("sendonly", "inactive") for d in audio):
            status = "on-hold"
        elif p["muted"]:
            status = "muted-via-focus"
        else:
            status = "connected"
        name = p["nickname"] or p["name"]
        media = tuple(
            (
                f"{p['id']}-{s['index']}",
                _TYPES[s["kind"]],
                f"{p['id']}-{s['index']}",
                s["direction"],
            )
            for s in p["streams"]
        )
        user = users.setdefault(p["uri"], {"display-text": name, "roles": set(), "endpoints": []})
        user["display-text"] = name
        user["roles"].add(p["role"])
        user["endpoints"].append((name, status, when(p["joined_at"]), media))
    return {
        "users": {
            uri: (u["display-text"], tuple(sorted(u["roles"])), tuple(sorted(u["endpoints"])))
            for uri, u in users.items()
        },
        "user-count": str(len(users)),
        "locked": "true" if room["locked"] else "false",
        "maximum-user-count": str(room["max_participants"]),
    }


def watcher_model(model: ConfModel) -> View:
    return {
        "users": {
            entity: (
                user["display-text"],
                tuple(user["roles"]),
                tuple(sorted(user["endpoints"].values())),
            )
            for entity, user in model.users.items()
        },
        "user-count": model.state.get("user-count"),
        "locked": model.state.get("locked"),
        "maximum-user-count": model.description.get("maximum-user-count"),
    }


class Admin:
    def __init__(self, http: aiohttp.ClientSession, port: int, room: str = ROOM) -> None:
        self.http = http
        self.name = room
        self.base = f"http://127.0.0.1:{port}/api"
        self.headers = {"Authorization": f"Bearer {TOKEN}"}

    async def room(self) -> dict[str, Any]:
        url = f"{self.base}/rooms/{self.name}"
        async with self.http.get(url, headers=self.headers) as response:
            assert response.status == 200, await response.text()
            data: dict[str, Any] = await response.json()
            return data

    async def post(self, path: str, method: str = "POST", body: object = None) -> dict[str, Any]:
        url = f"{self.base}/rooms/{self.name}/{path}"
        async with self.http.request(method, url, headers=self.headers, json=body) as response:
            assert response.status == 200, await response.text()
            data: dict[str, Any] = await response.json()
            return data


async def settle(
    admin: Admin, watcher: ConferenceWatcher, chorus: ChorusProcess, what: str
) -> View:
    """Wait until the watcher's room is the admin API's room (returned); fail naming the
    step. Polling both views, not a timing assertion."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while True:
        expected, seen = api_model(await admin.room()), watcher_model(watcher.model)
        if expected == seen:
            return seen
        if loop.time() > deadline or watcher.errors:
            raise AssertionError(
                f"after {what}: watcher {seen}\n  != api {expected}\n"
                f"errors {watcher.errors}\n{chorus.log()[-3000:]}"
            )
        await asyncio.sleep(0.02)


# --- the run ------------------------------------------------------------------------------------


@dataclass
class Run:
    chorus: ChorusProcess
    admin: Admin
    watcher: ConferenceWatcher
    clients: dict[str, ChatClient]
    rng: random.Random
    sessions: list[ChatSession] = field(default_factory=list)  # host's excluded
    held: set[int] = field(default_factory=set)  # id() of the sessions on hold
    locked: bool = False
    ops: Counter[str] = field(default_factory=Counter)
    serial: int = 0

    async def settle(self, what: str) -> None:
        await settle(self.admin, self.watcher, self.chorus, what)

    def audio(self) -> RtpEndpoint:
        self.serial += 1
        return RtpEndpoint("PCMU", 8000, 0, seed=self.serial)

    @staticmethod
    def has(session: ChatSession, kind: MediaKind) -> bool:
        return any(slot.kind is kind and slot.media.port for slot in session.slots)

    async def step(self, index: int) -> str:
        rng = self.rng
        choices = ["join", "leave", "hold", "nickname", "mute", "media", "lock", "kick"]
        weights = [6, 3, 3, 3, 4, 4, 1, 1]
        if len(self.sessions) < 2:
            weights = [20, 0, 1, 1, 1, 1, 1, 0]
        op = rng.choices(choices, weights)[0]
        if op == "join" and (len(self.sessions) >= MAX_SESSIONS or self.locked):
            op = "leave" if not self.locked else "lock"
        if op != "join" and op not in ("lock",) and not self.sessions:
            op = "join" if not self.locked else "lock"
        match op:
            case "join":
                user = rng.choice(USERS)
                media = rng.choice(["chat", "audio", "both", "both"])
                session = await self.clients[user].join(
                    self.chorus,
                    ROOM,
                    secure=False,
                    audio=self.audio() if media != "chat" else None,
                    chat=media != "audio",
                )
                self.sessions.append(session)
                op = f"join {user} {media}"
            case "leave":
                session = self.sessions.pop(rng.randrange(len(self.sessions)))
                await session.leave()
                op = f"leave {session.client.user}"
            case "hold":
                with_audio = [s for s in self.sessions if self.has(s, MediaKind.AUDIO)]
                if not with_audio:
                    return await self.step(index)
                session = rng.choice(with_audio)
                hold = id(session) not in self.held
                direction = sdp.Direction.SENDONLY if hold else sdp.Direction.SENDRECV
                response = await session.reinvite(
                    audio=session.audio, chat=self.has(session, MediaKind.CHAT), direction=direction
                )
                assert response.status == 200, response.status
                (self.held.add if hold else self.held.discard)(id(session))
                op = f"{'hold' if hold else 'resume'} {session.client.user}"
            case "nickname":
                with_chat = [s for s in self.sessions if self.has(s, MediaKind.CHAT)]
                if not with_chat:
                    return await self.step(index)
                session = rng.choice(with_chat)
                name = f"{session.client.user.title()}{index}"
                assert await session.nickname(name) == 200
                self.ops["nickname"] += 1
                op = f"nickname {name}"
            case "mute":
                people = [p for p in (await self.admin.room())["participants"] if p["uri"] != HOST]
                person = rng.choice(people)
                action = "unmute" if person["muted"] else "mute"
                await self.admin.post(f"participants/{person['id']}/{action}")
                self.ops[action] += 1
                op = f"{action} {person['id']}"
            case "media":
                session = rng.choice(self.sessions)
                audio, chat = self.has(session, MediaKind.AUDIO), self.has(session, MediaKind.CHAT)
                if audio and chat:
                    audio, chat = rng.choice([(False, True), (True, False)])
                elif audio:
                    chat = True
                else:
                    audio = True
                endpoint = (session.audio or self.audio()) if audio else None
                held = id(session) in self.held and audio
                response = await session.reinvite(
                    audio=endpoint,
                    chat=chat,
                    direction=sdp.Direction.SENDONLY if held else sdp.Direction.SENDRECV,
                )
                assert response.status == 200, response.status
                if not audio:
                    self.held.discard(id(session))
                op = f"media {session.client.user} audio={audio} chat={chat}"
            case "lock":
                self.locked = not self.locked
                await self.admin.post("lock" if self.locked else "unlock")
                self.ops["lock" if self.locked else "unlock"] += 1
                op = "lock" if self.locked else "unlock"
            case "kick":
                people = [p for p in (await self.admin.room())["participants"] if p["uri"] != HOST]
                person = rng.choice(people)
                user = person["uri"].partition(":")[2].partition("@")[0]
                gone = [s for s in self.sessions if s.client.user == user]
                await self.admin.post(f"participants/{person['id']}/kick")
                for session in gone:
                    assert session.session is not None
                    await asyncio.wait_for(asyncio.shield(session.session.terminated), 30)
                    self.sessions.remove(session)
                    await session.leave()  # closes its streams; the dialog is over already
                self.ops["kicked"] += len(gone)
                op = f"kick {user} ({len(gone)} sessions)"
        return op


HOST = "sip:host@127.0.0.1"


@pytest.fixture
async def clients() -> AsyncIterator[dict[str, ChatClient]]:
    async with contextlib.AsyncExitStack() as stack:
        made = {}
        for user in ("host", *USERS):
            made[user] = await stack.enter_async_context(ChatClient(user, user.title()))
        yield made


def server_settings() -> tuple[int, dict[str, dict[str, Any]]]:
    """A free API port and the server's settings: NOTIFYs at once (no coalescing interval
    to wait out), the API on that port with our token, no RTP timeout for silent callers."""
    (api_port,) = free_ports(1)
    return api_port, {
        "conference": {"info_interval": 0.0},
        "api": {"listen": f"http:127.0.0.1:{api_port}", "token": TOKEN},
        "rtp": {"timeout": 600.0},
    }


@pytest.mark.peer("sipp")  # the module's live server is driven like the SIPp tests: loopback SIP
@pytest.mark.timeout(900)
async def test_200_random_changes_watcher_matches_admin_api(
    clients: dict[str, ChatClient],
) -> None:
    api_port, settings = server_settings()
    with ChorusProcess(settings) as chorus:
        host = await clients["host"].join(chorus, ROOM, secure=False)  # the room's moderator
        async with (
            aiohttp.ClientSession() as http,
            ConferenceWatcher(chorus.sip_port, ROOM) as watcher,
        ):
            assert watcher.status == 200
            run = Run(chorus, Admin(http, api_port), watcher, clients, random.Random(4575))
            await run.settle("the first document")
            assert (await run.admin.room())["subscriptions"] == 1  # the watcher, counted
            done = []
            for index in range(STEPS):
                what = await run.step(index)
                done.append(what)
                await run.settle(f"step {index}: {what}")
            assert not watcher.errors, watcher.errors
            versions = [
                int(d.split(b'version="', 1)[1].split(b'"', 1)[0]) for d in watcher.documents
            ]
            assert versions == list(range(1, len(versions) + 1))
            assert watcher.states[0].startswith("active")
            # Every moderation change is in the room's chat too (the host's notices).
            want = {kind: run.ops[kind] for kind in ("mute", "unmute", "lock", "unlock")}
            assert all(want.values()), (run.ops, done)

            def told() -> dict[str, int]:
                notices = Counter(d.notice for d in host.notices())
                names = {"mute": "muted", "unmute": "unmuted"}
                return {kind: notices[names.get(kind, kind + "ed")] for kind in want}

            assert await host.wait_for(lambda: told() == want), (told(), want)
            notices = Counter(d.notice for d in host.notices())
            assert notices["kicked"] == run.ops["kicked"], (notices, run.ops)
            assert notices["nickname"] == run.ops["nickname"], (notices, run.ops)
        assert watcher.ended  # unsubscribed: the final NOTIFY came
        assert watcher.states[-1].startswith("terminated")
        assert "Traceback" not in chorus.log(), chorus.log()[-5000:]


PIN = "2468"


@pytest.mark.peer("sipp")
@pytest.mark.timeout(300)
async def test_pin_caller_is_pending_until_keyed_and_pin_notices(
    clients: dict[str, ChatClient],
) -> None:
    """A PIN set by the API: a caller without it is a ``pending`` endpoint until it keys the
    PIN (RFC 4733), then ``connected``; PIN set and cleared and private messages off are chat
    notices. The watcher agrees with the API at each step."""
    api_port, settings = server_settings()
    with ChorusProcess(settings) as chorus:
        host = await clients["host"].join(chorus, "gate", secure=False)
        async with (
            aiohttp.ClientSession() as http,
            ConferenceWatcher(chorus.sip_port, "gate") as watcher,
        ):
            admin = Admin(http, api_port, "gate")
            await admin.post("pin", "PUT", {"pin": PIN})
            bob = await clients["bob"].join(
                chorus, "gate", secure=False, audio=RtpEndpoint("PCMU", 8000, 0, seed=9), chat=False
            )
            view = await settle(admin, watcher, chorus, "bob joined without the PIN")
            [(_, status, _, _)] = view["users"]["sip:bob@127.0.0.1"][2]
            assert status == "pending"
            assert bob.audio is not None
            await bob.audio.send_dtmf(PIN + "#")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30
            while (await admin.room())["participants"][-1]["awaiting_pin"]:
                assert loop.time() < deadline, "the PIN never let bob in"
                await asyncio.sleep(0.05)
            view = await settle(admin, watcher, chorus, "bob keyed the PIN")
            [(_, status, _, _)] = view["users"]["sip:bob@127.0.0.1"][2]
            assert status == "connected"
            await admin.post("pin", "PUT", {"pin": None})
            await admin.post("private-messages", "PUT", {"allowed": False})
            await settle(admin, watcher, chorus, "PIN cleared, private messages off")
            kinds = ("pin-set", "pin-cleared", "private-messages-off")
            assert await host.wait_for(lambda: all(host.notices(k) for k in kinds)), [
                d.notice for d in host.notices()
            ]
            assert not watcher.errors, watcher.errors
        assert "Traceback" not in chorus.log(), chorus.log()[-5000:]


# --- units ---------------------------------------------------------------------------------------


def test_two_sessions_of_one_contact_are_two_endpoints() -> None:
    w = world()
    first = w.join("alice", "Alice", (MediaKind.AUDIO,))
    second = w.join("alice", "Alice", (MediaKind.CHAT,))
    contact = "sip:alice@192.0.2.7:5060"
    for participant in (first, second):
        participant.session.dialog = StandInDialog(contact)  # type: ignore[assignment]
    user = w.snapshot().users["sip:alice@example.com"]
    assert sorted(user.endpoints) == [contact, f"{contact};id={second.id}"]
    assert {m.type for ep in user.endpoints.values() for m in ep.media} == {"audio", "message"}


def test_admin_api_participant_shows_nickname_and_directions() -> None:
    w = world()
    alice = w.join("alice", "Alice", (MediaKind.AUDIO, MediaKind.CHAT))
    alice.streams[0] = stream(MediaKind.AUDIO, 0, sdp.Direction.RECVONLY)  # type: ignore[assignment]
    next(iter(w.chat.core.members.values())).nickname = "Ali"
    data = participant_json(alice, w.room)
    assert data["nickname"] == "Ali"
    assert data["streams"] == [
        {"index": 0, "kind": "audio", "direction": "sendonly"},  # she holds the room
        {"index": 1, "kind": "chat", "direction": "sendrecv"},
    ]
    assert participant_json(alice)["nickname"] is None  # without its room: none known
    snap = room_snapshot(w.room)
    ep = next(iter(snap.users[alice.uri].endpoints.values()))
    assert snap.users[alice.uri].display_text == "Ali" and ep.status == "on-hold"
