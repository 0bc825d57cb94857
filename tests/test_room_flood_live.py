"""A flood of 10,000 chat messages from one participant while two others chat (issue 8,
"Must show"), through a real `chorus serve` with ``chat_rate`` 50/s and ``chat_burst`` 20.

The per-participant token bucket bounds what the room relays from the flooder: at most
``burst + rate × elapsed`` messages (plus a small slack for the bucket's own clock), where
elapsed is measured by this test from its first flood SEND to the room's answer to the last
one: the room can only have relayed inside that window. Every flood SEND is answered, 200
or 413; exactly the 200 ones reach the others, in order. The flood goes out in 20 bursts
spread over the time bob and carol chat; they, pacing themselves well under the rate, see
every one of each other's messages, in order, each accepted. Then the server still answers
OPTIONS and takes a new participant.

Counts and order only: no latency is asserted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tests.peers.chatclient import ChatClient, ChatSession
from tests.peers.chorus import ChorusProcess

pytestmark = pytest.mark.timeout(300)

RATE, BURST = 50.0, 20
FLOOD = 10_000
BATCHES = 20  # the flood goes out in bursts of 500, spread over the others' chat
CHATTER = 25  # messages bob and carol each send during the flood
PACE = 0.2  # seconds between their messages (and between flood bursts): 5/s, a tenth of
# the rate, so that even a server that stalls for seconds cannot make their own bucket run dry
SLACK = 5  # tokens the bucket may have gained around the edges of the measured window


@pytest.fixture(scope="module")
def chorus() -> Iterator[ChorusProcess]:
    overrides = {"conference": {"chat_rate": RATE, "chat_burst": BURST}}
    with ChorusProcess(overrides) as process:
        yield process
        assert process.alive, process.log()
        assert "Traceback" not in process.log(), process.log()


async def flood(alice: ChatSession) -> tuple[list[str], float]:
    """Send the flood; its Message-IDs in order and the seconds until the last answer."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    mids: list[str] = []
    for _ in range(BATCHES):
        mids += [await alice.say(f"flood {len(mids) + i}") for i in range(FLOOD // BATCHES)]
        await asyncio.sleep(PACE)  # pacing the bursts; not a timing assertion
    assert await alice.wait_for(lambda: all(m in alice.send_status for m in mids), timeout=240), (
        f"{sum(m in alice.send_status for m in mids)} of {FLOOD} flood SENDs answered"
    )
    return mids, loop.time() - start


async def chatter(session: ChatSession, name: str) -> list[str]:
    mids = []
    for index in range(CHATTER):
        mids.append(await session.say(f"{name} {index}"))
        await asyncio.sleep(PACE)  # pacing, as a person types; not a timing assertion
    return mids


def numbered(session: ChatSession, prefix: str) -> list[int]:
    """The numbers of ``<prefix> <n>`` messages the session received, in arrival order."""
    return [int(t.split()[1]) for t in session.texts() if t.split()[0] == prefix]


async def wait_numbered(session: ChatSession, prefix: str, count: int) -> list[int]:
    await session.wait_for(lambda: len(numbered(session, prefix)) >= count, timeout=60)
    return numbered(session, prefix)


async def test_flood_is_bounded_by_the_rate_and_the_others_keep_chatting(
    chorus: ChorusProcess,
) -> None:
    async with (
        ChatClient("alice", "Alice") as alice_client,
        ChatClient("bob", "Bob", sip_transport="tcp") as bob_client,
        ChatClient("carol", "Carol") as carol_client,
        ChatClient("dave", "Dave") as dave_client,
    ):
        alice = await alice_client.join(chorus, "flooded", secure=False)
        bob = await bob_client.join(chorus, "flooded", secure=True)
        carol = await carol_client.join(chorus, "flooded", secure=False)
        (mids, elapsed), bob_mids, carol_mids = await asyncio.gather(
            flood(alice), chatter(bob, "bob"), chatter(carol, "carol")
        )
        statuses = [alice.send_status[m] for m in mids]
        accepted = statuses.count(200)
        assert set(statuses) <= {200, 413}, sorted(set(statuses))
        # The refusal says why on the wire (RFC 4975 §7.2 comment), not just a code.
        refused = {alice.send_comment[m] for m in mids if alice.send_status[m] == 413}
        assert refused == {"Too many messages"}, refused
        allowed = BURST + RATE * elapsed + SLACK
        assert 0 < accepted <= allowed, (
            f"{accepted} flood messages accepted in {elapsed:.1f} s; policy: {allowed:.0f}"
        )
        for mid in bob_mids:
            assert await bob.status_of(mid) == 200
        for mid in carol_mids:
            assert await carol.status_of(mid) == 200
        # What bob and carol said reached the other, all of it, in order.
        assert await wait_numbered(carol, "bob", CHATTER) == list(range(CHATTER))
        assert await wait_numbered(bob, "carol", CHATTER) == list(range(CHATTER))
        # Exactly the accepted flood messages were relayed, in the order sent.
        passed = [i for i, status in enumerate(statuses) if status == 200]
        for session in (bob, carol):
            assert await wait_numbered(session, "flood", accepted) == passed, session.client.user

        # The server keeps serving: OPTIONS, and a new participant who can chat.
        port = chorus.sip_port
        target = f"sip:flooded@127.0.0.1:{port}"
        options = await dave_client.sip.request("OPTIONS", target, port).final
        assert options.status == 200
        dave = await dave_client.join(chorus, "flooded", secure=True)
        await bob.say("welcome dave")
        await dave.wait_text("welcome dave")
        assert chorus.alive
