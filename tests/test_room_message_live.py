"""SIP MESSAGE into a room (RFC 3428 pager mode) through a real `chorus serve` (issue 8).

Out of dialog from SIPp (tests/sipp/uac_message_room.xml) and from our own UA, and inside a
participant's dialog: answered 2xx and relayed to the room's chat participants as a public
message whose CPIM From is the MESSAGE's From URI. Too large a body gets 413 and a type the
room does not take 415 (RFC 3428 §7), and nobody receives those.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from control.sip.message import Response
from tests.peers.chatclient import ChatClient, ChatSession
from tests.peers.chorus import ChorusProcess
from tests.peers.sipp import run_sipp_async

pytestmark = pytest.mark.timeout(90)

MAX_BYTES = 4096  # [conference] max_message_bytes of this server


@pytest.fixture(scope="module")
def chorus() -> Iterator[ChorusProcess]:
    with ChorusProcess({"conference": {"max_message_bytes": MAX_BYTES}}) as process:
        yield process
        assert process.alive, process.log()
        assert "Traceback" not in process.log(), process.log()


def stripped(session: ChatSession) -> list[str]:
    return [text.strip() for text in session.texts()]


async def message(
    client: ChatClient, chorus: ChorusProcess, room: str, body: bytes, content_type: str
) -> Response:
    """An out-of-dialog MESSAGE from ``client`` to the room."""
    port = chorus.sip_port
    outgoing = client.sip.request(
        "MESSAGE", f"sip:{room}@127.0.0.1:{port}", port, body=body, content_type=content_type
    )
    return await outgoing.final


@pytest.mark.peer("sipp")
async def test_sipp_message_reaches_the_chat_participants(chorus: ChorusProcess) -> None:
    async with (
        ChatClient("alice", "Alice", sip_transport="tcp") as alice_client,
        ChatClient("bob", "Bob") as bob_client,
    ):
        alice = await alice_client.join(chorus, "pager", secure=True)
        bob = await bob_client.join(chorus, "pager", secure=False)
        result = await run_sipp_async(
            "uac_message_room",
            f"127.0.0.1:{chorus.sip_port}",
            service="pager",
            calls=3,
            rate=10,
            timeout=30,
        )
        assert result.ok, result.describe()
        expected = [f"hello room from sipp call {n}" for n in (1, 2, 3)]
        for session in (alice, bob):
            assert await session.wait_public(3), (
                f"{session.client.user} got {session.texts()}\n{chorus.log()[-3000:]}"
            )
            assert sorted(stripped(session)) == expected
            for got in session.public():
                assert got.sender_key == ("sipp", "127.0.0.1"), got.sender
                assert got.wrapped_type == "text/plain"


async def test_message_out_of_dialog_and_in_dialog(chorus: ChorusProcess) -> None:
    """dave is in no room: his MESSAGE is relayed all the same. alice's MESSAGE inside her
    own dialog is relayed to bob, from her; bob with audio only is no error."""
    async with (
        ChatClient("alice", "Alice", sip_transport="tcp") as alice_client,
        ChatClient("bob", "Bob") as bob_client,
        ChatClient("dave", "Dave", sip_transport="tcp") as dave,
    ):
        alice = await alice_client.join(chorus, "pager2", secure=True)
        bob = await bob_client.join(chorus, "pager2", secure=False)
        response = await message(dave, chorus, "pager2", b"dave by pager", "text/plain")
        assert response.status in (200, 202), response.status
        for session in (alice, bob):
            got = await session.wait_text("dave by pager")
            assert got.sender_key == ("dave", "127.0.0.1")
        assert alice.session is not None
        response = await alice.session.request(
            "MESSAGE", body=b"alice inside her dialog", content_type="text/plain"
        )
        assert response.status in (200, 202), response.status
        got = await bob.wait_text("alice inside her dialog")
        assert got.sender_key == ("alice", "127.0.0.1")


async def test_message_too_large_413_and_wrong_type_415(chorus: ChorusProcess) -> None:
    async with (
        ChatClient("alice", "Alice") as alice_client,
        ChatClient("dave", "Dave", sip_transport="tcp") as dave,
    ):
        alice = await alice_client.join(chorus, "pager3", secure=True)
        big = await message(dave, chorus, "pager3", b"x" * (MAX_BYTES + 1), "text/plain")
        assert big.status == 413, big.status
        odd = await message(dave, chorus, "pager3", b"\x00\x01", "application/x-no-such-thing")
        assert odd.status == 415, odd.status
        fine = await message(dave, chorus, "pager3", b"after the refusals", "text/plain")
        assert fine.status in (200, 202), fine.status
        await alice.wait_text("after the refusals")
        assert stripped(alice) == ["after the refusals"], "a refused MESSAGE was relayed"
