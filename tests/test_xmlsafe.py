"""control/xmlsafe.py: the one hardened parser refuses bombs, external entities and oversized
bodies at once, with a reason, and parses honest documents; the room parses the XML it would
relay (is-composing) with it and refuses hostile documents to their sender alone."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from control.conference.chat import ChatCore, ChatMember, ChatSessionId
from control.media.engine import ParticipantId
from control.msrp import CpimAddress, CpimMessage
from control.msrp.errors import MsrpError
from control.msrp.iscomposing import ISCOMPOSING_CONTENT_TYPE
from control.xmlsafe import DEFAULT_MAX_XML_BYTES, XmlRefused, parse
from tests.peers.chatclient import ChatClient
from tests.peers.chorus import ChorusProcess

CONF_NS = "urn:ietf:params:xml:ns:conference-info"

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol9 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
]>
<conference-info xmlns="urn:ietf:params:xml:ns:conference-info">&lol9;</conference-info>
"""

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<conference-info xmlns="urn:ietf:params:xml:ns:conference-info">&x;</conference-info>
"""

EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE conference-info SYSTEM "http://127.0.0.1:9/evil.dtd">
<conference-info xmlns="urn:ietf:params:xml:ns:conference-info" entity="sip:a@b"/>
"""

# The DOCTYPE hidden from a byte check by another encoding: refused for not being UTF-8.
UTF16_XXE = (
    XXE.replace(b'<?xml version="1.0"?>', b'<?xml version="1.0" encoding="UTF-16"?>')
    .decode()
    .encode("utf-16")
)


def test_honest_document_parses() -> None:
    root = parse(
        b'<conference-info xmlns="urn:ietf:params:xml:ns:conference-info" entity="sip:r@h"/>'
    )
    assert root.tag == f"{{{CONF_NS}}}conference-info"
    assert root.get("entity") == "sip:r@h"


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        (BILLION_LAUGHS, "DTD"),
        (XXE, "DTD"),
        (EXTERNAL_DTD, "DTD"),
        (UTF16_XXE, "UTF-8"),
        (b"<a><b></a>", "malformed"),
        (b"", "malformed"),
    ],
)
def test_refused_with_reason(document: bytes, reason: str) -> None:
    with pytest.raises(XmlRefused, match=reason) as refused:
        parse(document)
    assert not refused.value.too_large


def test_ten_megabytes_refused_before_parsing() -> None:
    body = b"<a>" + b"x" * (10 * 1024 * 1024) + b"</a>"
    assert len(body) > DEFAULT_MAX_XML_BYTES
    with pytest.raises(XmlRefused, match="over the 1048576-byte limit") as refused:
        parse(body)
    assert refused.value.too_large  # refused by its length, before lxml sees it


def test_size_cap_is_a_parameter() -> None:
    doc = b"<a>" + b"x" * 100 + b"</a>"
    assert parse(doc, max_bytes=len(doc)).text == "x" * 100
    with pytest.raises(XmlRefused) as refused:
        parse(doc, max_bytes=len(doc) - 1)
    assert refused.value.too_large


def test_comments_and_processing_instructions_dropped() -> None:
    root = parse(b"<a><!-- c --><?pi x?><b/></a>")
    assert [child.tag for child in root] == ["b"]


# --- the room: XML it would relay is parsed by this parser first ------------------------------

COMPOSING_BOMB = BILLION_LAUGHS.replace(
    b'<conference-info xmlns="urn:ietf:params:xml:ns:conference-info">&lol9;</conference-info>',
    b'<isComposing xmlns="urn:ietf:params:xml:ns:im-iscomposing"><state>&lol9;</state>'
    b"</isComposing>",
)
COMPOSING_XXE = XXE.replace(
    b'<conference-info xmlns="urn:ietf:params:xml:ns:conference-info">&x;</conference-info>',
    b'<isComposing xmlns="urn:ietf:params:xml:ns:im-iscomposing"><state>&x;</state></isComposing>',
)


def _core() -> ChatCore:
    core = ChatCore("lobby@chorus.example", "sip:lobby@chorus.example", "lobby")
    core.add(ChatMember(ChatSessionId("a"), ParticipantId("pa"), "sip:alice@example.com"))
    core.add(ChatMember(ChatSessionId("b"), ParticipantId("pb"), "sip:bob@example.com"))
    return core


def _composing(body: bytes) -> bytes:
    return CpimMessage.build(
        content_type=ISCOMPOSING_CONTENT_TYPE,
        body=body,
        sender=CpimAddress("sip:alice@example.com"),
        recipients=[CpimAddress("sip:lobby@chorus.example")],
    ).serialize()


@pytest.mark.parametrize(
    ("document", "status"),
    [(COMPOSING_BOMB, 400), (COMPOSING_XXE, 400), (b"<isComposing>" + b"x" * 20_000, 413)],
)
def test_room_chat_refuses_hostile_is_composing_and_relays_nothing(
    document: bytes, status: int
) -> None:
    assert b"<!ENTITY" in document or len(document) > 16 * 1024
    core = _core()
    with pytest.raises(MsrpError) as refused:
        core.receive(
            ChatSessionId("a"),
            "message/cpim",
            _composing(document),
            now=0.0,
            wall=datetime.now(UTC),
            message_id="m1",
        )
    assert refused.value.status == status


async def test_live_room_refuses_bomb_xxe_and_ten_megabytes_and_keeps_serving() -> None:
    """Through `chorus serve`: each hostile body gets its MSRP refusal, the other participant
    receives none of them, then a plain message still goes through and a new joiner chats."""
    with ChorusProcess({}) as chorus:
        async with (
            ChatClient("alice", "Alice") as alice_client,
            ChatClient("bob", "Bob") as bob_client,
            ChatClient("carol", "Carol") as carol_client,
        ):
            alice = await alice_client.join(chorus, "hardened", secure=False)
            bob = await bob_client.join(chorus, "hardened", secure=False)
            hostile = [
                await alice.send_raw(
                    alice.cpim(COMPOSING_BOMB, content_type=ISCOMPOSING_CONTENT_TYPE)
                ),
                await alice.send_raw(
                    alice.cpim(COMPOSING_XXE, content_type=ISCOMPOSING_CONTENT_TYPE)
                ),
                await alice.send_raw(
                    alice.cpim(
                        b"<a>" + b"x" * (10 * 1024 * 1024) + b"</a>", content_type="text/xml"
                    )
                ),
            ]
            assert [await alice.status_of(m, timeout=120) for m in hostile] == [400, 400, 413]
            await alice.say("still here")
            await bob.wait_text("still here")
            assert not any(b"lol" in d.body or b"passwd" in d.body for d in bob.received)
            carol = await carol_client.join(chorus, "hardened", secure=False)
            await bob.say("hello carol")
            await carol.wait_text("hello carol")
        assert chorus.alive
        assert "Traceback" not in chorus.log(), chorus.log()
