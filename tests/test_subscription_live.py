"""RFC 6665 subscriptions through a real ``chorus serve`` driven by SIPp (issue 10 items 1, 2):

- ``Expires`` below ``[sip] subscription_min_expires`` is 423 with that ``Min-Expires``;
- an event package the room does not offer is 489 with ``Allow-Events: conference``;
- ``[sip] max_subscriptions_per_source`` live subscriptions from one address: one more is 503
  with Retry-After; once they end, that address subscribes again;
- a participant subscribes inside its own INVITE dialog (tests/sipp/uac_subscribe_in_dialog.xml):
  the full NOTIFY comes in that dialog, its BYE ends the INVITE usage only (a partial NOTIFY
  deletes it from the room and the subscription goes on), a refresh in the dialog gets 200 and
  a full document, ``Expires: 0`` the terminated NOTIFY with the current state (the next
  version), and a SUBSCRIBE for a new id in the
  dialog, which holds no usage any more, 481.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from control.xmlsafe import parse
from tests.peers.chatclient import ChatClient
from tests.peers.chorus import ChorusProcess
from tests.peers.confinfo import Rebuilder
from tests.peers.sipp import SippResult, run_sipp_async
from tests.peers.wait import wait_until

pytestmark = [pytest.mark.timeout(240), pytest.mark.peer("sipp")]

SCHEMA = etree.XMLSchema(etree.parse(str(Path(__file__).parent / "data" / "conference-info.xsd")))
MIN_EXPIRES = 120
PER_SOURCE = 2
SUBSCRIBED = "conference-info subscription to "  # the server's log line for each one accepted


@dataclass(frozen=True)
class Traced:
    """One message of a SIPp -trace_msg log."""

    received: bool
    start: str
    headers: dict[str, str]  # lower-case names, the first value of each
    body: bytes

    @property
    def method(self) -> str | None:
        return None if self.start.startswith("SIP/2.0") else self.start.split()[0]

    @property
    def status(self) -> int | None:
        return int(self.start.split()[1]) if self.start.startswith("SIP/2.0") else None

    @property
    def cseq(self) -> tuple[int, str]:
        number, method = self.headers["cseq"].split()
        return int(number), method


def traced(log: str) -> list[Traced]:
    """The messages of a trace, in order: a dashed line, "message sent|received", a blank
    line, the message."""
    out = []
    for block in re.split(r"^-{10,}[^\n]*\n", log, flags=re.M):
        first, _, message = block.partition("\n")
        message = message.strip()
        if not message or ("received" not in first and "sent" not in first):
            continue
        head, _, body = message.replace("\r\n", "\n").partition("\n\n")
        start, *lines = head.split("\n")
        headers: dict[str, str] = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers.setdefault(name.strip().lower(), value.strip())
        out.append(Traced("received" in first, start.strip(), headers, body.strip().encode()))
    return out


def answers(messages: list[Traced]) -> list[Traced]:
    return [m for m in messages if m.received and m.status is not None]


@pytest.fixture(scope="module")
def chorus() -> Iterator[ChorusProcess]:
    settings: dict[str, dict[str, Any]] = {
        "sip": {
            "subscription_min_expires": MIN_EXPIRES,
            "max_subscriptions_per_source": PER_SOURCE,
        },
        "rtp": {"timeout": 120.0},
        "conference": {"info_interval": 0.0},
    }
    with ChorusProcess(settings) as process:
        yield process
        assert process.alive, process.log()
        assert "Traceback" not in process.log(), process.log()


async def refused(chorus: ChorusProcess, room: str, event: str, expires: int) -> Traced:
    result = await run_sipp_async(
        "uac_subscribe_refused",
        f"127.0.0.1:{chorus.sip_port}",
        service=room,
        keys={"event": event, "expires": str(expires)},
        trace_messages=True,
        timeout=30,
    )
    assert result.ok, result.describe() + result.messages[-3000:]
    [answer] = [a for a in answers(traced(result.messages)) if a.status != 100]
    return answer


async def test_expires_below_the_floor_is_423_with_min_expires(chorus: ChorusProcess) -> None:
    async with ChatClient("alice", "Alice") as alice:
        await alice.join(chorus, "floor", secure=False)
        answer = await refused(chorus, "floor", "conference", MIN_EXPIRES - 1)
        assert answer.status == 423
        assert answer.headers["min-expires"] == str(MIN_EXPIRES)


async def test_unknown_event_is_489_with_allow_events(chorus: ChorusProcess) -> None:
    async with ChatClient("alice", "Alice") as alice:
        await alice.join(chorus, "events", secure=False)
        answer = await refused(chorus, "events", "presence", 600)
        assert answer.status == 489
        assert answer.headers["allow-events"] == "conference"


def watch(chorus: ChorusProcess, room: str) -> asyncio.Task[SippResult]:
    """A SIPp watcher of ``room`` (tests/sipp/uac_subscribe_conference.xml): it ends OK when
    a NOTIFY says terminated."""
    return asyncio.create_task(
        run_sipp_async(
            "uac_subscribe_conference",
            f"127.0.0.1:{chorus.sip_port}",
            service=room,
            trace_messages=True,
            timeout=120,
        )
    )


async def accepted(chorus: ChorusProcess, count: int) -> bool:
    """The server has logged ``count`` accepted conference-info subscriptions."""
    return await wait_until(lambda: chorus.log().count(SUBSCRIBED) == count, timeout=30)


async def test_one_subscription_past_the_per_source_limit_is_503(chorus: ChorusProcess) -> None:
    async with ChatClient("alice", "Alice") as alice_client:
        alice = await alice_client.join(chorus, "crowded", secure=False)
        before = chorus.log().count(SUBSCRIBED)
        watchers = []
        for n in range(1, PER_SOURCE + 1):
            watchers.append(watch(chorus, "crowded"))
            assert await accepted(chorus, before + n), chorus.log()[-3000:]
        answer = await refused(chorus, "crowded", "conference", 600)
        assert answer.status == 503 and "retry-after" in answer.headers
        assert "subscription limit reached for 127.0.0.1" in chorus.log()
        await alice.leave()  # the room ends: each watcher gets its terminated NOTIFY
        for result in await asyncio.gather(*watchers):
            assert result.ok, result.describe()
        # Ended subscriptions no longer count: the same address subscribes again.
        alice = await alice_client.join(chorus, "crowded", secure=False)
        again = watch(chorus, "crowded")
        assert await accepted(chorus, before + PER_SOURCE + 1), chorus.log()[-3000:]
        await alice.leave()
        result = await again
        assert result.ok, result.describe()


async def test_subscription_inside_the_invite_dialog_outlives_its_bye(
    chorus: ChorusProcess,
) -> None:
    async with ChatClient("alice", "Alice") as alice_client:
        alice = await alice_client.join(chorus, "dialogs", secure=False)
        result = await run_sipp_async(
            "uac_subscribe_in_dialog",
            f"127.0.0.1:{chorus.sip_port}",
            service="dialogs",
            trace_messages=True,
            timeout=120,
        )
        messages = traced(result.messages)
        assert result.ok, result.describe() + result.messages[-4000:]
        # Every answer to what SIPp sent, by CSeq.
        status = {a.cseq: a.status for a in answers(messages) if a.status != 100}
        assert status == {
            (1, "INVITE"): 200,
            (2, "SUBSCRIBE"): 200,
            (3, "BYE"): 200,
            (4, "SUBSCRIBE"): 200,
            (5, "SUBSCRIBE"): 200,
            (6, "SUBSCRIBE"): 481,
        }, status
        invite_ok = next(
            a for a in answers(messages) if a.cseq == (1, "INVITE") and a.status == 200
        )
        dialog = (invite_ok.headers["call-id"], invite_ok.headers["to"])
        notifies = [m for m in messages if m.received and m.method == "NOTIFY"]
        # All in the INVITE's dialog (same Call-ID, the focus's tag as From).
        for notify in notifies:
            assert notify.headers["call-id"] == dialog[0]
            ours = re.search(r"tag=([^;>\s]+)", dialog[1])
            assert ours and f"tag={ours.group(1)}" in notify.headers["from"]
        # Where each NOTIFY falls: after which of SIPp's requests it came.
        phases: list[tuple[int, Traced]] = []
        step = 1
        for message in messages:
            if not message.received and message.method in ("SUBSCRIBE", "BYE"):
                step = message.cseq[0]
            elif message.received and message.method == "NOTIFY":
                phases.append((step, message))
        rebuilt = Rebuilder()
        sipp_in_room: list[tuple[int, bool, str]] = []
        for step, notify in phases:
            root = parse(notify.body)
            SCHEMA.assertValid(root)
            model = rebuilt.apply(notify.body)
            present = any(entity.startswith("sip:sipp@") for entity in model.users)
            sipp_in_room.append((step, present, root.get("state") or ""))
        assert "terminated" not in notifies[0].headers["subscription-state"]
        assert sipp_in_room[0] == (2, True, "full"), sipp_in_room
        # After the BYE a partial deletes sipp; the subscription still gets documents.
        assert any(step >= 3 and not present for step, present, _ in sipp_in_room), sipp_in_room
        assert any(s == 4 and not p and state == "full" for s, p, state in sipp_in_room), (
            sipp_in_room
        )
        final = notifies[-1]
        assert final.headers["subscription-state"] == "terminated;reason=timeout"
        # The unsubscribe's NOTIFY carries the current state, the next version (§4.2.1.4).
        versions = [int(parse(n.body).get("version") or 0) for n in notifies]
        assert versions == list(range(1, len(notifies) + 1)), versions
        assert parse(final.body).get("state") == "full"
        assert all("terminated" not in n.headers["subscription-state"] for n in notifies[:-1])
        assert any("sip:alice@" in entity for entity in rebuilt.model.users)  # room goes on
        assert alice.session is not None and alice.session.dialog is not None
        await alice.leave()
