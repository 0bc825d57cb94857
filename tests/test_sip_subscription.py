"""The RFC 6665 cores (control/sip/subscription.py), fed a fake clock: SUBSCRIBE creates,
refreshes and ends a subscription (``Expires: 0``: a fetch or an unsubscribe, with a final
NOTIFY), Expires capped and a floor answered 423 with Min-Expires, NOTIFYs in order one in
flight with ``Subscription-State: active;expires=…`` / ``terminated;reason=…``, the expiry
timer, 481 and 408 to a NOTIFY ending the subscription; the subscriber side refreshing before
expiry and taking a NOTIFY that comes before the SUBSCRIBE's 200 (§4.1.2.4). Then the user
agent's usage table (§4.5.2): in a dialog, a SUBSCRIBE reaches the subscription its Event
names, a SUBSCRIBE for another id the dialog's INVITE usage (which makes the new one), and a
dialog holding no usage any more answers 481. An unknown event package is 489 with
Allow-Events (control/app.py Subscription.bad_event)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from control.app import Subscription
from control.config import ListenAddress
from control.sip.errors import SipError
from control.sip.message import Request, Response, parse_message
from control.sip.subscription import (
    EventKey,
    ExpiresPolicy,
    IntervalTooBrief,
    NotifierCore,
    NotifyRequest,
    SubscriberCore,
    SubscriptionEnded,
    SubscriptionRefreshDue,
    SubscriptionStateValue,
    SubState,
    parse_event,
    parse_expires,
    parse_subscription_state,
)
from control.sip.transport import Peer, SipTransportLayer
from control.sip.useragent import IncomingRequest, UserAgent
from tests.peers.wait import wait_until

CONF = EventKey("conference")
DOC1, DOC2, DOC3 = b"<v1/>", b"<v2/>", b"<v3/>"
XML = "application/conference-info+xml"


def header(notify: NotifyRequest, name: str) -> str:
    return dict(notify.headers)[name]


def sent(core: NotifierCore, now: float, status: int = 200) -> NotifyRequest:
    """The next NOTIFY, answered ``status``."""
    notify = core.next_notify(now)
    assert notify is not None
    core.notify_answered(status)
    return notify


# --- Event, Expires, Subscription-State ----------------------------------------------------------


def test_event_header_is_package_and_id() -> None:
    assert parse_event("Conference") == EventKey("conference")
    assert parse_event("conference;id=7") == EventKey("conference", "7")
    assert parse_event("refer ; id=93809824") == EventKey("refer", "93809824")
    assert EventKey("conference", "7").header() == "conference;id=7"
    assert EventKey("conference", "7") != EventKey("conference", "8") != EventKey("conference")


@pytest.mark.parametrize("value", [None, "", "  ", ";id=1"])
def test_missing_or_empty_event_is_400(value: str | None) -> None:
    with pytest.raises(SipError) as caught:
        parse_event(value)
    assert caught.value.status == 400


def test_expires_header() -> None:
    assert parse_expires(None) is None
    assert parse_expires(" 600 ") == 600
    assert parse_expires("99999999999") == 2**32 - 1
    with pytest.raises(SipError) as caught:
        parse_expires("-5")
    assert caught.value.status == 400


def test_expires_capped_defaulted_and_zero_kept() -> None:
    policy = ExpiresPolicy(min_expires=60, max_expires=3600, default_expires=1800)
    assert policy.grant(7200) == 3600  # §4.2.1.1: shortened, never lengthened
    assert policy.grant(600) == 600
    assert policy.grant(60) == 60
    assert policy.grant(None) == 1800
    assert policy.grant(0) == 0  # an unsubscribe or a fetch: never 423


def test_expires_below_floor_is_423_with_min_expires() -> None:
    policy = ExpiresPolicy(min_expires=60, max_expires=3600)
    with pytest.raises(IntervalTooBrief) as caught:
        policy.grant(59)
    assert caught.value.status == 423
    assert caught.value.headers == [("Min-Expires", "60")]
    with pytest.raises(IntervalTooBrief):
        policy.grant(1)


def test_subscription_state_parsed_and_written() -> None:
    assert parse_subscription_state("active;expires=300") == SubscriptionStateValue(
        SubState.ACTIVE, expires=300
    )
    value = parse_subscription_state("Terminated;reason=timeout;retry-after=20")
    assert value == SubscriptionStateValue(SubState.TERMINATED, reason="timeout", retry_after=20)
    assert value.header() == "terminated;reason=timeout;retry-after=20"
    assert SubscriptionStateValue(SubState.ACTIVE, expires=42).header() == "active;expires=42"
    assert parse_subscription_state("pending").state is SubState.PENDING
    for bad in (None, "", "gone", "active;expires=soon"):
        with pytest.raises(SipError) as caught:
            parse_subscription_state(bad)
        assert caught.value.status == 400


# --- the notifier ---------------------------------------------------------------------------------


def test_create_sends_active_with_remaining_expires() -> None:
    core = NotifierCore(CONF, 600, now=100.0)
    core.queue(DOC1, XML)
    notify = core.next_notify(now=110.0)
    assert notify is not None and not notify.final
    assert header(notify, "Event") == "conference"
    assert header(notify, "Subscription-State") == "active;expires=590"
    assert (notify.body, notify.content_type) == (DOC1, XML)
    assert core.next_timer() == 700.0


def test_event_header_of_notify_carries_the_id() -> None:
    core = NotifierCore(EventKey("refer", "3"), 60, now=0.0)
    core.queue(b"SIP/2.0 100 Trying", "message/sipfrag;version=2.0")
    assert header(sent(core, 0.0), "Event") == "refer;id=3"


def test_one_notify_in_flight_sent_in_order() -> None:
    core = NotifierCore(CONF, 600, now=0.0)
    core.queue(DOC1, XML)
    core.queue(DOC2, XML)
    first = core.next_notify(0.0)
    assert first is not None and first.body == DOC1
    assert core.in_flight and core.pending == 1
    assert core.next_notify(0.0) is None  # DOC2 waits for the answer to DOC1
    core.notify_answered(200)
    core.queue(DOC3, XML)
    assert [sent(core, 1.0).body, sent(core, 2.0).body] == [DOC2, DOC3]
    assert core.next_notify(3.0) is None


def test_refresh_moves_the_deadline() -> None:
    core = NotifierCore(CONF, 600, now=0.0)
    core.refresh(300, now=500.0)
    assert core.next_timer() == 800.0
    core.handle_timer(now=700.0)  # the old deadline passed: nothing happens
    assert core.reason is None
    core.queue(DOC1, XML)
    assert header(sent(core, 700.0), "Subscription-State") == "active;expires=100"


def test_unsubscribe_sends_final_notify_with_the_last_state() -> None:
    core = NotifierCore(CONF, 600, now=0.0)
    core.queue(DOC1, XML)
    sent(core, 0.0)
    core.refresh(0, now=10.0)  # SUBSCRIBE Expires: 0 (§4.2.1.4)
    final = core.next_notify(10.0)
    assert final is not None and final.final
    assert header(final, "Subscription-State") == "terminated;reason=timeout"
    assert (final.body, final.content_type) == (DOC1, XML)
    assert core.next_event() is None  # over when the final NOTIFY is answered
    core.notify_answered(200)
    assert core.next_event() == SubscriptionEnded("timeout")
    assert core.terminated and core.next_timer() is None


def test_fetch_is_one_final_notify() -> None:
    """An initial ``Expires: 0`` (§4.4.3 fetch): the first NOTIFY is the final one."""
    core = NotifierCore(CONF, 0, now=0.0)
    core.terminate("timeout", DOC1, XML)
    final = core.next_notify(0.0)
    assert final is not None and final.final and final.body == DOC1
    assert header(final, "Subscription-State") == "terminated;reason=timeout"
    core.notify_answered(200)
    assert core.next_event() == SubscriptionEnded("timeout")
    assert core.next_notify(0.0) is None


def test_terminate_sends_what_is_queued_then_the_final_with_its_reason() -> None:
    core = NotifierCore(CONF, 600, now=0.0)
    core.queue(DOC1, XML)
    core.queue(DOC2, XML)
    core.terminate("noresource", DOC3, XML)
    core.queue(b"<late/>", XML)  # after terminate only the final goes out
    notifies = [sent(core, float(i)) for i in range(3)]
    assert [n.body for n in notifies] == [DOC1, DOC2, DOC3]
    assert [n.final for n in notifies] == [False, False, True]
    assert header(notifies[2], "Subscription-State") == "terminated;reason=noresource"
    assert core.next_event() == SubscriptionEnded("noresource")
    assert core.next_notify(9.0) is None


def test_final_notify_without_body_or_history_is_empty() -> None:
    core = NotifierCore(CONF, 600, now=0.0)
    core.terminate("deactivated")
    final = sent(core, 0.0)
    assert final.final and final.body == b"" and final.content_type is None
    assert header(final, "Subscription-State") == "terminated;reason=deactivated"


def test_expiry_timer_ends_with_reason_timeout() -> None:
    core = NotifierCore(CONF, 60, now=0.0)
    core.queue(DOC1, XML)
    sent(core, 0.0)
    assert core.next_timer() == 60.0
    core.handle_timer(now=59.9)
    assert core.next_notify(59.9) is None
    core.handle_timer(now=60.0)  # §4.2.2: not refreshed in time
    assert core.next_timer() is None
    final = sent(core, 60.0)
    assert final.final and header(final, "Subscription-State") == "terminated;reason=timeout"
    assert core.next_event() == SubscriptionEnded("timeout")


def test_refresh_after_termination_does_nothing() -> None:
    core = NotifierCore(CONF, 60, now=0.0)
    core.terminate("noresource")
    sent(core, 0.0)
    core.refresh(600, now=1.0)
    assert core.terminated and core.next_timer() is None


@pytest.mark.parametrize("status", [481, 408])
def test_481_or_408_to_a_notify_ends_the_subscription(status: int) -> None:
    core = NotifierCore(CONF, 600, now=0.0)
    core.queue(DOC1, XML)
    core.queue(DOC2, XML)
    sent(core, 0.0, status=status)
    assert core.next_event() == SubscriptionEnded(str(status))
    assert core.terminated and core.pending == 0
    assert core.next_notify(1.0) is None  # DOC2 is dropped: nobody to send it to
    core.queue(DOC3, XML)
    assert core.next_notify(2.0) is None and core.next_timer() is None


@pytest.mark.parametrize("status", [500, 503, 403])
def test_other_notify_failures_keep_the_subscription(status: int) -> None:
    core = NotifierCore(CONF, 600, now=0.0)
    core.queue(DOC1, XML)
    core.queue(DOC2, XML)
    sent(core, 0.0, status=status)
    assert core.next_event() is None and not core.terminated
    assert sent(core, 1.0).body == DOC2


def test_final_notify_failing_still_ends_it_with_its_reason() -> None:
    core = NotifierCore(CONF, 600, now=0.0)
    core.terminate("noresource", DOC1, XML)
    sent(core, 0.0, status=408)
    assert core.next_event() == SubscriptionEnded("noresource")


# --- the subscriber -------------------------------------------------------------------------------


def test_subscriber_refreshes_before_expiry() -> None:
    core = SubscriberCore(CONF, 600)
    assert core.subscribe_expires() == 600
    core.response_received(200, 600, now=0.0)
    assert core.next_timer() == 568.0  # min(32, 600/3) before expiry
    core.handle_timer(567.0)
    assert core.next_event() is None
    core.handle_timer(568.0)
    assert core.next_event() == SubscriptionRefreshDue(600)
    core.response_received(200, 300, now=570.0)  # the notifier shortened it
    assert core.expires_at == 870.0 and core.next_timer() == 838.0


def test_subscriber_short_expires_refresh_at_two_thirds() -> None:
    core = SubscriberCore(CONF, 60)
    core.response_received(200, 60, now=0.0)
    assert core.next_timer() == 40.0


def test_subscriber_takes_notify_before_the_200() -> None:
    """§4.1.2.4: NOTIFY may arrive before the SUBSCRIBE's 200; it is answered 200 and
    makes the subscription active; the 200 then sets the granted duration."""
    core = SubscriberCore(CONF, 600)
    assert core.state is SubState.PENDING
    status = core.notify_received(SubscriptionStateValue(SubState.ACTIVE, expires=600), now=0.0)
    assert status == 200 and core.state is SubState.ACTIVE
    assert core.expires_at == 600.0
    core.response_received(200, 300, now=0.1)
    assert core.state is SubState.ACTIVE and core.expires_at == pytest.approx(300.1)
    assert core.next_event() is None


def test_subscriber_takes_terminated_notify_before_the_200() -> None:
    core = SubscriberCore(CONF, 0)  # a fetch: one NOTIFY, terminated, may beat the 200
    terminated = SubscriptionStateValue(SubState.TERMINATED, reason="timeout")
    assert core.notify_received(terminated, now=0.0) == 200
    assert core.next_event() == SubscriptionEnded("timeout")
    core.response_received(200, 0, now=0.1)  # the late 200 changes nothing
    assert core.terminated and core.next_event() is None and core.next_timer() is None
    active = SubscriptionStateValue(SubState.ACTIVE, expires=60)
    assert core.notify_received(active, now=1.0) == 481  # §4.1.3: no such subscription


def test_subscriber_notify_may_shorten_but_not_lengthen() -> None:
    core = SubscriberCore(CONF, 600)
    core.response_received(200, 600, now=0.0)
    core.notify_received(SubscriptionStateValue(SubState.ACTIVE, expires=120), now=10.0)
    assert core.expires_at == 130.0
    core.notify_received(SubscriptionStateValue(SubState.ACTIVE, expires=3600), now=20.0)
    assert core.expires_at == 130.0


def test_subscriber_unsubscribe_ends_on_the_terminated_notify() -> None:
    core = SubscriberCore(CONF, 600)
    core.response_received(200, 600, now=0.0)
    assert core.unsubscribe() == 0 and core.subscribe_expires() == 0
    core.response_received(200, 0, now=5.0)
    assert not core.terminated  # the final NOTIFY ends it (§4.1.2.3)
    core.notify_received(SubscriptionStateValue(SubState.TERMINATED, reason="timeout"), now=5.1)
    assert core.next_event() == SubscriptionEnded("timeout")


@pytest.mark.parametrize("status", [423, 489, 403, 404])
def test_subscriber_initial_failure_ends(status: int) -> None:
    core = SubscriberCore(CONF, 10)
    core.response_received(status, None, now=0.0)
    assert core.next_event() == SubscriptionEnded(str(status))


def test_subscriber_failed_refresh_lasts_until_expiry_481_ends_at_once() -> None:
    core = SubscriberCore(CONF, 600)
    core.response_received(200, 600, now=0.0)
    core.handle_timer(568.0)
    assert isinstance(core.next_event(), SubscriptionRefreshDue)
    core.response_received(500, None, now=568.5)
    assert not core.terminated and core.next_timer() == 600.0
    core.handle_timer(600.0)
    assert core.next_event() == SubscriptionEnded("timeout")

    lost = SubscriberCore(CONF, 600)
    lost.response_received(200, 600, now=0.0)
    lost.response_received(481, None, now=568.0)  # §4.1.2.2: the notifier forgot it
    assert lost.next_event() == SubscriptionEnded("481")


def test_subscriber_200_with_expires_zero_ends() -> None:
    core = SubscriberCore(CONF, 600)
    core.response_received(200, 0, now=0.0)
    assert core.next_event() == SubscriptionEnded("timeout")


# --- two cores back to back -----------------------------------------------------------------------


def test_subscriber_and_notifier_back_to_back() -> None:
    policy = ExpiresPolicy(min_expires=60, max_expires=300)
    subscriber = SubscriberCore(CONF, 900)
    granted = policy.grant(subscriber.subscribe_expires())
    notifier = NotifierCore(CONF, granted, now=0.0)
    subscriber.response_received(200, granted, now=0.0)
    notifier.queue(DOC1, XML)
    notify = sent(notifier, 0.0)
    state = parse_subscription_state(header(notify, "Subscription-State"))
    assert subscriber.notify_received(state, now=0.0) == 200
    assert subscriber.expires_at == 300.0
    now = subscriber.next_timer()
    assert now == 268.0
    subscriber.handle_timer(now)
    due = subscriber.next_event()
    assert isinstance(due, SubscriptionRefreshDue)
    granted = policy.grant(due.expires)
    notifier.refresh(granted, now)
    subscriber.response_received(200, granted, now)
    notifier.queue(DOC2, XML)
    state = parse_subscription_state(header(sent(notifier, now), "Subscription-State"))
    assert state == SubscriptionStateValue(SubState.ACTIVE, expires=300)
    subscriber.notify_received(state, now)
    notifier.refresh(policy.grant(subscriber.unsubscribe()), now + 1)
    subscriber.response_received(200, 0, now + 1)
    final = sent(notifier, now + 1)
    assert (
        subscriber.notify_received(
            parse_subscription_state(header(final, "Subscription-State")), now + 1
        )
        == 200
    )
    assert notifier.next_event() == SubscriptionEnded("timeout")
    assert subscriber.next_event() == SubscriptionEnded("timeout")


# --- usages in a dialog (user agent) ---------------------------------------------------------


@dataclass
class RecordingUsage:
    """A named stand-in for a session or a notifier: records what it is handed, answers 200."""

    name: str
    seen: list[str] = field(default_factory=list)

    def handle_request(self, incoming: IncomingRequest) -> None:
        self.seen.append(f"{incoming.method} {incoming.request.headers.get('Event')}")
        incoming.respond(200)

    def handle_ack(self, request: Request, peer: Peer) -> None:
        self.seen.append("ACK")


class Answers(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.responses: list[Response] = []

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        message = parse_message(data)
        if isinstance(message, Response):
            self.responses.append(message)


@dataclass
class Wire:
    ua: UserAgent
    peer: Peer
    answers: Answers
    cseq: int = 1

    def in_dialog(self, method: str, event: str | None) -> Request:
        self.cseq += 1
        lines = [
            f"{method} sip:room@127.0.0.1 SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.peer.port};branch=z9hG4bK-u{self.cseq}",
            "From: <sip:alice@127.0.0.1>;tag=theirs",
            "To: <sip:room@127.0.0.1>;tag=ours",
            "Call-ID: usages-1",
            f"CSeq: {self.cseq} {method}",
            "Contact: <sip:alice@127.0.0.1>",
            "Max-Forwards: 70",
        ]
        if event is not None:
            lines.append(f"Event: {event}")
        lines.append("Content-Length: 0")
        request = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())
        assert isinstance(request, Request)
        return request

    async def send(self, method: str, event: str | None = None) -> int:
        before = len(self.answers.responses)
        self.ua.handle_message(self.in_dialog(method, event), self.peer)
        assert await wait_until(lambda: len(self.answers.responses) > before, timeout=5)
        return self.answers.responses[before].status


@pytest.fixture
async def wire() -> AsyncIterator[Wire]:
    ua = UserAgent()
    layer = SipTransportLayer(ua.handle_message)
    await layer.start((ListenAddress("udp", "127.0.0.1", 0),))
    ua.transport = layer
    loop = asyncio.get_running_loop()
    answers = Answers()
    endpoint, _ = await loop.create_datagram_endpoint(lambda: answers, local_addr=("127.0.0.1", 0))
    port = endpoint.get_extra_info("sockname")[1]
    try:
        yield Wire(ua, Peer("udp", "127.0.0.1", port), answers)
    finally:
        endpoint.close()
        await layer.stop()
        await ua.close()


DIALOG = ("usages-1", "ours", "theirs")


async def test_requests_reach_the_usage_their_event_names(wire: Wire) -> None:
    session, subscription = RecordingUsage("INVITE"), RecordingUsage("conference")
    wire.ua.dialogs[DIALOG] = session
    wire.ua.add_usage(DIALOG, EventKey("conference"), subscription)
    assert await wire.send("SUBSCRIBE", "conference") == 200
    assert await wire.send("SUBSCRIBE", "Conference") == 200  # packages are tokens
    # A new subscription in the dialog (another id): the INVITE usage makes it (§4.5.2).
    assert await wire.send("SUBSCRIBE", "conference;id=2") == 200
    assert await wire.send("INFO") == 200
    assert subscription.seen == ["SUBSCRIBE conference", "SUBSCRIBE Conference"]
    assert session.seen == ["SUBSCRIBE conference;id=2", "INFO None"]


async def test_bye_ends_the_invite_usage_only(wire: Wire) -> None:
    session, subscription = RecordingUsage("INVITE"), RecordingUsage("conference")
    wire.ua.dialogs[DIALOG] = session
    wire.ua.add_usage(DIALOG, EventKey("conference", "1"), subscription)
    del wire.ua.dialogs[DIALOG]  # what the session does on BYE
    assert wire.ua.dialog_alive(DIALOG)
    assert await wire.send("SUBSCRIBE", "conference;id=1") == 200
    assert subscription.seen == ["SUBSCRIBE conference;id=1"]
    # Only a subscription is left: a new one, or any other request, finds no usage.
    assert await wire.send("SUBSCRIBE", "conference;id=2") == 481
    assert await wire.send("INFO") == 481
    wire.ua.remove_usage(DIALOG, EventKey("conference", "1"))
    assert not wire.ua.dialog_alive(DIALOG) and DIALOG not in wire.ua.event_usages
    assert await wire.send("SUBSCRIBE", "conference;id=1") == 481
    assert subscription.seen == ["SUBSCRIBE conference;id=1"]


async def test_unknown_event_package_is_489_with_allow_events(wire: Wire) -> None:
    request = wire.in_dialog("SUBSCRIBE", "presence")
    request.headers.set("To", "<sip:room@127.0.0.1>")  # out of dialog
    captured: list[Subscription] = []

    async def handler(incoming: IncomingRequest) -> None:
        subscription = Subscription(incoming)
        captured.append(subscription)
        if subscription.package != "conference":
            subscription.bad_event("conference")

    wire.ua.request_handler = handler
    before = len(wire.answers.responses)
    wire.ua.handle_message(request, wire.peer)
    assert await wait_until(lambda: len(wire.answers.responses) > before, timeout=5)
    response = wire.answers.responses[before]
    assert response.status == 489
    assert response.headers.get("Allow-Events") == "conference"
    assert captured[0].package == "presence"
