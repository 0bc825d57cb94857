"""RFC 4028 session timers between two real UserAgents (tests/sip_endpoints.py).

The wire is real (UDP and TCP on 127.0.0.1); the session timer's clock is not waited for: a
test reads the deadline the session reports and calls ``handle_timer`` with it, as the UA's
loop timer would when that time comes. So a refresh or an expiry happens at once and the
test is the same on an idle and on a busy machine.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from control.sip.headers import Headers
from control.sip.message import Request
from control.sip.session import SESSION_EXPIRED, Session
from control.sip.sessiontimer import SessionTimer, TimerPolicy
from control.sip.useragent import UserAgent
from tests.peers.wait import wait_until
from tests.sip_endpoints import ANSWER, BACKSTOP, OFFER, Pair, open_pair, requests, responses


@pytest.fixture(params=["udp", "tcp"])
async def pair(request: pytest.FixtureRequest) -> AsyncIterator[Pair]:
    async with open_pair(request.param) as opened:
        yield opened


def timer_of(session: Session) -> SessionTimer:
    assert session.session_timer is not None
    return session.session_timer


def fire(session: Session, deadline: float | None) -> None:
    """What the UA's loop timer does at ``deadline`` (it never fires on its own in a test:
    the intervals here are 1800 s)."""
    assert deadline is not None
    session.handle_timer(deadline)


def header(message: Request, name: str) -> str | None:
    return message.headers.get(name)


async def test_2xx_grants_the_timer_and_the_uac_refreshes(pair: Pair) -> None:
    client_session, server_session = await pair.call()
    invite = requests(pair.server.layer.received, "INVITE")[0]
    assert "timer" in invite.headers.get_all("Supported")
    assert header(invite, "Session-Expires") == "1800"
    assert header(invite, "Min-SE") == "90"
    ok = responses(pair.client.layer.received, "INVITE", 200)[0]
    assert ok.headers.get("Session-Expires") == "1800;refresher=uac"
    assert ok.headers.get_all("Require") == ["timer"]
    # Only what works is advertised: no RFC 3891 replaces, no RFC 4488 norefersub.
    assert ok.headers.get_all("Supported") == ["timer"]
    assert timer_of(client_session).local_refresh
    assert not timer_of(server_session).local_refresh


async def test_refresher_sends_a_reinvite_with_the_same_sdp_at_half_the_interval(
    pair: Pair,
) -> None:
    client_session, server_session = await pair.call()
    client_timer, server_timer = timer_of(client_session), timer_of(server_session)
    assert client_timer.refresh_at is not None
    first_expiry = server_timer.expires_at
    fire(client_session, client_session.next_timer())
    assert await wait_until(lambda: pair.server.offers, timeout=BACKSTOP)
    refresh = requests(pair.server.layer.received, "INVITE")[-1]
    assert refresh.body == OFFER  # the same SDP: a refresh, not a change
    assert header(refresh, "Session-Expires") == "1800;refresher=uac"
    # The 2xx was sent and received: both clocks start again, nobody gives up.
    assert await wait_until(lambda: client_timer.next_timer() != client_timer.expires_at)
    assert server_timer.expires_at > first_expiry
    assert not client_session.terminated.done() and not server_session.terminated.done()


async def test_no_refresh_before_expiry_ends_the_session_with_bye(pair: Pair) -> None:
    client_session, server_session = await pair.call()
    server_timer = timer_of(server_session)
    fire(server_session, server_timer.next_timer())
    assert server_timer.next_timer() is None
    assert await asyncio.wait_for(server_session.terminated, BACKSTOP) == SESSION_EXPIRED
    assert await asyncio.wait_for(client_session.terminated, BACKSTOP) == "remote BYE"
    assert len(requests(pair.server.layer.sent, "BYE")) == 1
    assert not pair.server.ua.dialogs


async def test_uas_refreshes_for_a_uac_without_timers(pair: Pair) -> None:
    pair.client.ua.session_timers = None
    client_session, server_session = await pair.call()
    invite = requests(pair.server.layer.received, "INVITE")[0]
    assert header(invite, "Session-Expires") is None
    ok = responses(pair.client.layer.received, "INVITE", 200)[0]
    assert ok.headers.get("Session-Expires") == "1800;refresher=uas"
    assert "Require" not in ok.headers  # §9: not for a UAC that does not support timer
    assert client_session.session_timer is None
    server_timer = timer_of(server_session)
    assert server_timer.local_refresh
    fire(server_session, server_session.next_timer())
    assert await wait_until(lambda: pair.client.offers, timeout=BACKSTOP)
    refresh = requests(pair.client.layer.received, "INVITE")[-1]
    assert refresh.body == ANSWER  # the SDP the focus answered with, offered again
    assert header(refresh, "Session-Expires") == "1800;refresher=uac"
    # The client's 2xx says nothing of timers: the focus keeps refreshing on its own clock.
    assert await wait_until(lambda: server_timer.next_timer() == server_timer.refresh_at)
    assert server_timer.local_refresh
    assert not server_session.terminated.done()


async def test_initial_invite_too_small_gets_422_and_the_uac_retries(pair: Pair) -> None:
    pair.client.ua.session_timers = TimerPolicy(session_expires=60, min_se=30)
    client_session, server_session = await pair.call()
    refused = responses(pair.client.layer.received, "INVITE", 422)
    assert len(refused) == 1 and refused[0].headers.get("Min-SE") == "90"
    invites = requests(pair.server.layer.received, "INVITE")
    assert [header(i, "Session-Expires") for i in invites] == ["60", "90"]
    assert [i.cseq.number for i in invites] == [1, 2]
    assert len({i.call_id for i in invites}) == 1  # §7.4: the same call, tried again
    assert timer_of(client_session).interval == timer_of(server_session).interval == 90


async def test_reinvite_too_small_gets_422_with_min_se(pair: Pair) -> None:
    client_session, server_session = await pair.call()
    peer = client_session.source if client_session.source.reliable else pair.server_peer
    request = client_session.dialog.create_request(
        "INVITE",
        via=pair.client.ua.via_for(peer),
        body=OFFER,
        content_type="application/sdp",
        extra_headers=[("Supported", "timer"), ("Session-Expires", "30")],
    )
    response = await asyncio.wait_for(pair.client.ua.send_request(request, peer).final, BACKSTOP)
    assert response.status == 422
    assert response.headers.get("Min-SE") == "90"
    assert not pair.server.offers  # the application never saw it
    assert not server_session.terminated.done()


async def test_update_without_body_refreshes(pair: Pair) -> None:
    client_session, server_session = await pair.call()
    server_timer = timer_of(server_session)
    first_expiry = server_timer.expires_at
    response = await client_session.request(
        "UPDATE", extra_headers=[("Supported", "timer"), ("Session-Expires", "600;refresher=uac")]
    )
    assert response.status == 200
    assert response.headers.get("Session-Expires") == "600;refresher=uac"
    assert response.headers.get_all("Require") == ["timer"]
    assert server_timer.interval == 600
    assert server_timer.expires_at != first_expiry


async def test_refresh_answered_481_ends_the_session(pair: Pair) -> None:
    client_session, server_session = await pair.call()
    pair.server.ua.dialogs.pop(server_session.dialog.id)  # the far end forgot the dialog
    fire(client_session, client_session.next_timer())
    assert await asyncio.wait_for(client_session.terminated, BACKSTOP) == "refresh got 481"
    assert not pair.client.ua.dialogs


def test_min_se_is_written_in_its_canonical_form() -> None:
    assert list(Headers([("min-se", "90")])) == [("Min-SE", "90")]


class _Owner:
    def __init__(self, deadline: float) -> None:
        self.deadline: float | None = deadline

    def next_timer(self) -> float | None:
        return self.deadline

    def handle_timer(self, now: float) -> None:
        pass


async def test_ended_owners_do_not_stay_in_the_timer_heap() -> None:
    # Each session has a deadline half an hour away; one that ended must not be kept alive
    # by the UA's heap until then.
    ua = UserAgent()
    far = ua.now() + 1800
    owners = [_Owner(far + i) for i in range(200)]
    for owner in owners:
        ua.schedule(owner)
    for owner in owners[:150]:
        owner.deadline = None
        ua.unschedule(owner)
    kept = ua._timer_heap.owners()
    assert all(owner in kept for owner in owners[150:])  # the live ones keep their deadline
    assert not any(owner in kept for owner in owners[:150])  # ended ones let go at once
    assert len(kept) <= 50 + 64  # and their emptied entries linger until the next compaction
    await ua.close()
