"""RFC 4028 session timers, sans-IO: header grammar, UAS/UAC negotiation, and the clock.

Every time here is an argument: the ``SessionTimer`` is fed ``now`` and asked for its deadline,
so nothing depends on how busy the machine is.
"""

from __future__ import annotations

import pytest

from control.config import ConfigError, parse_config
from control.sip.errors import SipError
from control.sip.events import RefreshDue, SessionExpired
from control.sip.headers import Headers
from control.sip.message import Request, Response
from control.sip.sessiontimer import (
    IntervalTooSmall,
    Negotiated,
    Refresher,
    SessionExpires,
    SessionTimer,
    TimerPolicy,
    answer_request,
    offer_headers,
    parse_min_se,
    parse_session_expires,
    read_answer,
    retry_interval,
    supports_timer,
)
from control.sip.uri import SipUri

POLICY = TimerPolicy(session_expires=1800, min_se=90)


def invite(*extra: tuple[str, str]) -> Request:
    headers = Headers(
        [
            ("Via", "SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKabc"),
            ("From", "<sip:alice@127.0.0.1>;tag=a1"),
            ("To", "<sip:room@127.0.0.1>"),
            ("Call-ID", "c1"),
            ("CSeq", "1 INVITE"),
            ("Contact", "<sip:alice@127.0.0.1:5062>"),
            *extra,
        ]
    )
    return Request(headers=headers, method="INVITE", uri=SipUri(host="127.0.0.1", user="room"))


def ok(*extra: tuple[str, str]) -> Response:
    response = invite().make_response(200, to_tag="b1")
    for name, value in extra:
        response.headers.add(name, value)
    return response


# --- grammar ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1800", SessionExpires(1800)),
        ("90;refresher=uac", SessionExpires(90, Refresher.UAC)),
        ("4000 ; refresher=UAS", SessionExpires(4000, Refresher.UAS)),
        ("600;foo=bar", SessionExpires(600)),
    ],
)
def test_session_expires_parses(text: str, expected: SessionExpires) -> None:
    assert parse_session_expires(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "-5", "0", "90;refresher=proxy", "1.5"])
def test_bad_session_expires_is_a_400(text: str) -> None:
    with pytest.raises(SipError) as info:
        parse_session_expires(text)
    assert info.value.status == 400


def test_session_expires_serializes_with_its_refresher() -> None:
    assert str(SessionExpires(90, Refresher.UAC)) == "90;refresher=uac"
    assert str(SessionExpires(1800)) == "1800"


def test_min_se_parses_and_rejects_garbage() -> None:
    assert parse_min_se("90") == 90
    assert parse_min_se(" 120;x=y") == 120
    with pytest.raises(SipError):
        parse_min_se("soon")


def test_supported_or_require_timer_means_support() -> None:
    assert supports_timer(invite(("Supported", "100rel, timer")))
    assert supports_timer(invite(("Require", "timer")))
    assert supports_timer(invite(("k", "TIMER")))  # compact form, any case
    assert not supports_timer(invite(("Supported", "100rel")))


def test_policy_validates_its_numbers() -> None:
    with pytest.raises(ValueError):
        TimerPolicy(session_expires=60, min_se=90)
    with pytest.raises(ValueError):
        TimerPolicy(session_expires=10, min_se=0)
    assert TimerPolicy(session_expires=3, min_se=2).min_se == 2  # tests may go below 90


# --- UAS negotiation (§9) --------------------------------------------------------------------


def test_uas_keeps_the_uacs_interval_and_refresher() -> None:
    request = invite(("Supported", "timer"), ("Session-Expires", "90;refresher=uac"))
    negotiated = answer_request(request, POLICY)
    assert negotiated == Negotiated(90, Refresher.UAC, require=True)
    assert negotiated.response_headers() == [
        ("Session-Expires", "90;refresher=uac"),
        ("Require", "timer"),
    ]
    assert not negotiated.local_refresh(we_are_uac=False)  # the peer refreshes


def test_uas_answers_422_with_min_se_below_its_minimum() -> None:
    request = invite(("Supported", "timer"), ("Session-Expires", "60"))
    with pytest.raises(IntervalTooSmall) as info:
        answer_request(request, POLICY)
    assert info.value.status == 422
    assert info.value.headers == [("Min-SE", "90")]


def test_uas_shortens_a_long_interval_to_its_own_but_not_below_the_request_min_se() -> None:
    long = invite(("Supported", "timer"), ("Session-Expires", "7200"))
    assert answer_request(long, POLICY).interval == 1800
    floor = invite(("Supported", "timer"), ("Session-Expires", "7200"), ("Min-SE", "3600"))
    assert answer_request(floor, POLICY).interval == 3600


def test_uas_lets_a_supporting_uac_refresh_when_it_does_not_say() -> None:
    negotiated = answer_request(invite(("Supported", "timer")), POLICY)
    assert negotiated == Negotiated(1800, Refresher.UAC, require=True)


def test_uas_refreshes_itself_for_a_uac_without_timer_and_does_not_require_it() -> None:
    negotiated = answer_request(invite(("Session-Expires", "300")), POLICY)
    assert negotiated == Negotiated(300, Refresher.UAS, require=False)
    assert negotiated.response_headers() == [("Session-Expires", "300;refresher=uas")]
    assert negotiated.local_refresh(we_are_uac=False)
    plain = answer_request(invite(), POLICY)
    assert plain == Negotiated(1800, Refresher.UAS, require=False)


def test_uas_honours_a_uac_asking_the_uas_to_refresh() -> None:
    request = invite(("Supported", "timer"), ("Session-Expires", "120;refresher=uas"))
    negotiated = answer_request(request, POLICY)
    assert negotiated.refresher is Refresher.UAS
    assert negotiated.local_refresh(we_are_uac=False)


# --- UAC side (§7) ---------------------------------------------------------------------------


def test_uac_offer_headers() -> None:
    assert offer_headers(POLICY, 1800, None) == [
        ("Supported", "timer"),
        ("Session-Expires", "1800"),
        ("Min-SE", "90"),
    ]
    assert ("Session-Expires", "900;refresher=uac") in offer_headers(POLICY, 900, Refresher.UAC)


def test_uac_reads_the_2xx() -> None:
    answered = read_answer(ok(("Session-Expires", "900;refresher=uas")), 1800)
    assert answered == Negotiated(900, Refresher.UAS)
    assert not answered.local_refresh(we_are_uac=True)
    # No refresher named: the UAC (we) refresh; no Session-Expires at all: we still refresh on
    # the interval we offered (a 408 to a refresh is how a vanished peer shows).
    assert read_answer(ok(("Session-Expires", "900")), 1800) == Negotiated(900, Refresher.UAC)
    assert read_answer(ok(), 1800) == Negotiated(1800, Refresher.UAC)


def test_uac_retries_after_422_only_with_a_larger_min_se() -> None:
    too_small = invite().make_response(422, to_tag="b1")
    too_small.headers.add("Min-SE", "3600")
    assert retry_interval(too_small, 1800) == 3600
    assert retry_interval(too_small, 3600) is None
    assert retry_interval(invite().make_response(422, to_tag="b1"), 1800) is None


# --- the clock (§7.4, §10) -------------------------------------------------------------------


def drain(timer: SessionTimer) -> list[object]:
    events = []
    while (event := timer.next_event()) is not None:
        events.append(event)
    return events


def test_refresher_refreshes_at_half_the_interval_then_expires_if_nothing_succeeds() -> None:
    timer = SessionTimer(90, local_refresh=True, now=100.0)
    assert timer.next_timer() == 145.0
    timer.handle_timer(144.9)
    assert drain(timer) == []
    timer.handle_timer(145.0)
    assert drain(timer) == [RefreshDue(90)]
    # The refresh did not succeed: next comes the expiry, SE - min(32, SE/3) = 90 - 30.
    assert timer.next_timer() == 160.0
    timer.handle_timer(160.0)
    assert drain(timer) == [SessionExpired(90)]
    assert timer.next_timer() is None


def test_a_successful_refresh_restarts_the_clock() -> None:
    timer = SessionTimer(90, local_refresh=True, now=0.0)
    timer.handle_timer(45.0)
    assert drain(timer) == [RefreshDue(90)]
    timer.restart(90, local_refresh=True, now=46.0)
    assert timer.next_timer() == 91.0
    timer.handle_timer(60.0)
    assert drain(timer) == []


def test_non_refresher_expires_32_seconds_early_for_long_intervals() -> None:
    timer = SessionTimer(1800, local_refresh=False, now=0.0)
    assert timer.next_timer() == 1800 - 32
    timer.handle_timer(1767.0)
    assert drain(timer) == []
    timer.handle_timer(1768.0)
    assert drain(timer) == [SessionExpired(1800)]


def test_a_late_caller_gets_refresh_and_expiry_in_one_call() -> None:
    timer = SessionTimer(6, local_refresh=True, now=0.0)
    timer.handle_timer(100.0)
    assert drain(timer) == [RefreshDue(6), SessionExpired(6)]


def test_a_refresh_by_the_peer_can_hand_the_refresh_to_us() -> None:
    timer = SessionTimer(120, local_refresh=False, now=0.0)
    assert timer.next_timer() == 120 - 32
    timer.restart(120, local_refresh=True, now=10.0)
    assert timer.next_timer() == 70.0


def test_a_stopped_timer_never_fires() -> None:
    timer = SessionTimer(90, local_refresh=True, now=0.0)
    timer.stop()
    timer.handle_timer(1000.0)
    assert timer.next_timer() is None
    assert drain(timer) == []


# --- configuration ---------------------------------------------------------------------------


def test_config_defaults_and_a_small_test_floor() -> None:
    default = parse_config({}).sip
    assert (default.session_expires, default.min_se) == (1800, 90)
    small = parse_config({"sip": {"session_expires": 4, "min_se": 2}}).sip
    assert (small.session_expires, small.min_se) == (4, 2)


@pytest.mark.parametrize(
    "sip",
    [
        {"min_se": 0},
        {"min_se": 120, "session_expires": 100},
        {"session_expires": 30},  # below the default min_se of 90
        {"min_se": "90"},
    ],
)
def test_config_rejects_bad_session_timer_numbers(sip: dict[str, object]) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"sip": sip})
    assert info.value.key in ("sip.min_se", "sip.session_expires")
