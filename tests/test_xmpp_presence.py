"""PIDF ↔ XMPP presence (RFC 8048): documents, per-resource views, the retry policy."""

from __future__ import annotations

import pytest
from lxml import etree

from control.cli import gateway_settings
from control.config import ConfigError, parse_config
from control.xmpp.presence import (
    PIDF_NS,
    PresenceRefused,
    PresenceView,
    ResourcePresence,
    RetryPolicy,
    build_pidf,
    parse_pidf,
    retryable,
    termination_action,
    tuple_id,
)

ENTITY = "sip:juliet@xmpp.localhost"
NS = {"p": PIDF_NS, "r": "urn:ietf:params:xml:ns:pidf:rpid"}


def test_one_open_tuple_per_available_resource_with_note_and_contact() -> None:
    document = build_pidf(
        ENTITY,
        {
            "desk": ("sip:juliet@xmpp.localhost;gr=desk", ResourcePresence(status="in a meeting")),
            "phone": ("sip:juliet@xmpp.localhost;gr=phone", ResourcePresence(show="dnd")),
            "old": ("sip:juliet@xmpp.localhost;gr=old", ResourcePresence(available=False)),
        },
    )
    root = etree.fromstring(document)
    assert root.get("entity") == ENTITY
    tuples = root.findall("p:tuple", NS)
    assert [t.get("id") for t in tuples] == [tuple_id("desk"), tuple_id("phone")]
    assert [t.findtext("p:status/p:basic", namespaces=NS) for t in tuples] == ["open", "open"]
    assert tuples[0].findtext("p:note", namespaces=NS) == "in a meeting"
    assert tuples[0].findtext("p:contact", namespaces=NS) == "sip:juliet@xmpp.localhost;gr=desk"
    assert tuples[1].find("r:activities/r:busy", NS) is not None
    # and back: each tuple a resource, show and status kept
    parsed = parse_pidf(document)
    assert parsed == {
        tuple_id("desk"): ResourcePresence(True, None, "in a meeting"),
        tuple_id("phone"): ResourcePresence(True, "dnd", None),
    }


def test_nobody_available_is_one_closed_tuple() -> None:
    document = build_pidf(ENTITY, {})
    root = etree.fromstring(document)
    (only,) = root.findall("p:tuple", NS)
    assert only.findtext("p:status/p:basic", namespaces=NS) == "closed"
    assert parse_pidf(document) == {"offline": ResourcePresence(available=False)}


# RFC 3863 §3.4's example, with an RPID person (RFC 4480 §3.2) as SIP clients send it.
RFC_PIDF = b"""<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf"
    xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"
    xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid"
    entity="pres:someone@example.com">
  <tuple id="sg89ae">
    <status><basic>open</basic></status>
    <contact priority="0.8">tel:+09012345678</contact>
  </tuple>
  <tuple id="pc">
    <status><basic>closed</basic></status>
  </tuple>
  <dm:person id="p1">
    <rpid:activities><rpid:on-the-phone/></rpid:activities>
    <dm:note>on the phone</dm:note>
  </dm:person>
</presence>"""


def test_person_activities_and_note_apply_to_tuples_without_their_own() -> None:
    assert parse_pidf(RFC_PIDF) == {
        "sg89ae": ResourcePresence(True, "dnd", "on the phone"),
        "pc": ResourcePresence(available=False),
    }


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"<x xmlns='urn:other'/>", 400),
        (b"not xml", 400),
        (b"<!DOCTYPE p [<!ENTITY a 'b'>]><presence xmlns='urn:ietf:params:xml:ns:pidf'/>", 400),
        (b"<presence xmlns='urn:ietf:params:xml:ns:pidf'><tuple/></presence>", 400),
        (b"<presence xmlns='urn:ietf:params:xml:ns:pidf'>" + b" " * 70000 + b"</presence>", 413),
    ],
)
def test_bad_documents_are_refused_with_the_sip_status(body: bytes, status: int) -> None:
    with pytest.raises(PresenceRefused) as refused:
        parse_pidf(body)
    assert refused.value.sip_status == status


def test_view_reports_only_changes_and_gone_resources() -> None:
    view = PresenceView(limit=2)
    assert view.update("desk", ResourcePresence())
    assert not view.update("desk", ResourcePresence())
    assert view.update("desk", ResourcePresence(status="busy"))
    assert not view.update("phone", ResourcePresence(available=False))
    changed = view.replace({"phone": ResourcePresence(show="away")})
    assert changed == {
        "desk": ResourcePresence(available=False),
        "phone": ResourcePresence(show="away"),
    }
    view.update("a", ResourcePresence())
    view.update("b", ResourcePresence())
    assert list(view.available) == ["a", "b"]  # the limit drops the oldest
    assert view.clear() == {
        "a": ResourcePresence(available=False),
        "b": ResourcePresence(available=False),
    }


def test_retry_policy_doubles_to_the_cap_and_forgets_on_success() -> None:
    policy = RetryPolicy(first=1.0, cap=8.0)
    assert policy.not_before("sip:romeo@x") == 0.0
    assert [policy.failed("sip:romeo@x", 100.0) for _ in range(5)] == [
        101.0,
        102.0,
        104.0,
        108.0,
        108.0,
    ]
    assert policy.not_before("sip:romeo@x") == 108.0
    assert policy.failed("sip:other@x", 0.0, retry_after=5.0) == 5.0
    policy.succeeded("sip:romeo@x")
    assert policy.not_before("sip:romeo@x") == 0.0


def test_which_answers_are_retried_and_what_terminations_mean() -> None:
    assert retryable(408) and retryable(503) and not retryable(404) and not retryable(403)
    assert termination_action("deactivated") == "resubscribe"
    assert termination_action("probation") == "retry"
    assert termination_action("rejected") == "unsubscribed"
    assert termination_action("noresource") == "gone"
    assert termination_action(None) == "gone"


def test_presence_limits_come_from_the_xmpp_section() -> None:
    base = {"component_jid": "sip.localhost", "component_secret": "s"}
    config = parse_config(
        {
            "xmpp": base
            | {"presence_expires": 600, "presence_retry_max": 60, "max_presence_subscriptions": 5}
        }
    )
    assert (config.xmpp.presence_expires, config.xmpp.presence_retry_max) == (600, 60.0)
    assert config.xmpp.max_presence_subscriptions == 5
    settings = gateway_settings(config)
    assert (settings.presence_expires, settings.max_presence_subscriptions) == (600, 5)
    assert parse_config({"xmpp": base}).xmpp.presence_retry_max == 300.0
    for key, bad in (("presence_expires", 10), ("max_presence_subscriptions", 0)):
        with pytest.raises(ConfigError):
            parse_config({"xmpp": base | {key: bad}})
