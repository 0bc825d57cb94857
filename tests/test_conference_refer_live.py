"""REFER to a room through a real ``chorus serve`` (issue 10 item 3, "Must show"), with SIPp
as the referred targets (tests/sipp/uas_refer_*.xml) and Python participants (our own UA
core, tests/peers/sipclient.py) as referrers, in and out of dialog:

- ``method=INVITE`` to a SIPp UAS that rings, then answers 200 with its offer (the focus's
  INVITE had none, its ACK carries the answer): the referrer gets sipfrag NOTIFYs 100, 180,
  200, and the target is in the room: with SIPp echoing every RTP packet back, the referrer
  hears its own tone, which the mix-minus room never returns to it directly (FFT);
- an unresolvable target (``.invalid``, RFC 6761) → final NOTIFY 503; a busy one → 486; one
  that only rings → CANCEL after ``refer_timeout``, final 408; one whose offer holds nothing
  the room takes → ACK refusing every m-line, BYE, final 488;
- ``Refer-Sub: false`` (RFC 4488) → 202 with ``Refer-Sub: false``, the target joins, and no
  NOTIFY crosses the wire (the server's SIP trace);
- ``method=BYE`` removes exactly the named participant (the others stay), 404 for nobody;
- a target outside ``refer_allow`` → 403; a participant who is not a moderator can neither
  remove (kick) nor invite → 403; with ``refer_policy = "participants"`` anyone in the room
  invites, still only a moderator removes;
- SIPp itself as the referrer (tests/sipp/uac_refer.xml), out of dialog and out of the room,
  a moderator by ``[conference] moderators``: removes one participant, adds a SIPp target;
- the room ending while a target rings: CANCEL, final 487.
- a transfer (Refer-To with ``Replaces``), another method, a REFER to no live room: 403.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from control.sip.message import Request
from control.sip.subscription import EventKey
from control.sip.transport import Peer
from control.sip.useragent import IncomingRequest, UserAgent
from tests.peers.chorus import ChorusProcess
from tests.peers.ports import free_port
from tests.peers.sipp import SippUas, run_sipp_async
from tests.peers.siptrace import call_messages
from tests.test_conference import ABSENT, HEARD
from tests.test_conference_info_live import notify_bodies
from tests.test_moderation_live import AdminClient, Caller, heard

pytestmark = [pytest.mark.timeout(180), pytest.mark.peer("sipp")]

TONE = 700.0
FINAL_WAIT = 20.0  # seconds a test waits for a final NOTIFY before failing (not a threshold)


@pytest.fixture(scope="module")
def chorus() -> Iterator[ChorusProcess]:
    settings: dict[str, dict[str, Any]] = {
        "rtp": {"timeout": 120.0},
        "conference": {
            "refer_allow": ["127.0.0.1", "*.invalid"],
            "refer_timeout": 3.0,
            "moderators": ["sip:operator@127.0.0.1"],  # SIPp's uac_refer.xml, out of the room
        },
    }
    with ChorusProcess(settings) as process:
        yield process
        assert process.alive, process.log()
        assert "Traceback" not in process.log(), process.log()


@pytest.fixture
async def admin(chorus: ChorusProcess) -> AsyncIterator[AdminClient]:
    yield AdminClient(chorus)


class ReferWatcher:
    """The referrer's side of the implicit subscription (RFC 3515 §2.4.4): a dialog usage of
    the referrer's UA that answers each NOTIFY 200 and keeps its sipfrag status line."""

    def __init__(self, ua: UserAgent) -> None:
        self.ua = ua
        self.notifies: list[Request] = []
        self.final: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def watch(self, dialog: tuple[str, str, str], cseq: int) -> None:
        self.ua.add_usage(dialog, EventKey("refer", str(cseq)), self)

    def handle_request(self, incoming: IncomingRequest) -> None:
        request = incoming.request
        incoming.respond(200 if request.method == "NOTIFY" else 405)
        if request.method != "NOTIFY":
            return
        self.notifies.append(request)
        state = request.headers.get("Subscription-State") or ""
        if state.startswith("terminated") and not self.final.done():
            self.final.set_result(None)

    def handle_ack(self, request: Request, peer: Peer) -> None:
        pass

    @property
    def statuses(self) -> list[int]:
        """The status of each sipfrag body (``SIP/2.0 180 Ringing``), in order."""
        return [int(n.body.split(b" ", 2)[1]) for n in self.notifies]

    @property
    def last_line(self) -> str:
        return self.notifies[-1].body.decode().strip() if self.notifies else ""

    async def wait_final(self) -> list[int]:
        await asyncio.wait_for(asyncio.shield(self.final), FINAL_WAIT)
        assert all(
            (n.headers.get("Content-Type") or "").startswith("message/sipfrag")
            for n in self.notifies
        )
        return self.statuses


def refer_to(target: str, method: str) -> tuple[str, str]:
    return ("Refer-To", f"<{target};method={method}>")


async def refer_in_dialog(
    caller: Caller, target: str, method: str, extra: list[tuple[str, str]] | None = None
) -> tuple[int, str, ReferWatcher]:
    """REFER inside the caller's conference dialog (RFC 4579 §5.5)."""
    session = caller.session
    assert session is not None
    watcher = ReferWatcher(caller.client.ua)
    watcher.watch(session.dialog.id, session.dialog.local_seq + 1)  # before any NOTIFY
    response = await session.request(
        "REFER", extra_headers=[refer_to(target, method), *(extra or [])]
    )
    return response.status, response.reason, watcher


async def refer_out_of_dialog(
    caller: Caller,
    chorus: ChorusProcess,
    room: str,
    target: str,
    method: str,
    extra: list[tuple[str, str]] | None = None,
) -> tuple[int, str, ReferWatcher, dict[str, str]]:
    """REFER to the room's URI from the caller's identity, outside any dialog."""
    watcher = ReferWatcher(caller.client.ua)
    outgoing = caller.client.request(
        "REFER",
        f"sip:{room}@127.0.0.1:{chorus.sip_port}",
        chorus.sip_port,
        extra_headers=[refer_to(target, method), *(extra or [])],
    )
    response = await outgoing.final
    request = outgoing.request
    if response.to.tag is not None and request.from_.tag is not None:
        watcher.watch((request.call_id, request.from_.tag, response.to.tag), request.cseq.number)
    headers = {name: response.headers.get(name) or "" for name in ("Refer-Sub", "Call-ID")}
    return response.status, response.reason, watcher, headers


def echoing_target(scenario: str = "uas_refer_delayed") -> SippUas:
    return SippUas(scenario, extra_args=["-rtp_echo", "-mp", str(free_port("udp"))])


async def participants(admin: AdminClient, room: str) -> set[str]:
    status, data = await admin.call("GET", f"/api/rooms/{room}")
    assert status == 200, data
    return {p["uri"] for p in data["participants"]}


async def settled(admin: AdminClient, room: str, expected: set[str]) -> set[str]:
    """The room's participants once they are ``expected`` (polling the API a while: joins
    and leaves follow the final NOTIFY by a message or two, not a timing assertion)."""
    found = await participants(admin, room)
    for _ in range(100):
        if found == expected:
            break
        await asyncio.sleep(0.1)
        found = await participants(admin, room)
    return found


async def test_refer_invite_target_joins_with_a_delayed_offer_and_hears_the_room(
    chorus: ChorusProcess, admin: AdminClient
) -> None:
    alice = Caller("alice", 21)
    try:
        assert (await alice.call(chorus, "dialout"))[0] == 200  # the creator: a moderator
        # Mix-minus: alone in the room, alice does not hear her own tone.
        assert await heard(alice.audio, alice.audio, TONE) < ABSENT, "own tone returned"
        with echoing_target() as target:
            uri = f"sip:target@127.0.0.1:{target.port}"
            extra = [("Referred-By", "<sip:alice@127.0.0.1>")]
            status, _, watcher = await refer_in_dialog(alice, uri, "INVITE", extra)
            assert status == 202
            assert await watcher.wait_final() == [100, 180, 200], watcher.notifies
            assert await participants(admin, "dialout") == {
                "sip:alice@127.0.0.1",
                "sip:target@127.0.0.1",
            }
            # The room sends SIPp alice's audio; SIPp sends it back; the room mixes it to
            # alice: the target hears the room and is heard in it.
            assert await heard(alice.audio, alice.audio, TONE) > HEARD, "target hears nothing"
            status, _, kick = await refer_in_dialog(alice, uri, "BYE")
            assert status == 202
            assert await kick.wait_final() == [100, 200]
            assert await settled(admin, "dialout", {"sip:alice@127.0.0.1"}) == {
                "sip:alice@127.0.0.1"
            }
            result = await target.astop()
        assert result.stats is not None and result.stats.successful == 1, result.describe()
        assert result.stats.failed == 0, result.describe()
    finally:
        await alice.close()


async def test_unresolvable_target_gets_a_final_503(chorus: ChorusProcess) -> None:
    alice = Caller("alice", 22)
    try:
        assert (await alice.call(chorus, "nowhere"))[0] == 200
        status, _, watcher = await refer_in_dialog(alice, "sip:bob@nohost.invalid", "INVITE")
        assert status == 202
        assert await watcher.wait_final() == [100, 503]
        state = watcher.notifies[-1].headers.get("Subscription-State") or ""
        assert state.startswith("terminated;reason=noresource"), state
    finally:
        await alice.close()


@pytest.mark.parametrize(
    ("scenario", "statuses"),
    [
        ("uas_refer_busy", [100, 180, 486]),
        ("uas_refer_ringing", [100, 180, 408]),  # refer_timeout: CANCEL, then 408
        ("uas_refer_video", [100, 488]),  # nothing the room takes: ACK refusing it, BYE
    ],
    ids=["busy", "no-answer", "no-acceptable-stream"],
)
async def test_failed_target_gets_a_final_notify(
    chorus: ChorusProcess, admin: AdminClient, scenario: str, statuses: list[int]
) -> None:
    alice = Caller("alice", 23)
    room = f"fail-{scenario}"
    try:
        assert (await alice.call(chorus, room))[0] == 200
        with echoing_target(scenario) as target:
            uri = f"sip:target@127.0.0.1:{target.port}"
            status, _, watcher, _ = await refer_out_of_dialog(alice, chorus, room, uri, "INVITE")
            assert status == 202
            assert await watcher.wait_final() == statuses, watcher.notifies
            result = await target.astop()
        # SIPp saw the whole exchange it expects: the ACK, the CANCEL, the refusing answer.
        assert result.stats is not None and result.stats.successful == 1, result.describe()
        assert await participants(admin, room) == {"sip:alice@127.0.0.1"}
    finally:
        await alice.close()


async def test_refer_sub_false_sends_no_notify(chorus: ChorusProcess, admin: AdminClient) -> None:
    alice = Caller("alice", 24)
    try:
        assert (await alice.call(chorus, "quiet"))[0] == 200
        with echoing_target() as target:
            uri = f"sip:target@127.0.0.1:{target.port}"
            quiet = [("Refer-Sub", "false")]
            status, _, _, headers = await refer_out_of_dialog(
                alice, chorus, "quiet", uri, "INVITE", quiet
            )
            assert (status, headers["Refer-Sub"]) == (202, "false")
            both = {"sip:alice@127.0.0.1", "sip:target@127.0.0.1"}
            assert await settled(admin, "quiet", both) == both
            status, _, _, bye_headers = await refer_out_of_dialog(
                alice, chorus, "quiet", uri, "BYE", quiet
            )
            assert status == 202
            result = await target.astop()
        assert result.stats is not None and result.stats.successful == 1, result.describe()
        trace = chorus.trace()
        for call_id in (headers["Call-ID"], bye_headers["Call-ID"]):
            methods = [m.method or m.cseq_method for m in call_messages(trace, call_id)]
            assert "REFER" in methods and "NOTIFY" not in methods, methods
    finally:
        await alice.close()


async def test_refer_bye_removes_exactly_the_named_participant(
    chorus: ChorusProcess, admin: AdminClient
) -> None:
    alice, bob, carol = Caller("alice", 25), Caller("bob", 26), Caller("carol", 27)
    try:
        for caller in (alice, bob, carol):
            assert (await caller.call(chorus, "trim"))[0] == 200
        status, _, watcher, _ = await refer_out_of_dialog(
            alice, chorus, "trim", "sip:bob@127.0.0.1", "BYE"
        )
        assert status == 202
        assert await watcher.wait_final() == [100, 200]
        assert bob.session is not None
        assert await asyncio.wait_for(bob.session.terminated, FINAL_WAIT) == "remote BYE"
        assert await participants(admin, "trim") == {"sip:alice@127.0.0.1", "sip:carol@127.0.0.1"}
        assert alice.session is not None and not alice.session.terminated.done()
        assert carol.session is not None and not carol.session.terminated.done()
        status, _, nobody, _ = await refer_out_of_dialog(
            alice, chorus, "trim", "sip:nobody@127.0.0.1", "BYE"
        )
        assert status == 202
        assert await nobody.wait_final() == [100, 404]
        assert await participants(admin, "trim") == {"sip:alice@127.0.0.1", "sip:carol@127.0.0.1"}
    finally:
        for caller in (alice, bob, carol):
            await caller.close()


async def test_target_outside_refer_allow_is_403(chorus: ChorusProcess) -> None:
    alice = Caller("alice", 28)
    try:
        assert (await alice.call(chorus, "tollfree"))[0] == 200
        for target in ("sip:+19005550100@198.51.100.7", "sip:bob@example.com"):
            status, reason, watcher = await refer_in_dialog(alice, target, "INVITE")
            assert (status, reason) == (403, "Target not allowed")
            assert not watcher.notifies
        status, reason, _ = await refer_in_dialog(alice, "tel:+19005550100", "INVITE")
        assert (status, reason) == (403, "Only SIP targets may be referred")
    finally:
        await alice.close()


async def test_non_moderator_can_neither_kick_nor_invite(
    chorus: ChorusProcess, admin: AdminClient
) -> None:
    alice, bob = Caller("alice", 29), Caller("bob", 30)
    try:
        assert (await alice.call(chorus, "ranks"))[0] == 200  # the creator moderates
        assert (await bob.call(chorus, "ranks"))[0] == 200
        status, reason, _ = await refer_in_dialog(bob, "sip:alice@127.0.0.1", "BYE")
        assert (status, reason) == (403, "Only a moderator may remove participants")
        status, reason, _, _ = await refer_out_of_dialog(
            bob, chorus, "ranks", "sip:alice@127.0.0.1", "BYE"
        )
        assert (status, reason) == (403, "Only a moderator may remove participants")
        status, reason, _ = await refer_in_dialog(bob, "sip:carol@127.0.0.1", "INVITE")
        assert (status, reason) == (403, "Only a moderator may invite")
        assert await participants(admin, "ranks") == {"sip:alice@127.0.0.1", "sip:bob@127.0.0.1"}
        assert alice.session is not None and not alice.session.terminated.done()
    finally:
        for caller in (alice, bob):
            await caller.close()


async def sipp_refer(chorus: ChorusProcess, room: str, target: str, method: str) -> list[int]:
    """SIPp's REFER (tests/sipp/uac_refer.xml, From the operator): the sipfrag statuses of
    the NOTIFYs it got, in order."""
    result = await run_sipp_async(
        "uac_refer",
        f"127.0.0.1:{chorus.sip_port}",
        service=room,
        keys={"target": target, "method": method},
        trace_messages=True,
        timeout=60,
    )
    assert result.ok, result.describe()
    bodies = notify_bodies(result.messages)
    assert bodies and bodies[-1][0].startswith("terminated"), bodies
    return [int(body.split(b" ", 2)[1]) for _, body in bodies]


async def test_sipp_operator_refers_out_of_dialog(
    chorus: ChorusProcess, admin: AdminClient
) -> None:
    # The operator is in no dialog and not in the room: a moderator by [conference]
    # moderators, known by its From URI alone.
    alice, bob = Caller("alice", 34), Caller("bob", 35)
    try:
        for caller in (alice, bob):
            assert (await caller.call(chorus, "ops"))[0] == 200
        assert await sipp_refer(chorus, "ops", "sip:bob@127.0.0.1", "BYE") == [100, 200]
        assert bob.session is not None
        assert await asyncio.wait_for(bob.session.terminated, FINAL_WAIT) == "remote BYE"
        with echoing_target() as target:
            uri = f"sip:target@127.0.0.1:{target.port}"
            assert await sipp_refer(chorus, "ops", uri, "INVITE") == [100, 180, 200]
            both = {"sip:alice@127.0.0.1", "sip:target@127.0.0.1"}
            assert await settled(admin, "ops", both) == both
            assert await sipp_refer(chorus, "ops", uri, "BYE") == [100, 200]
            result = await target.astop()
        assert result.stats is not None and result.stats.successful == 1, result.describe()
        assert await settled(admin, "ops", {"sip:alice@127.0.0.1"}) == {"sip:alice@127.0.0.1"}
    finally:
        for caller in (alice, bob):
            await caller.close()


@pytest.fixture(scope="module")
def open_chorus() -> Iterator[ChorusProcess]:
    """A server where any participant may invite, and whose refer_timeout never comes into
    a test: only the room's end cancels a ringing INVITE there."""
    settings: dict[str, dict[str, Any]] = {
        "conference": {
            "refer_policy": "participants",
            "refer_allow": ["127.0.0.1"],
            "refer_timeout": 600.0,
        }
    }
    with ChorusProcess(settings) as process:
        yield process
        assert process.alive, process.log()
        assert "Traceback" not in process.log(), process.log()


async def test_room_ending_while_the_target_rings_cancels_it_final_487(
    open_chorus: ChorusProcess,
) -> None:
    alice = Caller("alice", 31)
    try:
        assert (await alice.call(open_chorus, "brief"))[0] == 200
        with echoing_target("uas_refer_ringing") as target:
            uri = f"sip:target@127.0.0.1:{target.port}"
            status, _, watcher, _ = await refer_out_of_dialog(
                alice, open_chorus, "brief", uri, "INVITE"
            )
            assert status == 202
            for _ in range(200):  # until the target rings (polling, not a threshold)
                if 180 in watcher.statuses:
                    break
                await asyncio.sleep(0.05)
            assert watcher.statuses == [100, 180]
            assert alice.session is not None
            await alice.session.bye()  # the last one leaves: the room ends
            assert await watcher.wait_final() == [100, 180, 487]
            assert watcher.last_line == "SIP/2.0 487 Room ended"
            result = await target.astop()
        assert result.stats is not None and result.stats.successful == 1, result.describe()
    finally:
        await alice.close()


async def test_participants_policy_lets_anyone_invite_but_not_kick(
    open_chorus: ChorusProcess,
) -> None:
    admin = AdminClient(open_chorus)
    alice, bob = Caller("alice", 32), Caller("bob", 33)
    try:
        assert (await alice.call(open_chorus, "open"))[0] == 200  # the creator moderates
        assert (await bob.call(open_chorus, "open"))[0] == 200
        with echoing_target() as target:
            uri = f"sip:target@127.0.0.1:{target.port}"
            status, _, watcher = await refer_in_dialog(bob, uri, "INVITE")
            assert status == 202
            assert await watcher.wait_final() == [100, 180, 200]
            everyone = {"sip:alice@127.0.0.1", "sip:bob@127.0.0.1", "sip:target@127.0.0.1"}
            assert await settled(admin, "open", everyone) == everyone
            status, reason, _ = await refer_in_dialog(bob, uri, "BYE")
            assert (status, reason) == (403, "Only a moderator may remove participants")
            status, _, kick = await refer_in_dialog(alice, uri, "BYE")
            assert status == 202
            assert await kick.wait_final() == [100, 200]
            result = await target.astop()
        assert result.stats is not None and result.stats.successful == 1, result.describe()
    finally:
        for caller in (alice, bob):
            await caller.close()


async def test_transfer_and_refer_to_no_room_are_403(chorus: ChorusProcess) -> None:
    alice = Caller("alice", 36)
    try:
        assert (await alice.call(chorus, "xfer"))[0] == 200
        status, reason, _, _ = await refer_out_of_dialog(
            alice, chorus, "no-such-room", "sip:bob@127.0.0.1", "INVITE"
        )
        assert (status, reason) == (403, "No such room (call transfer is not supported)")
        session = alice.session
        assert session is not None
        replaces = "<sip:bob@127.0.0.1?Replaces=abc%3Bto-tag%3D1%3Bfrom-tag%3D2>"
        response = await session.request("REFER", extra_headers=[("Refer-To", replaces)])
        assert (response.status, response.reason) == (403, "Call transfer is not supported")
        status, reason, _ = await refer_in_dialog(alice, "sip:bob@127.0.0.1", "SUBSCRIBE")
        assert (status, reason) == (403, "Method SUBSCRIBE is not referred by a room")
        assert not session.terminated.done()
    finally:
        await alice.close()


async def test_options_advertise_norefersub(chorus: ChorusProcess) -> None:
    # RFC 4488 §4: a UA that honours Refer-Sub: false says so with Supported: norefersub.
    alice = Caller("alice", 37)
    try:
        await alice.client.__aenter__()
        response = await alice.client.request(
            "OPTIONS", f"sip:xfer@127.0.0.1:{chorus.sip_port}", chorus.sip_port
        ).final
        assert response.status == 200
        supported = {
            token.strip()
            for value in response.headers.get_all("Supported")
            for token in value.split(",")
        }
        assert {"timer", "norefersub"} <= supported, supported
    finally:
        await alice.close()
