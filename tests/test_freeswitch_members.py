"""Conference members mapped to participants from FreeSWITCH 1.10's own event bytes.

The ESL fake builds each ``conference::maintenance`` event as mod_conference 1.10 does and
serialises it as mod_event_socket does; those bytes go through the framing parser and into
`ConferenceMembers`, with no socket: add-member/del-member map members, start/stop-talking
become TalkingStarted/Stopped, a mute Chorus asked for is no news while an operator's is a
MuteChanged, and an operator's kick is Kicked(by="operator").
"""

from __future__ import annotations

from control.media.engine import (
    Kicked,
    MuteChanged,
    ParticipantId,
    RoomId,
    TalkingStarted,
    TalkingStopped,
)
from control.media.freeswitch.members import (
    OPERATOR,
    PARTICIPANT_VARIABLE,
    ConferenceMembers,
    conference_name,
    parse_conference_list,
)
from tests.peers.eslfake import FakeFreeSwitch, decode

ROOM = RoomId("r1@conference.example.com")
ALICE = ParticipantId("aliceXXXXXXXXXXX")
BOB = ParticipantId("bobXXXXXXXXXXXXX")


def feed(fake: FakeFreeSwitch, members: ConferenceMembers) -> list[object]:
    data = b"".join(fake.emitted)
    fake.emitted.clear()
    out: list[object] = []
    for event in decode(data):
        out += members.handle(event)
    return out


def test_conference_names_are_readable_unique_and_dialplan_safe() -> None:
    name = conference_name(ROOM)
    assert name.startswith("chorus-r1-conference.example.com-") and "@" not in name
    assert conference_name(RoomId("R1@conference.example.com")) != name
    assert all(c.isalnum() or c in "._-" for c in name)


def test_members_map_talking_and_leaving() -> None:
    fake = FakeFreeSwitch("x")
    members = ConferenceMembers()
    conference = members.expect(ROOM, ALICE)
    members.expect(ROOM, BOB)
    a = fake.join(conference, ALICE)
    b = fake.join(conference, BOB)
    fake.join(conference, "someone-else")  # not a leg of ours: ignored
    assert feed(fake, members) == []
    assert members.member_id(ROOM, ALICE) == a and members.member_id(ROOM, BOB) == b
    fake.talk(conference, a, True)
    fake.talk(conference, b, True)
    fake.talk(conference, a, False)
    assert feed(fake, members) == [
        TalkingStarted(ROOM, ALICE),
        TalkingStarted(ROOM, BOB),
        TalkingStopped(ROOM, ALICE),
    ]
    fake.leave(conference, b)
    assert feed(fake, members) == [TalkingStopped(ROOM, BOB)]
    assert members.member_id(ROOM, BOB) is None


def test_our_mute_is_no_news_an_operators_is() -> None:
    fake = FakeFreeSwitch("x")
    members = ConferenceMembers()
    conference = members.expect(ROOM, ALICE)
    a = fake.join(conference, ALICE)
    fake.talk(conference, a, True)
    feed(fake, members)
    members.asked_mute(ROOM, ALICE, True)
    assert fake.api(f"conference {conference} mute {a}") == f"OK mute {a}\n"
    assert feed(fake, members) == [TalkingStopped(ROOM, ALICE)]
    # Now the operator unmutes, and mutes again.
    assert fake.api(f"conference {conference} unmute {a}") == f"OK unmute {a}\n"
    fake.api(f"conference {conference} mute {a}")
    assert feed(fake, members) == [
        MuteChanged(ROOM, ALICE, muted=False, by_operator=True),
        MuteChanged(ROOM, ALICE, muted=True, by_operator=True),
    ]


def test_an_operators_kick_ends_the_participant_ours_does_not_report() -> None:
    fake = FakeFreeSwitch("x")
    members = ConferenceMembers()
    conference = members.expect(ROOM, ALICE)
    members.expect(ROOM, BOB)
    a = fake.join(conference, ALICE)
    b = fake.join(conference, BOB)
    feed(fake, members)
    assert fake.api(f"conference {conference} kick {a}") == f"OK kicked {a}\n"
    assert feed(fake, members) == [Kicked(ROOM, ALICE, OPERATOR)]
    members.asked_kick(ROOM, BOB)
    fake.api(f"conference {conference} kick {b}")
    assert feed(fake, members) == []
    assert fake.conferences() == []


def test_a_member_whose_add_was_missed_is_learned_from_the_list() -> None:
    fake = FakeFreeSwitch("x")
    members = ConferenceMembers()
    conference = conference_name(ROOM)
    a = fake.join(conference, ALICE)  # before Chorus expected it: the event is dropped
    feed(fake, members)
    members.expect(ROOM, ALICE)
    assert members.member_id(ROOM, ALICE) is None
    fake.api(f"conference {conference} mute {a}")
    feed(fake, members)
    for listed in parse_conference_list(fake.api(f"conference {conference} list")):
        members.learn(ROOM, listed)
    assert members.member_id(ROOM, ALICE) == a
    fake.api(f"conference {conference} unmute {a}")
    assert feed(fake, members) == [MuteChanged(ROOM, ALICE, muted=False, by_operator=True)]


def test_deaf_and_energy_events_are_kept_and_raise_nothing() -> None:
    fake = FakeFreeSwitch("x")
    members = ConferenceMembers()
    conference = members.expect(ROOM, ALICE)
    a = fake.join(conference, ALICE)
    feed(fake, members)
    assert members.deaf(ROOM, ALICE) is False and members.energy_level(ROOM, ALICE) == 200
    members.asked_deaf(ROOM, ALICE, True)
    assert fake.api(f"conference {conference} deaf {a}") == f"OK deaf {a}\n"
    assert fake.api(f"conference {conference} energy {a} 650") == f"Energy {a} = 650\n"
    assert fake.api(f"conference {conference} energy {a} up") == f"Energy {a} = 850\n"
    assert feed(fake, members) == []
    assert members.deaf(ROOM, ALICE) is True and members.energy_level(ROOM, ALICE) == 850
    fake.api(f"conference {conference} undeaf {a}")  # an operator's: logged, no event
    assert feed(fake, members) == []
    assert members.deaf(ROOM, ALICE) is False


def test_list_parsing_takes_mod_conference_lines_only() -> None:
    text = (
        "1;sofia/chorus/alice@127.0.0.1;6f1c;alice;alice;hear|speak|floor;0;0;300\n"
        "2;sofia/chorus/bob@127.0.0.1;7a2d;Bob;bob;hear;0;0;450\n"
    )
    listed = parse_conference_list(text)
    assert [(m.member_id, m.caller_id_number, m.muted, m.deaf, m.energy) for m in listed] == [
        (1, "alice", False, False, 300),
        (2, "bob", True, False, 450),
    ]
    assert parse_conference_list("Conference chorus-x not found\n") == []


def test_members_map_by_the_x_chorus_participant_header_before_the_caller_id() -> None:
    """The leg's X-Chorus-Participant (variable_sip_h_X-Chorus-Participant in the event)
    names the participant even when the caller-id number says otherwise (a dialplan or an
    operator set it); a leg without the header falls back on the caller-id number."""
    fake = FakeFreeSwitch("x")
    members = ConferenceMembers()
    conference = members.expect(ROOM, ALICE)
    members.expect(ROOM, BOB)
    a = fake.join(conference, "1000", "Front desk", sip_headers={"X-Chorus-Participant": ALICE})
    b = fake.join(conference, BOB, sip_headers={})
    fake.join(conference, ALICE, sip_headers={"X-Chorus-Participant": "someone-else"})
    assert PARTICIPANT_VARIABLE.encode() in fake.emitted[1]
    assert feed(fake, members) == []
    assert members.member_id(ROOM, ALICE) == a and members.member_id(ROOM, BOB) == b
