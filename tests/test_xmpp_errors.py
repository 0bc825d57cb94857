"""control/xmpp/errors.py: which stanzas are refused with which RFC 6120 §8.3 condition, and
the error reply's addresses; [xmpp] max_stanza_bytes parsed and validated."""

from __future__ import annotations

from xml.etree import ElementTree as ET

import pytest

from control.config import ConfigError, parse_config
from control.xmpp.addressing import AddressRefused, Jid
from control.xmpp.errors import (
    ERROR_TYPES,
    StanzaLimits,
    StanzaRefused,
    check_message,
    error_stanza,
    error_type,
    read_chat_state,
    refusal_for,
)
from control.xmpp.messages import MessageRefused

NS = "jabber:component:accept"
LIMITS = StanzaLimits(max_stanza_bytes=4096)


def stanza(inner: str = "<body>hi</body>", **attrs: str) -> ET.Element:
    attributes = {"from": "bob@xmpp.localhost/desk", "to": "alice@sip.localhost", "id": "m1"}
    attributes.update(attrs)
    text = " ".join(f'{k}="{v}"' for k, v in attributes.items() if v != "-")
    return ET.fromstring(f'<message xmlns="{NS}" {text}>{inner}</message>')


def refused(xml: ET.Element, size: int = 100) -> StanzaRefused:
    with pytest.raises(StanzaRefused) as caught:
        check_message(xml, size=size, limits=LIMITS)
    return caught.value


def test_a_plain_chat_message_passes_with_its_addresses() -> None:
    checked = check_message(stanza(), size=100, limits=LIMITS)
    assert checked.sender == Jid("bob", "xmpp.localhost", "desk")
    assert checked.recipient == Jid("alice", "sip.localhost")
    assert checked.state is None and checked.xhtml is None


def test_a_stanza_over_the_limit_is_a_policy_violation() -> None:
    error = refused(stanza(), size=4097)
    assert error.condition == "policy-violation" and error.type == "modify"
    assert "4097" in error.text
    check_message(stanza(), size=4096, limits=LIMITS)  # the limit itself is allowed


@pytest.mark.parametrize(
    ("attrs", "field"),
    [({"to": "-"}, "to"), ({"from": "-"}, "from"), ({"to": "@sip.localhost"}, "to")],
)
def test_a_missing_or_malformed_address_is_jid_malformed(attrs: dict[str, str], field: str) -> None:
    error = refused(stanza(**attrs))
    assert error.condition == "jid-malformed"
    assert field in error.text


CHATSTATES = 'xmlns="http://jabber.org/protocol/chatstates"'


def test_chat_states() -> None:
    assert read_chat_state(stanza(f"<composing {CHATSTATES}/>")) == "composing"
    assert check_message(stanza(f"<body>x</body><gone {CHATSTATES}/>"), size=1, limits=LIMITS)
    unknown = refused(stanza(f"<typing {CHATSTATES}/>"))
    assert unknown.condition == "bad-request" and "typing" in unknown.text
    two = refused(stanza(f"<active {CHATSTATES}/><paused {CHATSTATES}/>"))
    assert two.condition == "bad-request" and "more than one" in two.text


XHTML = (
    '<html xmlns="http://jabber.org/protocol/xhtml-im">'
    '<body xmlns="http://www.w3.org/1999/xhtml">{}</body></html>'
)


def test_xhtml_im_markup_is_read() -> None:
    checked = check_message(
        stanza("<body>hi you</body>" + XHTML.format("<p>hi <em>you</em></p>")),
        size=1,
        limits=LIMITS,
    )
    assert checked.xhtml == '<p xmlns="http://www.w3.org/1999/xhtml">hi <em>you</em></p>'


def test_bad_xhtml_im_is_refused() -> None:
    no_body = '<body>x</body><html xmlns="http://jabber.org/protocol/xhtml-im"><p/></html>'
    assert refused(stanza(no_body)).condition == "bad-request"
    assert refused(stanza(XHTML.format("<p>x</p>"))).condition == "bad-request"  # no plain body
    script = refused(stanza("<body>x</body>" + XHTML.format("<script>alert(1)</script>")))
    assert script.condition == "not-acceptable" and "script" in script.text
    deep = "<span>" * 40 + "x" + "</span>" * 40
    assert refused(stanza("<body>x</body>" + XHTML.format(deep))).condition == "not-acceptable"


def test_the_error_reply_swaps_the_addresses_and_keeps_the_id() -> None:
    reply = error_stanza(
        stanza(),
        StanzaRefused("bad-request", "why"),
        component="sip.localhost",
        ours=frozenset({"sip.localhost"}),
    )
    assert reply is not None
    assert (reply.kind, reply.to, reply.from_, reply.id) == (
        "message",
        Jid("bob", "xmpp.localhost", "desk"),
        "alice@sip.localhost",
        "m1",
    )
    assert (reply.type, reply.condition, reply.text) == ("modify", "bad-request", "why")


def test_an_error_reply_comes_from_the_component_when_to_is_not_ours() -> None:
    for to in ("@broken", "alice@elsewhere.example"):
        reply = error_stanza(
            stanza(to=to),
            StanzaRefused("jid-malformed", "x"),
            component="sip.localhost",
            ours=frozenset({"sip.localhost"}),
        )
        assert reply is not None and reply.from_ == "sip.localhost"


def test_no_error_in_reply_to_an_error_or_to_nobody() -> None:
    ours = frozenset({"sip.localhost"})
    refusal = StanzaRefused("bad-request", "x")
    assert error_stanza(stanza(type="error"), refusal, component="c", ours=ours) is None
    assert error_stanza(stanza(**{"from": "-"}), refusal, component="c", ours=ours) is None
    presence = ET.fromstring(f'<presence xmlns="{NS}" from="b@x" to="a@sip.localhost"/>')
    reply = error_stanza(presence, refusal, component="c", ours=ours)
    assert reply is not None and reply.kind == "presence"


def test_what_the_mapping_raises_becomes_a_refusal() -> None:
    address = refusal_for(AddressRefused("not served", condition="item-not-found"))
    assert (address.condition, address.text) == ("item-not-found", "not served")
    body = refusal_for(MessageRefused("too big", sip_status=413, condition="policy-violation"))
    assert body.condition == "policy-violation"
    assert refusal_for(ConnectionRefusedError()).condition == "service-unavailable"
    assert refusal_for(TimeoutError()).condition == "remote-server-timeout"
    bug = refusal_for(KeyError("x"))
    assert bug.condition == "internal-server-error" and "KeyError" in bug.text


def test_every_condition_has_its_rfc_6120_type() -> None:
    assert len(ERROR_TYPES) == 22  # RFC 6120 §8.3.3.1-§8.3.3.22
    assert error_type("forbidden") == "auth"
    assert error_type("recipient-unavailable") == "wait"
    assert error_type("no-such-thing") == "cancel"
    with pytest.raises(ValueError):
        StanzaRefused("no-such-thing", "x")


def xmpp(**keys: object) -> dict[str, object]:
    return {"xmpp": {"component_jid": "sip.localhost", "component_secret": "s", **keys}}


def test_max_stanza_bytes_is_parsed_and_validated() -> None:
    assert parse_config(xmpp()).xmpp.max_stanza_bytes == 262144
    small = xmpp(max_stanza_bytes=9000, max_message_bytes=4096)
    assert parse_config(small).xmpp.max_stanza_bytes == 9000
    with pytest.raises(ConfigError, match="xmpp.max_stanza_bytes"):
        parse_config(xmpp(max_stanza_bytes=1000, max_message_bytes=1024))
    with pytest.raises(ConfigError, match="must exceed max_message_bytes"):
        parse_config(xmpp(max_stanza_bytes=8192, max_message_bytes=8192))
