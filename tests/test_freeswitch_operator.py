"""An operator's script on a FreeSWITCH node, reflected in the room (issue 11, operator scripts).

A running server with ``[audio] engine = "freeswitch"``; the node is SIPp (the SIP leg, RTP
echoed) with the ESL FAKE (tests/peers/eslfake.py) as its Event Socket. alice joins with
audio and chat, bob with chat only, a SIPp watcher subscribes to the room's conference-info.
Then another ESL client — the operator's ``fs_cli -x 'conference R mute N'`` — mutes alice
on the node: the fake emits the ``mute-member`` event mod_conference 1.10 sends, and Chorus
shows alice muted, bob's chat gets "Alice was muted", the watcher's document shows alice's
endpoint ``muted-via-focus``. The operator's ``kick`` (``kick-member`` then ``del-member``):
alice's call gets BYE, bob's chat "Alice was removed from the room by operator", the watcher
sees alice deleted, and the node's leg is ended too.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from control.media.engine import ParticipantId, RoomId
from control.media.freeswitch import FreeSwitchEngine, conference_name
from control.server import Server
from tests.peers.chatclient import ChatClient, ChatSession
from tests.peers.confinfo import ConfModel, Rebuilder
from tests.peers.eslfake import operator
from tests.peers.fsnode import PASSWORD, MediaNode, running_server
from tests.peers.rtp_endpoint import RtpEndpoint
from tests.peers.sipp import SippResult, run_sipp_async
from tests.peers.wait import wait_until
from tests.test_conference_info_live import notify_bodies

pytestmark = [pytest.mark.timeout(120), pytest.mark.peer("sipp")]

ROOM = RoomId("watched@127.0.0.1")


@dataclass
class Ports:
    sip_port: int
    tls_port: int = 0


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[MediaNode]:
    media = await MediaNode(tmp_path / "node").start()
    yield media
    await media.stop()


@contextlib.asynccontextmanager
async def serving(tmp_path: Path, node: MediaNode) -> AsyncIterator[tuple[Server, Ports]]:
    """A running server whose rooms are mixed by ``node``."""
    async with running_server(tmp_path, [node.config], health_interval=1) as (chorus, port):
        yield chorus, Ports(port)


@pytest.fixture
async def server(tmp_path: Path, node: MediaNode) -> AsyncIterator[tuple[Server, Ports]]:
    async with serving(tmp_path, node) as running:
        yield running


def engine_of(server: Server) -> FreeSwitchEngine:
    engine = server.applications["conference"].engine  # type: ignore[attr-defined]
    assert isinstance(engine, FreeSwitchEngine)
    return engine


async def in_conference(engine: FreeSwitchEngine, node: MediaNode) -> tuple[ParticipantId, int]:
    """alice's leg reached the node: play its dialplan, which puts it into the conference."""
    assert node.fake is not None
    assert await wait_until(lambda: len(engine.participants(ROOM)) == 1, timeout=15)
    (participant,) = engine.participants(ROOM)
    member = node.fake.join(conference_name(ROOM), participant)
    assert await wait_until(lambda: engine.member_id(ROOM, participant) == member, timeout=15)
    return participant, member


def notified(session: ChatSession, kind: str, text: str) -> bool:
    return any(d.text == text for d in session.notices(kind))


def status_of(model: ConfModel, user: str) -> list[str]:
    """The endpoint statuses of the watcher's user whose entity names ``user``."""
    return [
        ep[1]
        for entity, data in model.users.items()
        if f"sip:{user}@" in entity
        for ep in data["endpoints"].values()
    ]


def watch_room(ports: Ports, service: str) -> asyncio.Task[SippResult]:
    """A SIPp watcher of the room's conference-info (RFC 4575), its NOTIFYs traced."""
    return asyncio.create_task(
        run_sipp_async(
            "uac_subscribe_conference",
            f"127.0.0.1:{ports.sip_port}",
            service=service,
            trace_messages=True,
            timeout=90,
        )
    )


def alice_gone_bob_stays(model: ConfModel) -> bool:
    """The watcher's document has bob's endpoint and no alice at all (deleted)."""
    return bool(status_of(model, "bob")) and not any("sip:alice@" in e for e in model.users)


async def test_an_operators_mute_and_kick_show_in_state_chat_and_conference_info(
    server: tuple[Server, Ports], node: MediaNode
) -> None:
    chorus, ports = server
    engine = engine_of(chorus)
    app = chorus.applications["conference"]
    name = conference_name(ROOM)
    async with ChatClient("alice", "Alice") as alice_client, ChatClient("bob", "Bob") as bob_c:
        alice = await alice_client.join(
            ports, "watched", secure=False, audio=RtpEndpoint("PCMU", 8000, 0, seed=1)
        )
        participant, member = await in_conference(engine, node)
        bob = await bob_c.join(ports, "watched", secure=False)
        watcher = watch_room(ports, "watched")
        info = app.info  # type: ignore[attr-defined]
        assert await wait_until(lambda: ROOM in info.services, timeout=30)
        shown = app.participant(ROOM, participant)  # type: ignore[attr-defined]
        assert shown is not None and not shown.muted

        mute = f"conference {name} mute {member}"
        assert await operator("127.0.0.1", node.esl_port, PASSWORD, mute) == f"OK mute {member}\n"
        assert await wait_until(lambda: shown.muted, timeout=15)
        assert await wait_until(lambda: notified(bob, "muted", "Alice was muted"))

        kick = f"conference {name} kick {member}"
        assert await operator("127.0.0.1", node.esl_port, PASSWORD, kick) == f"OK kicked {member}\n"
        assert alice.session is not None
        assert await asyncio.wait_for(alice.session.terminated, 15) == "remote BYE"
        kick_text = "Alice was removed from the room by operator"
        assert await wait_until(lambda: notified(bob, "kicked", kick_text))
        await node.wait_received("BYE")  # the node's leg of alice ended too
        assert engine.participants(ROOM) == []
        assert app.participant(ROOM, participant) is None  # type: ignore[attr-defined]
        await asyncio.sleep(0.3)  # alice's removal NOTIFY goes out before bob ends the room
        await bob.leave()
        result = await watcher
    assert result.ok, result.describe()
    rebuilt, seen_muted, seen_bob_alone = Rebuilder(), False, False
    for _, body in notify_bodies(result.messages):
        model = rebuilt.apply(body)
        if "muted-via-focus" in status_of(model, "alice"):
            seen_muted = True
        seen_bob_alone = seen_bob_alone or seen_muted and alice_gone_bob_stays(model)
    assert seen_muted, "the watcher never saw alice muted-via-focus"
    assert seen_bob_alone, "the watcher never saw alice deleted while bob stayed"
