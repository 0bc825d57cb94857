"""Conference information through a real `chorus serve` (issue 10 item 2, "Must show").

A SIPp watcher (tests/sipp/uac_subscribe_conference.xml) SUBSCRIBEs `Event: conference` to a
room alice is in, receives the full document at once, partial documents with versions going up
by one as bob joins and leaves, and a final NOTIFY (terminated) when alice leaves and the room
ends. Every body validates against the RFC 4575 schema and a watcher applying them
(tests/peers/confinfo.py) sees bob come and go; the room it rebuilt with bob in it is the
admin API's view of the room at that time (identities, roles, media). A SUBSCRIBE to a room
nobody is in gets 404.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import aiohttp
import pytest
from lxml import etree

from control.xmlsafe import parse
from tests.peers.chatclient import ChatClient
from tests.peers.chorus import ChorusProcess
from tests.peers.confinfo import ConfModel, Rebuilder
from tests.peers.ports import free_ports
from tests.peers.sipp import run_sipp_async
from tests.peers.wait import wait_until

pytestmark = [pytest.mark.timeout(180), pytest.mark.peer("sipp")]

SCHEMA = etree.XMLSchema(etree.parse(str(Path(__file__).parent / "data" / "conference-info.xsd")))
SUBSCRIBED = "conference-info subscription"  # the server's log line for an accepted SUBSCRIBE


def notify_bodies(trace: str) -> list[tuple[str, bytes]]:
    """(Subscription-State, body) of each NOTIFY SIPp received, in order. The -trace_msg
    log is a dashed line per message, a "message received" line, a blank line, the message."""
    out = []
    for block in re.split(r"^-{10,}[^\n]*\n", trace, flags=re.M):
        _, _, message = block.partition("\n")
        message = message.strip()
        if not message.startswith("NOTIFY "):
            continue
        head, _, body = message.partition("\n\n")
        state = re.search(r"^Subscription-State:\s*(.*)$", head, re.M | re.I)
        out.append((state.group(1).strip() if state else "", body.strip().encode()))
    return out


TOKEN = "watcher-test-token-0123456789"
_TYPES = {"audio": "audio", "chat": "message", "file": "file"}


async def admin_view(port: int, room: str) -> dict[str, tuple[str, tuple[str, ...]]]:
    """The room as the admin API shows it: per SIP identity, its role and its media types."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"http://127.0.0.1:{port}/api/rooms/{room}",
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as response,
    ):
        assert response.status == 200
        data = await response.json()
    return {
        p["uri"]: (p["role"], tuple(_TYPES[s["kind"]] for s in p["streams"]))
        for p in data["participants"]
        if not p["transfer_only"]
    }


def watcher_view(model: ConfModel) -> dict[str, tuple[str, tuple[str, ...]]]:
    return {
        entity: (
            ",".join(user["roles"]),
            tuple(m[1] for ep in user["endpoints"].values() for m in ep[3]),
        )
        for entity, user in model.users.items()
    }


async def test_sipp_watcher_gets_full_then_partials_then_terminated() -> None:
    (api_port,) = free_ports(1)
    settings = {
        "conference": {"info_interval": 0.0},
        "api": {"listen": f"http:127.0.0.1:{api_port}", "token": TOKEN},
    }
    with ChorusProcess(settings) as chorus:
        async with (
            ChatClient("alice", "Alice") as alice_client,
            ChatClient("bob", "Bob") as bob_client,
        ):
            alice = await alice_client.join(chorus, "watched", secure=False)
            watcher = asyncio.create_task(
                run_sipp_async(
                    "uac_subscribe_conference",
                    f"127.0.0.1:{chorus.sip_port}",
                    service="watched",
                    trace_messages=True,
                    timeout=120,
                )
            )
            assert await wait_until(lambda: SUBSCRIBED in chorus.log(), timeout=30), chorus.log()
            bob = await bob_client.join(chorus, "watched", secure=False)
            await asyncio.sleep(0.5)  # bob's join NOTIFY goes out before he leaves (not timed)
            api_view = await admin_view(api_port, "watched")
            await bob.leave()
            await asyncio.sleep(0.5)
            await alice.leave()
            result = await watcher
        assert result.ok, result.describe()
        notifies = notify_bodies(result.messages)
        assert len(notifies) >= 3, result.messages[-4000:]
        assert notifies[-1][0].startswith("terminated"), notifies[-1][0]
        rebuilt = Rebuilder()
        versions, saw_bob = [], False
        for index, (_, body) in enumerate(notifies):
            root = parse(body)
            SCHEMA.assertValid(root)
            assert root.get("state") == ("full" if index == 0 else "partial")
            versions.append(int(root.get("version") or 0))
            model = rebuilt.apply(body)
            if not saw_bob and any("bob" in entity for entity in model.users):
                saw_bob = True
                # The watcher's room with bob in it is the admin API's room at that time.
                assert watcher_view(model) == api_view, (watcher_view(model), api_view)
        assert versions == list(range(1, len(versions) + 1)), versions
        assert saw_bob, "bob's join never showed"
        assert rebuilt.model.users == {} and rebuilt.model.state["active"] == "false"
        assert "Traceback" not in chorus.log(), chorus.log()


async def test_subscribe_to_a_room_nobody_is_in_is_404() -> None:
    with ChorusProcess({}) as chorus:
        result = await run_sipp_async(
            "uac_subscribe_conference",
            f"127.0.0.1:{chorus.sip_port}",
            service="nobody-here",
            trace_messages=True,
            timeout=20,
        )
        assert not result.ok
        assert re.search(r"^SIP/2.0 404 ", result.messages, re.M), result.messages[-2000:]
