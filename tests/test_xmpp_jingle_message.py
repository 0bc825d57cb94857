"""XEP-0353 Jingle Message Initiation payloads (control/xmpp/jinglemessage.py) and the Jingle
call ↔ SIP rules (control/xmpp/jinglecall.py)."""

from __future__ import annotations

from xml.etree import ElementTree as ET

import pytest

from control.sip.sdp import Direction
from control.xmpp.jingle import JingleError, PayloadType, Reason, RtpDescription
from control.xmpp.jinglecall import (
    bridged_payloads,
    direction_for_info,
    info_for_direction,
    info_for_progress,
    reason_for_status,
    status_for_reason,
)
from control.xmpp.jinglemessage import (
    HINTS_NS,
    JMI_NS,
    JingleMessage,
    jingle_message,
    read_jingle_message,
)

# What Conversations sends to call alice@sip.example (XEP-0353 §3's example, audio only).
PROPOSE = """
<message xmlns='jabber:client' from='romeo@montague.example/orchard' to='alice@sip.example'
         type='chat' id='jm-propose-Tr2JKm'>
 <propose xmlns='urn:xmpp:jingle-message:0' id='ca3cf894-5325-482f-a412-a6e9f832298d'>
  <description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/>
 </propose>
 <store xmlns='urn:xmpp:hints'/>
</message>"""


def _message(*children: ET.Element) -> ET.Element:
    message = ET.Element("{jabber:client}message", {"type": "chat"})
    message.extend(children)
    return message


def test_conversations_propose() -> None:
    m = read_jingle_message(ET.fromstring(PROPOSE))
    assert m == JingleMessage("propose", "ca3cf894-5325-482f-a412-a6e9f832298d", ("audio",))
    assert m.audio


def test_other_payloads_and_their_reasons() -> None:
    reject = ET.fromstring(
        f"<message xmlns='jabber:client'><reject xmlns='{JMI_NS}' id='x'>"
        "<reason xmlns='urn:xmpp:jingle:1'><busy/><text>in a meeting</text></reason>"
        "</reject></message>"
    )
    assert read_jingle_message(reject) == JingleMessage(
        "reject", "x", reason=Reason("busy", "in a meeting")
    )
    finish = ET.fromstring(
        f"<message xmlns='jabber:client'><finish xmlns='{JMI_NS}' id='x'>"
        "<reason xmlns='urn:xmpp:jingle:1'><success/></reason>"
        f"<migrated xmlns='{JMI_NS}' to='y'/></finish></message>"
    )
    assert read_jingle_message(finish) == JingleMessage(
        "finish", "x", reason=Reason("success"), migrated_to="y"
    )
    for kind in ("retract", "accept", "proceed", "ringing"):
        el = ET.fromstring(
            f"<message xmlns='jabber:client'><{kind} xmlns='{JMI_NS}' id='i'/></message>"
        )
        assert read_jingle_message(el) == JingleMessage(kind, "i")
    plain = ET.fromstring("<message xmlns='jabber:client'><body>hi</body></message>")
    assert read_jingle_message(plain) is None


def test_a_propose_of_another_application_is_listed_by_namespace() -> None:
    el = ET.fromstring(
        f"<message xmlns='jabber:client'><propose xmlns='{JMI_NS}' id='i'>"
        "<description xmlns='urn:xmpp:jingle:apps:file-transfer:5'/></propose></message>"
    )
    m = read_jingle_message(el)
    assert m is not None and m.media == ("{urn:xmpp:jingle:apps:file-transfer:5}",)
    assert not m.audio


@pytest.mark.parametrize(
    "xml",
    [
        f"<message xmlns='jabber:client'><proceed xmlns='{JMI_NS}'/></message>",
        f"<message xmlns='jabber:client'><propose xmlns='{JMI_NS}' id='i'/></message>",
    ],
)
def test_malformed_payloads_are_bad_request(xml: str) -> None:
    with pytest.raises(JingleError) as caught:
        read_jingle_message(ET.fromstring(xml))
    assert caught.value.condition == "bad-request"


def test_built_payloads_read_back_with_the_store_hint() -> None:
    for m in [
        JingleMessage("propose", "p1", ("audio",)),
        JingleMessage("proceed", "p1"),
        JingleMessage("reject", "p1", reason=Reason("decline", "SIP 603")),
        JingleMessage("finish", "p1", reason=Reason("success"), migrated_to="p2"),
    ]:
        children = jingle_message(m)
        assert children[-1].tag == f"{{{HINTS_NS}}}store"
        assert read_jingle_message(_message(*children)) == m
    with pytest.raises(ValueError):
        jingle_message(JingleMessage("wave", "p1"))


# ------------------------------------------------------------------ call mapping


@pytest.mark.parametrize(
    ("status", "condition"),
    [
        (486, "busy"),
        (600, "busy"),
        (603, "decline"),
        (403, "decline"),
        (404, "gone"),
        (480, "gone"),
        (408, "timeout"),
        (487, "cancel"),
        (488, "incompatible-parameters"),
        (500, "general-error"),
        (503, "general-error"),
    ],
)
def test_sip_failures_become_jingle_reasons(status: int, condition: str) -> None:
    assert reason_for_status(status) == Reason(condition, f"SIP {status}")


def test_reason_for_status_is_for_failures_only() -> None:
    with pytest.raises(ValueError):
        reason_for_status(200)


@pytest.mark.parametrize(
    ("reason", "status"),
    [
        (Reason("busy"), 486),
        (Reason("decline"), 603),
        (None, 603),
        (Reason("success"), 603),
        (Reason("gone"), 480),
        (Reason("timeout"), 480),
        (Reason("cancel"), 487),
        (Reason("incompatible-parameters"), 488),
        (Reason("unsupported-applications"), 488),
        (Reason("security-error"), 488),
        (Reason("connectivity-error"), 503),
        (Reason("media-error"), 500),
        (Reason("general-error"), 500),
    ],
)
def test_unaccepted_jingle_ends_answer_the_sip_invite(reason: Reason | None, status: int) -> None:
    assert status_for_reason(reason) == status


def test_ringing_and_hold() -> None:
    assert info_for_progress(180) == "ringing"
    assert info_for_progress(183) is None
    assert info_for_direction(Direction.SENDONLY, held=False) == "hold"
    assert info_for_direction(Direction.INACTIVE, held=False) == "hold"
    assert info_for_direction(Direction.INACTIVE, held=True) is None
    assert info_for_direction(Direction.SENDRECV, held=True) == "unhold"
    assert info_for_direction(Direction.SENDRECV, held=False) is None
    assert direction_for_info("hold", Direction.SENDRECV) == Direction.SENDONLY
    assert direction_for_info("hold", Direction.RECVONLY) == Direction.INACTIVE
    assert direction_for_info("unhold", Direction.SENDONLY) == Direction.SENDRECV
    assert direction_for_info("mute", Direction.SENDRECV) is None


def test_bridged_payloads_keep_the_offer_order() -> None:
    offer = RtpDescription(
        "audio",
        (
            PayloadType(111, "opus", 48000, 2),
            PayloadType(8, "PCMA", 8000),
            PayloadType(9, "G722", 8000),
            PayloadType(0),  # static PCMU without a name
            PayloadType(126, "telephone-event", 8000),
            PayloadType(103, "ISAC", 16000),
        ),
    )
    assert [pt.id for pt in bridged_payloads(offer)] == [111, 9, 0, 126]
    only_pcma = RtpDescription(
        "audio", (PayloadType(8, "PCMA", 8000), PayloadType(126, "telephone-event", 8000))
    )
    assert bridged_payloads(only_pcma) == ()
    mono_opus = RtpDescription("audio", (PayloadType(111, "opus", 48000, 1),))
    assert bridged_payloads(mono_opus) == ()  # RFC 7587: opus is always /48000/2
