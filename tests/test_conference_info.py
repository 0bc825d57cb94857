"""Conference information (RFC 4575): every document the room produces, full and partial,
validates against the RFC 4575 schema; a watcher applying them (tests/peers/confinfo.py) ends
with exactly the room's current snapshot after random joins, leaves, holds, nickname changes,
mutes, media, screen, lock and file changes; bursts coalesce; no subscriber costs nothing."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from control.conference.chat import ChatSessionId
from control.conference.info import AGP_NS, CONF_NS, render_full, sylk_hash, with_version
from control.conference.infonotify import ConferenceInfo, RoomInfoService
from control.conference.infosubs import RoomInfo
from control.conference.participant import MODERATOR
from control.sip.sdp import Direction
from control.streams import MediaKind
from control.xmlsafe import parse
from tests.peers.confinfo import Files, Rebuilder, World, model_of, stream, world

SCHEMA = etree.XMLSchema(etree.parse(str(Path(__file__).parent / "data" / "conference-info.xsd")))


def valid(body: bytes) -> etree._Element:
    root = parse(body)
    SCHEMA.assertValid(root)
    return root


def info_for(w: World, min_interval: float = 1.0) -> RoomInfo:
    return RoomInfo(w.snapshot, min_interval=min_interval)


# --- documents ----------------------------------------------------------------------------------


def test_full_document_has_room_users_media_files_screen_and_validates() -> None:
    w = world()
    alice = w.join("alice", "Alice", (MediaKind.AUDIO, MediaKind.CHAT))
    alice.role = MODERATOR
    w.join("alice", "Alice", (MediaKind.CHAT,))  # her second device: same user, two endpoints
    w.join("bob", None, (MediaKind.AUDIO,))
    w.room.screens[alice.id] = "https://127.0.0.1:8443/screen/a.jpg?t=x"
    w.room.locked = True
    w.files.append(Files("Blink.pdf", "49ad49" + "0" * 34, 151036, "AG <sip:ag@example.com>"))
    root = valid(with_version(render_full(w.snapshot()), 1))
    ns = {"c": CONF_NS, "a": AGP_NS}
    assert root.get("state") == "full" and root.get("version") == "1"
    assert root.get("entity") == "sip:team@conf.example"
    file = root.find("c:conference-description/a:resources/a:files/a:file", ns)
    assert file is not None
    assert file.attrib == {
        "name": "Blink.pdf",
        "hash": sylk_hash("49ad49" + "0" * 34),
        "size": "151036",
        "sender": "AG <sip:ag@example.com>",
        "status": "OK",
    }
    assert file.get("hash", "").startswith("sha1:49:AD:49:00")
    assert root.findtext("c:conference-state/c:user-count", namespaces=ns) == "2"
    assert root.findtext("c:conference-state/c:locked", namespaces=ns) == "true"
    assert root.findtext("c:conference-description/c:maximum-user-count", namespaces=ns) == "50"
    users = root.findall("c:users/c:user", ns)
    assert [u.get("entity") for u in users] == ["sip:alice@example.com", "sip:bob@example.com"]
    assert len(users[0].findall("c:endpoint", ns)) == 2
    assert users[0].findtext("c:roles/c:entry", namespaces=ns) == "moderator"
    assert users[0].findtext("a:screen_image_url", namespaces=ns).startswith("https://")
    assert users[1].find("a:screen_image_url", ns) is None
    media = users[0].findall("c:endpoint/c:media", ns)
    assert [m.findtext("c:type", namespaces=ns) for m in media] == ["audio", "message", "message"]
    assert {m.findtext("c:status", namespaces=ns) for m in media} == {"sendrecv"}


def test_nickname_is_display_text_and_hold_and_mute_are_statuses() -> None:
    w = world()
    alice = w.join("alice", "Alice", (MediaKind.AUDIO, MediaKind.CHAT))
    bob = w.join("bob", "Bob", (MediaKind.AUDIO,))
    w.chat.core.set_nickname(ChatSessionId(f"s-{alice.id}"), "ally", datetime.now(UTC))
    alice.streams[0] = stream(MediaKind.AUDIO, 0, Direction.RECVONLY)  # her offer: sendonly
    w.room.set_muted(bob, True, by_operator=True)
    snap = w.snapshot()
    a = snap.users["sip:alice@example.com"]
    assert a.display_text == "ally"
    (ep,) = a.endpoints.values()
    assert ep.status == "on-hold" and ep.media[0].status == "sendonly"
    (bob_ep,) = snap.users["sip:bob@example.com"].endpoints.values()
    assert bob_ep.status == "muted-via-focus"
    valid(with_version(render_full(snap), 1))


def test_partial_after_a_leave_deletes_user_and_endpoint_with_disconnection_info() -> None:
    w = world()
    info = info_for(w, min_interval=0.0)
    valid(info.subscribe("sub", now=0.0))
    alice = w.join("alice", "Alice", (MediaKind.AUDIO,))
    phone = w.join("alice", "Alice", (MediaKind.AUDIO,))
    bob = w.join("bob", "Bob", (MediaKind.AUDIO,))
    info.changed(1.0)
    ((_, body),) = info.handle_timer(1.0)
    assert valid(body).get("version") == "2"
    w.leave(phone)
    w.leave(bob)
    info.changed(2.0)
    ((_, body),) = info.handle_timer(2.0)
    root = valid(body)
    ns = {"c": CONF_NS}
    assert root.get("state") == "partial" and root.get("version") == "3"
    users = {u.get("entity"): u for u in root.findall("c:users/c:user", ns)}
    assert users["sip:bob@example.com"].get("state") == "deleted"
    gone = users["sip:alice@example.com"].find("c:endpoint", ns)
    assert users["sip:alice@example.com"].get("state") == "partial"
    assert gone is not None and gone.get("state") == "deleted"
    assert gone.findtext("c:status", namespaces=ns) == "disconnected"
    assert gone.findtext("c:disconnection-info/c:when", namespaces=ns) is not None
    assert alice.id in w.room.participants


def test_burst_coalesces_into_one_notify_per_interval() -> None:
    w = world()
    info = info_for(w, min_interval=2.0)
    info.subscribe("sub", now=0.0)
    built = info.snapshots_built
    for i in range(20):
        w.join(f"u{i}", None, (MediaKind.AUDIO,))
        info.changed(0.1 + i * 0.01)
    assert info.snapshots_built == built  # marking costs no snapshot
    assert info.next_timer() == 2.0  # the rate limit: 2 s after the full document
    assert info.handle_timer(1.9) == []
    sent = info.handle_timer(2.0)
    assert len(sent) == 1 and info.snapshots_built == built + 1
    assert valid(sent[0][1]).get("version") == "2"
    assert info.next_timer() is None


def test_no_subscriber_costs_no_snapshot() -> None:
    w = world()
    info = info_for(w)
    for i in range(50):
        w.join(f"u{i}", None, (MediaKind.AUDIO,))
        info.changed(float(i))
    assert info.snapshots_built == 0 and info.next_timer() is None
    assert info.handle_timer(100.0) == []


def test_final_document_empties_the_room_and_validates() -> None:
    w = world()
    info = info_for(w, min_interval=0.0)
    rebuilt = Rebuilder()
    w.join("alice", None, (MediaKind.AUDIO,))
    rebuilt.apply(_checked(info.subscribe("sub", now=0.0)))
    ((key, body),) = info.final(1.0)
    model = rebuilt.apply(_checked(body))
    assert key == "sub"
    assert model.users == {} and model.state["active"] == "false"
    assert info.subscribers == {}


# --- random rooms rebuilt by a watcher ------------------------------------------------------------


def _run(rng: random.Random, steps: int = 200) -> None:
    w = world()
    info = info_for(w, min_interval=rng.choice([0.0, 0.5, 1.0]))
    watchers = {k: Rebuilder() for k in ("early", "late")}
    now = 0.0
    ((watchers["early"]).apply(_checked(info.subscribe("early", now))))
    names = [f"user{i}" for i in range(12)]
    subscribed_late = False
    for step in range(steps):
        live = list(w.room.participants.values())
        op = rng.choice(
            ["join", "join", "leave", "hold", "nick", "mute", "media", "screen", "lock", "file"]
        )
        if op == "join" or not live:
            kinds = rng.choice(
                [(MediaKind.AUDIO,), (MediaKind.CHAT,), (MediaKind.AUDIO, MediaKind.CHAT)]
            )
            w.join(rng.choice(names), rng.choice([None, "Some One", "Ünïcode <&>"]), kinds)
        else:
            p = rng.choice(live)
            if op == "leave":
                w.leave(p)
            elif op == "hold":
                for index, s in list(p.streams.items()):
                    if s.kind is MediaKind.AUDIO:
                        direction = rng.choice(list(Direction))
                        p.streams[index] = stream(MediaKind.AUDIO, index, direction)
            elif op == "nick" and ChatSessionId(f"s-{p.id}") in w.chat.core.members:
                try:
                    w.chat.core.set_nickname(
                        ChatSessionId(f"s-{p.id}"), f"nick{rng.randrange(8)}", datetime.now(UTC)
                    )
                except Exception:
                    pass  # 425: taken by another identity, as the room would answer
            elif op == "mute":
                w.room.set_muted(p, not p.muted, by_operator=True)
            elif op == "media":
                if p.streams and rng.random() < 0.5:
                    index = rng.choice(list(p.streams))
                    removed = p.streams.pop(index)
                    w.room.streams_stopped(p, [removed])  # type: ignore[list-item]
                else:
                    index = max(p.streams, default=-1) + 1
                    added = stream(rng.choice([MediaKind.AUDIO, MediaKind.CHAT]), index)
                    p.streams[index] = added  # type: ignore[assignment]
                    w.room.streams_started(p, [added])  # type: ignore[list-item]
            elif op == "screen":
                if p.id in w.room.screens:
                    del w.room.screens[p.id]
                else:
                    w.room.screens[p.id] = f"https://127.0.0.1/screen/{p.id}.jpg?step={step}"
            elif op == "lock":
                w.room.locked = not w.room.locked
            elif op == "file":
                sha1 = f"{step:040x}"
                w.files.append(Files(f"f{step}.txt", sha1, step, f"<{p.uri}>"))
        now += rng.choice([0.0, 0.1, 0.3, 1.0])
        info.changed(now)
        if step == steps // 2 and not subscribed_late:
            watchers["late"].apply(_checked(info.subscribe("late", now)))
            subscribed_late = True
        for key, body in info.handle_timer(now):
            watchers[key].apply(_checked(body))
    while (deadline := info.next_timer()) is not None:
        now = max(now, deadline)
        for key, body in info.handle_timer(now):
            watchers[key].apply(_checked(body))
    expected = model_of(w.snapshot())
    for watcher in watchers.values():
        assert watcher.model == expected


def _checked(body: bytes) -> bytes:
    valid(body)
    return body


@pytest.mark.parametrize("seed", range(5))
def test_200_random_changes_rebuilt_exactly(seed: int) -> None:
    _run(random.Random(seed))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.randoms(use_true_random=False))
def test_random_histories_rebuilt_exactly(rng: random.Random) -> None:
    _run(rng, steps=200)


def test_room_tells_of_every_change_conference_info_shows() -> None:
    w = world()
    told: list[int] = []
    w.room.on_change = lambda: told.append(1)
    alice = w.join("alice", None, (MediaKind.AUDIO,))
    assert told, "join"
    for change in (
        lambda: w.room.set_muted(alice, True, by_operator=True),
        lambda: w.room.streams_started(alice, [stream(MediaKind.CHAT, 1)]),  # type: ignore[list-item]
        lambda: w.room.streams_stopped(alice, [alice.streams[0]]),
        lambda: w.leave(alice),
    ):
        told.clear()
        change()
        assert told


# --- the asyncio layer ------------------------------------------------------------------------


class RecordingNotifier:
    """A named fake of an accepted subscription: records what would go out as NOTIFYs."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.terminated: tuple[str, bytes | None] | None = None
        self.arrived = asyncio.Event()

    def notify(self, body: bytes, content_type: str) -> None:
        assert content_type == "application/conference-info+xml"
        self.bodies.append(body)
        self.arrived.set()

    def terminate(self, reason: str, body: bytes | None, content_type: str | None) -> None:
        self.terminated = (reason, body)


async def test_service_notifies_full_then_coalesced_partials_then_terminated() -> None:
    w = world()
    service = RoomInfoService(w.room, lambda: w.files, min_interval=0.05, max_subscriptions=2)
    watcher, rebuilt = RecordingNotifier(), Rebuilder()
    service.subscribe("a", watcher)
    assert len(watcher.bodies) == 1  # the full document, at once
    watcher.arrived.clear()
    for i in range(5):  # a burst: one NOTIFY
        w.join(f"u{i}", None, (MediaKind.AUDIO,))
    await asyncio.wait_for(watcher.arrived.wait(), 10)
    await asyncio.sleep(0.1)
    assert len(watcher.bodies) == 2
    for body in watcher.bodies:
        rebuilt.apply(_checked(body))
    assert rebuilt.model == model_of(w.snapshot())
    service.close()
    assert watcher.terminated is not None and watcher.terminated[0] == "noresource"
    assert watcher.terminated[1] is not None
    assert rebuilt.apply(_checked(watcher.terminated[1])).state["active"] == "false"
    assert w.room.on_change is None


async def test_node_keeps_a_service_only_for_rooms_with_subscribers() -> None:
    w = world()
    node = ConferenceInfo(min_interval=0.0, max_subscriptions=1, files=lambda _room: w.files)
    assert not node.full(w.room)
    first = RecordingNotifier()
    node.subscribe(w.room, "a", first)
    assert node.full(w.room) and w.room.on_change is not None  # the per-room limit
    node.unsubscribe(w.room.id, "a")
    assert node.services == {} and w.room.on_change is None  # changes cost nothing again
    second = RecordingNotifier()
    node.subscribe(w.room, "b", second)
    node.room_ended(w.room)
    assert second.terminated is not None and second.terminated[0] == "noresource"
    assert first.terminated is None and node.services == {}
