"""XEP-0045 MUC ↔ room chat, the sans-IO core (control/xmpp/muc.py): stanzas parsed to
events or refused with the XEP's error, and the stanzas the service sends."""

from __future__ import annotations

from datetime import UTC, datetime
from xml.etree import ElementTree as ET

import pytest

from control.xmpp.addressing import Jid
from control.xmpp.muc import (
    DELAY_NS,
    MUC_USER_NS,
    Bounced,
    Declined,
    GroupMessage,
    HistoryRequest,
    Invitation,
    KickRequest,
    MucError,
    MucLeave,
    MucPresence,
    PrivateMessage,
    parse_iq,
    parse_message,
    parse_presence,
)
from control.xmpp.mucstanzas import (
    Occupant,
    ViewChange,
    declined,
    error_reply,
    groupchat,
    invitation,
    iq_result,
    occupant_presence,
    private_chat,
    room_gone,
    subject_message,
    unique_nicks,
    view_changes,
)

MUC = "conference.xmpp.localhost"
NS = "jabber:component:accept"
STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
ROOM = Jid("lobby", MUC)
BOB = Jid("bob", "xmpp.localhost", "desk")


def xml(text: str) -> ET.Element:
    return ET.fromstring(
        text.replace("<presence", f"<presence xmlns='{NS}'", 1).replace(
            "<message", f"<message xmlns='{NS}'", 1
        )
    )


JOIN = (
    "<presence from='bob@xmpp.localhost/desk' to='Lobby@conference.xmpp.localhost/Bob' id='j1'>"
    "<x xmlns='http://jabber.org/protocol/muc'>{history}</x></presence>"
)


def test_a_join_carries_the_nick_and_history_limits() -> None:
    history = "<history maxstanzas='3' seconds='600'/>"
    event = parse_presence(xml(JOIN.format(history=history)), muc_domain=MUC)
    assert event == MucPresence(
        BOB, "lobby", "Bob", "j1", joining=True, history=HistoryRequest(3, 600.0, None)
    )


def test_history_since_and_maxchars_zero() -> None:
    since = "<history since='2026-12-03T10:00:00Z' maxchars='0'/>"
    event = parse_presence(xml(JOIN.format(history=since)), muc_domain=MUC)
    assert isinstance(event, MucPresence)
    assert event.history == HistoryRequest(0, None, datetime(2026, 12, 3, 10, tzinfo=UTC))


@pytest.mark.parametrize(
    "history", ["<history maxstanzas='-1'/>", "<history seconds='soon'/>", "<history since='x'/>"]
)
def test_a_malformed_history_request_is_bad_request(history: str) -> None:
    with pytest.raises(MucError) as refused:
        parse_presence(xml(JOIN.format(history=history)), muc_domain=MUC)
    assert refused.value.condition == "bad-request"


def test_presence_without_muc_x_is_not_a_join() -> None:
    stanza = xml(
        "<presence from='bob@xmpp.localhost/desk' to='lobby@conference.xmpp.localhost/Bob'>"
        "<show>away</show><status>lunch</status></presence>"
    )
    event = parse_presence(stanza, muc_domain=MUC)
    assert isinstance(event, MucPresence)
    assert (event.joining, event.show, event.status) == (False, "away", "lunch")


def test_leave_and_ignored_presences() -> None:
    leave = xml(
        "<presence from='bob@xmpp.localhost/desk' to='lobby@conference.xmpp.localhost/Bob'"
        " type='unavailable'><status>bye</status></presence>"
    )
    assert parse_presence(leave, muc_domain=MUC) == MucLeave(BOB, "lobby", "Bob", "bye")
    bounce = xml(
        f"<presence from='bob@xmpp.localhost/desk' to='lobby@{MUC}/B' type='error'>"
        f"<error type='cancel'><service-unavailable xmlns='{STANZAS}'/></error></presence>"
    )
    assert parse_presence(bounce, muc_domain=MUC) == Bounced(
        BOB, "lobby", "service-unavailable", gone=True
    )
    modify = xml(
        f"<message from='bob@xmpp.localhost/desk' to='lobby@{MUC}' type='error'>"
        f"<error type='modify'><not-acceptable xmlns='{STANZAS}'/><text xmlns='{STANZAS}'>x"
        "</text></error></message>"
    )
    assert parse_message(modify, muc_domain=MUC) == Bounced(
        BOB, "lobby", "not-acceptable", gone=False
    )
    elsewhere = xml("<message from='bob@xmpp.localhost/desk' to='x@other' type='error'/>")
    assert parse_message(elsewhere, muc_domain=MUC) is None
    subscribe = xml("<presence from='bob@xmpp.localhost' to='lobby@" + MUC + "' type='subscribe'/>")
    assert parse_presence(subscribe, muc_domain=MUC) is None


@pytest.mark.parametrize(
    ("to", "condition"),
    [
        (f"lobby@{MUC}", "jid-malformed"),  # no nick (§7.2.1)
        (f"lobby@{MUC}/%20%20", None),  # filled in below: spaces only
        (f"lobby@{MUC}/" + "n" * 65, "not-acceptable"),
        (MUC, "item-not-found"),  # the service, not a room
    ],
)
def test_a_join_without_a_usable_nick_is_refused(to: str, condition: str | None) -> None:
    to = to.replace("%20%20", "  ")
    stanza = xml(
        f"<presence from='bob@xmpp.localhost/desk' to='{to}'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
    )
    with pytest.raises(MucError) as refused:
        parse_presence(stanza, muc_domain=MUC)
    assert refused.value.condition == (condition or "not-acceptable")


def test_groupchat_private_and_subject_messages() -> None:
    public = xml(
        f"<message from='bob@xmpp.localhost/desk' to='lobby@{MUC}' type='groupchat' id='m1'>"
        "<body>hello room</body></message>"
    )
    assert parse_message(public, muc_domain=MUC) == GroupMessage(
        BOB, "lobby", "m1", "hello room", None
    )
    subject = xml(
        f"<message from='bob@xmpp.localhost/desk' to='lobby@{MUC}' type='groupchat' id='s1'>"
        "<subject>Plans</subject></message>"
    )
    assert parse_message(subject, muc_domain=MUC) == GroupMessage(BOB, "lobby", "s1", None, "Plans")
    private = xml(
        f"<message from='bob@xmpp.localhost/desk' to='lobby@{MUC}/Alice' type='chat' id='p1'>"
        "<body>psst</body></message>"
    )
    assert parse_message(private, muc_domain=MUC) == PrivateMessage(
        BOB, "lobby", "Alice", "p1", "psst"
    )


@pytest.mark.parametrize(
    ("to", "kind", "body", "condition"),
    [
        (f"lobby@{MUC}/Alice", "groupchat", "<body>x</body>", "bad-request"),  # §7.4
        (f"lobby@{MUC}", "groupchat", "", "bad-request"),
        (f"lobby@{MUC}", "chat", "<body>x</body>", "bad-request"),
        (f"lobby@{MUC}/Alice", "chat", "", "bad-request"),
        (f"lobby@{MUC}", "groupchat", "<body>" + "x" * 101 + "</body>", "not-acceptable"),
    ],
)
def test_bad_messages_are_refused_with_the_xep_condition(
    to: str, kind: str, body: str, condition: str
) -> None:
    stanza = xml(
        f"<message from='bob@xmpp.localhost/desk' to='{to}' type='{kind}'>{body}</message>"
    )
    with pytest.raises(MucError) as refused:
        parse_message(stanza, muc_domain=MUC, max_body=100)
    assert refused.value.condition == condition


def test_conflict_reply_keeps_the_muc_x_and_the_id() -> None:
    stanza = xml(JOIN.format(history=""))
    reply = error_reply(stanza, MucError("conflict", "nick in use"), muc_domain=MUC)
    assert reply is not None
    assert reply.get("type") == "error"
    assert reply.get("to") == "bob@xmpp.localhost/desk"
    assert reply.get("from") == f"Lobby@{MUC}/Bob"
    assert reply.get("id") == "j1"
    assert reply.find("{http://jabber.org/protocol/muc}x") is not None
    error = reply.find(f"{{{NS}}}error")
    assert error is not None and error.get("type") == "cancel"
    assert error.find(f"{{{STANZAS}}}conflict") is not None
    bounce = xml(f"<message from='bob@xmpp.localhost/desk' to='lobby@{MUC}' type='error'/>")
    assert error_reply(bounce, MucError("bad-request", "x"), muc_domain=MUC) is None


def test_occupant_presences() -> None:
    alice = Occupant("p1", "Alice", affiliation="admin", role="moderator", show="away")
    joined = occupant_presence(BOB, ROOM, alice)
    assert joined.get("from") == f"lobby@{MUC}/Alice"
    assert joined.get("type") is None
    item = joined.find(f"{{{MUC_USER_NS}}}x/{{{MUC_USER_NS}}}item")
    assert item is not None and (item.get("affiliation"), item.get("role")) == (
        "admin",
        "moderator",
    )
    me = occupant_presence(BOB, ROOM, Occupant("b", "Bob"), self_=True)
    codes = [s.get("code") for s in me.iter(f"{{{MUC_USER_NS}}}status")]
    assert codes == ["110"]
    renamed = occupant_presence(BOB, ROOM, alice, gone=True, new_nick="Ally")
    assert renamed.get("type") == "unavailable"
    item = renamed.find(f"{{{MUC_USER_NS}}}x/{{{MUC_USER_NS}}}item")
    assert item is not None and (item.get("nick"), item.get("role")) == ("Ally", "none")
    assert [s.get("code") for s in renamed.iter(f"{{{MUC_USER_NS}}}status")] == ["303"]
    gone = room_gone(BOB, ROOM, Occupant("b", "Bob"), "the conference ended")
    codes = sorted(s.get("code") or "" for s in gone.iter(f"{{{MUC_USER_NS}}}status"))
    assert codes == ["110", "332"]
    assert gone.find(f".//{{{MUC_USER_NS}}}destroy") is not None


def test_messages_from_the_room() -> None:
    when = datetime(2026, 12, 3, 9, 30, tzinfo=UTC)
    old = groupchat(BOB, ROOM, "Alice", "earlier", id="h1", delay=when)
    assert old.get("from") == f"lobby@{MUC}/Alice" and old.get("type") == "groupchat"
    delay = old.find(f"{{{DELAY_NS}}}delay")
    assert delay is not None
    assert (delay.get("from"), delay.get("stamp")) == (f"lobby@{MUC}", "2026-12-03T09:30:00+00:00")
    notice = groupchat(BOB, ROOM, None, "Alice muted", id="n1")
    assert notice.get("from") == f"lobby@{MUC}"
    private = private_chat(BOB, ROOM, "Alice", "psst", id="p1")
    assert private.get("type") == "chat" and private.find(f"{{{MUC_USER_NS}}}x") is not None
    subject = subject_message(BOB, ROOM, None, "", id="s1")
    assert subject.find(f"{{{NS}}}subject") is not None
    assert subject.find(f"{{{NS}}}body") is None


def test_unique_nicks_keep_the_first_and_number_the_rest() -> None:
    nicks = unique_nicks([("p1", "Alice"), ("p2", "alice"), ("p3", "Bob"), ("p4", "Alice")])
    assert nicks == {"p1": "Alice", "p2": "alice (2)", "p3": "Bob", "p4": "Alice (3)"}


def test_view_changes_leaves_renames_joins_updates() -> None:
    alice, bob, carol = Occupant("a", "Alice"), Occupant("b", "Bob"), Occupant("c", "Carol")
    told = {"a": alice, "b": bob, "c": carol}
    ally = Occupant("a", "Ally")
    away = Occupant("c", "Carol", show="away")
    dave = Occupant("d", "Dave")
    changes = view_changes(told, {"a": ally, "c": away, "d": dave})
    assert changes == [
        ViewChange(bob, gone=True),
        ViewChange(alice, gone=True, new_nick="Ally"),
        ViewChange(ally),
        ViewChange(away),
        ViewChange(dave),
    ]
    assert view_changes(told, told) == []


def test_mediated_invitation_and_decline() -> None:
    invite = xml(
        f"<message from='bob@xmpp.localhost/desk' to='lobby@{MUC}' id='i1'>"
        f"<x xmlns='{MUC_USER_NS}'><invite to='dave@sip.localhost'><reason>join us</reason>"
        "</invite></x></message>"
    )
    assert parse_message(invite, muc_domain=MUC) == Invitation(
        BOB, "lobby", "i1", Jid("dave", "sip.localhost"), "join us"
    )
    decline = xml(
        f"<message from='bob@xmpp.localhost/desk' to='lobby@{MUC}'>"
        f"<x xmlns='{MUC_USER_NS}'><decline to='alice@xmpp.localhost'/></x></message>"
    )
    assert parse_message(decline, muc_domain=MUC) == Declined(
        BOB, "lobby", Jid("alice", "xmpp.localhost"), None
    )
    for bad in ("<invite/>", "<item/>"):
        stanza = xml(
            f"<message from='bob@xmpp.localhost/desk' to='lobby@{MUC}'>"
            f"<x xmlns='{MUC_USER_NS}'>{bad}</x></message>"
        )
        with pytest.raises(MucError) as refused:
            parse_message(stanza, muc_domain=MUC)
        assert refused.value.condition == "bad-request"


def test_invitation_and_decline_from_the_room() -> None:
    sent = invitation(BOB, ROOM, f"lobby@{MUC}/Alice", "Alice invites you", id="v1")
    assert sent.get("from") == f"lobby@{MUC}" and sent.get("type") is None
    element = sent.find(f"{{{MUC_USER_NS}}}x/{{{MUC_USER_NS}}}invite")
    assert element is not None and element.get("from") == f"lobby@{MUC}/Alice"
    assert element.findtext(f"{{{MUC_USER_NS}}}reason") == "Alice invites you"
    back = declined(BOB, ROOM, "dave@sip.localhost", "486 Busy Here", id="d1")
    element = back.find(f"{{{MUC_USER_NS}}}x/{{{MUC_USER_NS}}}decline")
    assert element is not None and element.get("from") == "dave@sip.localhost"


def test_chat_states_and_xhtml_in_rooms() -> None:
    states = "http://jabber.org/protocol/chatstates"
    composing = xml(
        f"<message from='bob@xmpp.localhost/desk' to='lobby@{MUC}' type='groupchat'>"
        f"<composing xmlns='{states}'/></message>"
    )
    assert parse_message(composing, muc_domain=MUC) == GroupMessage(
        BOB, "lobby", "", None, None, "composing"
    )
    private = xml(
        f"<message from='bob@xmpp.localhost/desk' to='lobby@{MUC}/Alice' type='chat'>"
        f"<paused xmlns='{states}'/></message>"
    )
    assert parse_message(private, muc_domain=MUC) == PrivateMessage(
        BOB, "lobby", "Alice", "", None, "paused"
    )
    rich = xml(
        f"<message from='bob@xmpp.localhost/desk' to='lobby@{MUC}' type='groupchat'>"
        "<body>hi there</body><html xmlns='http://jabber.org/protocol/xhtml-im'>"
        "<body xmlns='http://www.w3.org/1999/xhtml'>hi <b>there</b></body></html></message>"
    )
    event = parse_message(rich, muc_domain=MUC)
    assert isinstance(event, GroupMessage)
    assert event.xhtml == 'hi <b xmlns="http://www.w3.org/1999/xhtml">there</b>'
    script = xml(
        f"<message from='bob@xmpp.localhost/desk' to='lobby@{MUC}' type='groupchat'>"
        "<body>x</body><html xmlns='http://jabber.org/protocol/xhtml-im'>"
        "<body xmlns='http://www.w3.org/1999/xhtml'><script>x</script></body></html></message>"
    )
    with pytest.raises(MucError) as refused:
        parse_message(script, muc_domain=MUC)
    assert refused.value.condition == "not-acceptable"
    out = groupchat(BOB, ROOM, "Alice", None, id="c1", state="composing")
    assert out.find(f"{{{states}}}composing") is not None and out.find(f"{{{NS}}}body") is None


def test_muc_admin_kick_requests() -> None:
    admin = "http://jabber.org/protocol/muc#admin"
    kick = xml(
        f"<iq xmlns='{NS}' from='bob@xmpp.localhost/desk' to='lobby@{MUC}' type='set' id='k1'>"
        f"<query xmlns='{admin}'><item nick='Dave' role='none'><reason>spam</reason></item>"
        "</query></iq>"
    )
    assert parse_iq(kick, muc_domain=MUC) == KickRequest(BOB, "lobby", "k1", "Dave", "spam")
    result = iq_result(kick)
    assert (result.get("type"), result.get("to"), result.get("from"), result.get("id")) == (
        "result",
        "bob@xmpp.localhost/desk",
        f"lobby@{MUC}",
        "k1",
    )
    ban = xml(
        f"<iq xmlns='{NS}' from='bob@xmpp.localhost/desk' to='lobby@{MUC}' type='set'>"
        f"<query xmlns='{admin}'><item jid='dave@sip.localhost' affiliation='outcast'/></query>"
        "</iq>"
    )
    with pytest.raises(MucError) as refused:
        parse_iq(ban, muc_domain=MUC)
    assert refused.value.condition == "feature-not-implemented"
    answer = xml(
        f"<iq xmlns='{NS}' from='bob@xmpp.localhost/desk' to='lobby@{MUC}' type='result'/>"
    )
    assert parse_iq(answer, muc_domain=MUC) is None
