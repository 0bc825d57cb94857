"""The ``chorus`` admin commands (control/admincli.py) as an operator runs them: subprocesses
against a real ``chorus serve`` with people in a room, the API's URL and token read from the
node's configuration and spool.

The CLI lists the live room (table and ``--json``), shows its participants, kicks exactly the
named participant of the live room (its session gets BYE, the others stay and are told), a
wrong token and an unknown participant fail with the API's status, lock/pin/end act on the
room, and ``chorus api-token`` prints the spool's token.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator

import pytest

from tests.peers.chatclient import ChatClient
from tests.peers.chorus import ROOT, ChorusProcess

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def chorus() -> Iterator[ChorusProcess]:
    with ChorusProcess() as process:
        yield process
        assert process.alive, process.log()
        assert "Traceback" not in process.log(), process.log()


async def cli(chorus: ChorusProcess, *args: str) -> tuple[int, str, str]:
    """``chorus ARGS --config <the node's>``, run while this loop keeps the SIP peers going."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "control.cli",
        *args,
        "--config",
        str(chorus.config_path),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_cli_lists_rooms_and_kicks_a_participant(chorus: ChorusProcess) -> None:
    async with (
        ChatClient("alice", "Alice") as alice_client,
        ChatClient("bob", "Bob") as bob_client,
        ChatClient("carol", "Carol") as carol_client,
    ):
        alice = await alice_client.join(chorus, "standup")
        bob = await bob_client.join(chorus, "standup")
        carol = await carol_client.join(chorus, "standup")

        status, out, err = await cli(chorus, "rooms")
        assert status == 0, err
        header, rule, line = out.splitlines()
        assert header.split() == ["ROOM", "PEOPLE", "FLAGS", "AGE"]
        assert set(rule) <= {"-", " "}
        assert line.split()[:3] == ["standup@127.0.0.1", "3/100", "-"]

        status, out, err = await cli(chorus, "room", "show", "standup", "--json")
        assert status == 0, err
        room = json.loads(out)
        assert sorted(p["name"] for p in room["participants"]) == ["Alice", "Bob", "Carol"]
        roles = {p["name"]: p["role"] for p in room["participants"]}
        assert roles == {"Alice": "moderator", "Bob": "participant", "Carol": "participant"}

        status, out, err = await cli(chorus, "room", "show", "standup")
        assert status == 0, err
        assert "sip:bob@127.0.0.1" in out and "moderator" in out

        status, out, err = await cli(chorus, "kick", "standup", "bob@127.0.0.1")
        assert status == 0, err
        assert bob.session is not None
        reason = await asyncio.wait_for(bob.session.terminated, 20)
        assert reason, "bob's session did not end"
        assert await alice.wait_for(lambda: alice.notices("kicked"))
        assert "Bob was removed from the room" in alice.notices("kicked")[0].text
        status, out, err = await cli(chorus, "rooms", "--json")
        assert [r["participants"] for r in json.loads(out)["rooms"]] == [2]
        assert alice.session is not None and not alice.session.terminated.done()
        assert carol.session is not None and not carol.session.terminated.done()

        status, _, err = await cli(chorus, "kick", "standup", "nobody@127.0.0.1")
        assert status == 1 and "404" in err, err
        status, _, err = await cli(chorus, "rooms", "--token", "w" * 32)
        assert status == 1 and "401" in err, err

        assert (await cli(chorus, "lock", "standup"))[0] == 0
        assert (await cli(chorus, "pin", "standup", "1234"))[0] == 0
        status, out, _ = await cli(chorus, "rooms")
        assert out.splitlines()[2].split()[2] == "locked,pin"
        status, _, err = await cli(chorus, "pin", "standup", "12#4")
        assert status == 1 and "400" in err, err
        assert (await cli(chorus, "unlock", "standup"))[0] == 0
        assert (await cli(chorus, "pin", "standup", "--clear"))[0] == 0

        status, out, err = await cli(chorus, "end", "standup")
        assert status == 0, err
        await asyncio.wait_for(alice.session.terminated, 20)
        await asyncio.wait_for(carol.session.terminated, 20)

        async def no_rooms() -> bool:
            return (await cli(chorus, "rooms"))[1].strip() == "no rooms"

        for _ in range(50):
            if await no_rooms():
                break
            await asyncio.sleep(0.2)  # polling the node, not a timing assertion
        assert await no_rooms()


async def test_api_token_prints_the_spool_token(chorus: ChorusProcess) -> None:
    status, out, err = await cli(chorus, "api-token")
    assert status == 0, err
    assert out.strip() == (chorus.workdir / "spool" / "api" / "token").read_text().strip()
