"""Hostile XML sent to a room by SIP MESSAGE (RFC 3428 pager mode) through a real ``chorus
serve`` (issue 10 "Must show"; the MSRP side is tests/test_xmlsafe.py): an is-composing
document carrying an entity-expansion bomb and one carrying an external entity, wrapped in
CPIM as the room's chat is, are refused 400 by the hardened parser (control/xmlsafe.py) and
relayed to nobody; a 10 MB body is refused by the size limit (413, the stream closed); then a
plain MESSAGE on a new connection still reaches the room and a new participant still joins
and chats.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from control.conference.chat import ChatCore, ChatMember, ChatSessionId
from control.media.engine import ParticipantId
from control.msrp import CpimAddress, CpimMessage
from control.msrp.iscomposing import ISCOMPOSING_CONTENT_TYPE
from control.sip.errors import SipError
from control.sip.message import Response
from tests.peers.chatclient import ChatClient
from tests.peers.chorus import ChorusProcess
from tests.test_xmlsafe import COMPOSING_BOMB, COMPOSING_XXE

pytestmark = pytest.mark.timeout(180)


async def message(client: ChatClient, chorus: ChorusProcess, body: bytes, kind: str) -> Response:
    port = chorus.sip_port
    outgoing = client.sip.request(
        "MESSAGE", f"sip:hardened@127.0.0.1:{port}", port, body=body, content_type=kind
    )
    return await outgoing.final


def composing(client: ChatClient, document: bytes) -> bytes:
    return CpimMessage.build(
        content_type=ISCOMPOSING_CONTENT_TYPE,
        body=document,
        sender=CpimAddress(client.uri),
        recipients=[CpimAddress("sip:hardened@127.0.0.1")],
    ).serialize()


async def test_sip_message_bomb_xxe_and_ten_megabytes_refused_and_room_serves() -> None:
    with ChorusProcess({}) as chorus:
        async with (
            ChatClient("alice", "Alice") as alice_client,
            ChatClient("dave", "Dave", sip_transport="tcp") as dave,
            ChatClient("erin", "Erin", sip_transport="tcp") as erin,
            ChatClient("carol", "Carol") as carol_client,
        ):
            alice = await alice_client.join(chorus, "hardened", secure=False)
            bomb = await message(dave, chorus, composing(dave, COMPOSING_BOMB), "message/cpim")
            xxe = await message(dave, chorus, composing(dave, COMPOSING_XXE), "message/cpim")
            assert (bomb.status, xxe.status) == (400, 400), (bomb.reason, xxe.reason)
            huge = await message(
                dave, chorus, b"<a>" + b"x" * (10 * 1024 * 1024) + b"</a>", "text/plain"
            )
            assert huge.status == 413, huge.status
            # The 413 ended dave's TCP stream (its 10 MB could not be skipped, RFC 3261
            # §18.3); the room serves a new connection.
            fine = await message(erin, chorus, b"after the refusals", "text/plain")
            assert fine.status == 200, fine.status
            await alice.wait_text("after the refusals")
            assert [d.text.strip() for d in alice.received if d.text.strip()] == [
                "after the refusals"
            ], "a refused MESSAGE was relayed"
            assert not any(b"lol" in d.body or b"passwd" in d.body for d in alice.received)
            carol = await carol_client.join(chorus, "hardened", secure=False)
            await alice.say("hello carol")
            await carol.wait_text("hello carol")
        assert chorus.alive
        assert "Traceback" not in chorus.log(), chorus.log()[-5000:]


@pytest.mark.parametrize(("document", "status"), [(COMPOSING_BOMB, 400), (COMPOSING_XXE, 400)])
def test_pager_is_composing_goes_through_the_hardened_parser(document: bytes, status: int) -> None:
    core = ChatCore("lobby@chorus.example", "sip:lobby@chorus.example", "lobby")
    core.add(ChatMember(ChatSessionId("b"), ParticipantId("pb"), "sip:bob@example.com"))
    body = CpimMessage.build(
        content_type=ISCOMPOSING_CONTENT_TYPE,
        body=document,
        sender=CpimAddress("sip:alice@example.com"),
        recipients=[CpimAddress("sip:lobby@chorus.example")],
    ).serialize()
    with pytest.raises(SipError) as refused:
        core.receive_pager(
            "sip:alice@example.com",
            None,
            "message/cpim",
            body,
            wall=datetime.now(UTC),
            message_id="m",
        )
    assert refused.value.status == status
