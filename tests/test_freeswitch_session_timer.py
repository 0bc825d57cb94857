"""A FreeSWITCH leg whose dialog the node lost, found by the session timer (issue 11, faults).

The engine's legs carry RFC 4028 session timers like every session of the focus: the server
here asks for ``Session-Expires: 4`` (``[sip] session_expires``), the node (SIPp, RTP echoed,
the Event Socket the ESL FAKE, connected throughout) answers without one, so the focus
refreshes every 2 s (§7.2: a UAS that does not do timers leaves the refreshes to us). This
node has forgotten every dialog (its profile restarted, say): it answers the refresh
re-INVITE 481 — or 408 — and the leg is over (§10, RFC 5057 §5.1) while the node itself is
fine. Chorus re-homes the participant's audio on the room's node: a new leg there (a new
Call-ID) with the participant's last offer, then StreamMoved with that leg's answer, and RTP
flows to the node again. When the new leg is lost the same way within the minute, the node
keeps losing it: the audio is lost (AudioLost), not re-homed again and again.

(A re-INVITE the participant caused, answered 481, is tests/test_freeswitch_leg.py; a BYE
from the node, tests/test_freeswitch_leg_death.py.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from control.media.engine import AudioLost, StreamMoved
from control.server import Server
from tests.peers import fsnode, inprocess
from tests.peers.fsnode import ALICE, ROOM, MediaNode, Participant, echoed, engine_for, offer, rtp
from tests.test_freeswitch_engine import watched

pytestmark = [pytest.mark.timeout(90), pytest.mark.peer("sipp")]

participant = fsnode.participant_fixture
SESSION_EXPIRES = 4  # seconds; refreshed at half of it


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    timers = {"sip": {"session_expires": SESSION_EXPIRES, "min_se": 2}}
    async with inprocess.running_server(
        tmp_path / "spool", rtp={}, transports=("udp",), sections=timers
    ) as (running, _):
        yield running


def call_ids(invites: list[str]) -> list[str]:
    return [line for i in invites for line in i.splitlines() if line.startswith("Call-ID")]


@pytest.mark.parametrize("status", [481, 408])
async def test_a_leg_lost_at_its_session_refresh_is_rehomed_on_the_rooms_node(
    server: Server, tmp_path: Path, participant: Participant, status: int
) -> None:
    node = await MediaNode(tmp_path / "forgets", forget_dialogs=True, forget_status=status).start()
    engine = engine_for(server, node)
    async with watched(engine, node) as events:
        await engine.attach(ROOM, ALICE, offer(participant.port), 0)
        first = engine.leg(ROOM, ALICE)
        assert first is not None
        (invite,) = await node.wait_received("INVITE")
        assert f"Session-Expires: {SESSION_EXPIRES}" in invite  # the leg asks for a timer

        moved = await events.wait(lambda e: isinstance(e, StreamMoved))
        assert isinstance(moved, StreamMoved) and moved.participant == ALICE
        # INVITE, the refresh re-INVITE (answered `status`), a new INVITE on a new dialog.
        invites = await node.wait_received("INVITE", 3)
        ids = call_ids(invites)
        assert ids[0] == ids[1] != ids[2], ids
        assert f"m=audio {participant.port} RTP/AVP 0 101" in invites[2]  # the same offer
        assert first.session.terminated.done()
        assert first.session.terminated.result() == f"refresh got {status}"
        second = engine.leg(ROOM, ALICE)
        assert second is not None and second is not first and second.node == first.node
        assert (moved.answer.address, moved.answer.accept.port) == ("127.0.0.1", node.media_port)
        assert await echoed(participant, moved.answer.address, moved.answer.accept.port) == rtp(1)
        assert not [e for e in events.seen if isinstance(e, AudioLost)]

        # The new leg's refresh is refused too, within the minute: the audio is lost now.
        lost = await events.wait(lambda e: isinstance(e, AudioLost))
        assert isinstance(lost, AudioLost) and lost.participant == ALICE
        assert "lost the audio leg again" in lost.reason, lost.reason
        assert engine.leg(ROOM, ALICE) is None
        assert sum(isinstance(e, StreamMoved) for e in events.seen) == 1
