"""INVITE sessions (RFC 3261 §13–15) between two real UserAgents on 127.0.0.1 sockets.

The endpoints (``tests/sip_endpoints.py``): one UA places calls with ``place_call``, the other
accepts them and answers re-INVITEs through a hook a test can replace, over UDP and TCP with
T1 = 50 ms; ``TappedLayer`` records the wire and can drop chosen outgoing messages.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from control.sip.compose import build_request
from control.sip.message import Request, Response
from control.sip.session import SDP, Offer, Session, SessionState
from control.sip.transaction import build_cancel
from control.sip.uri import NameAddr
from tests.peers.wait import wait_until
from tests.sip_endpoints import (
    ANSWER,
    BACKSTOP,
    OFFER,
    Message,
    Pair,
    open_pair,
    requests,
    responses,
)


@pytest.fixture(params=["udp", "tcp"])
async def pair(request: pytest.FixtureRequest) -> AsyncIterator[Pair]:
    async with open_pair(request.param) as opened:
        yield opened


udp_only = pytest.mark.parametrize("pair", ["udp"], indirect=True)


# --- call set-up (§13.2, §13.3) ----------------------------------------------------------------


async def test_call_setup_confirms_both_sides(pair: Pair) -> None:
    client_session, server_session = await pair.call()
    assert client_session.state is SessionState.CONFIRMED
    assert server_session.state is SessionState.CONFIRMED
    assert client_session.is_uac and not server_session.is_uac
    # Both sides hold the same dialog, seen from opposite ends (§12).
    cd, sd = client_session.dialog, server_session.dialog
    assert (cd.call_id, cd.local_tag, cd.remote_tag) == (sd.call_id, sd.remote_tag, sd.local_tag)
    assert pair.client.ua.dialogs[cd.id] is client_session
    assert pair.server.ua.dialogs[sd.id] is server_session
    # The offer reached the server, the answer the client; the ACK confirmed the server side.
    assert pair.server.incoming[0].request.body == OFFER
    ok = responses(pair.client.layer.received, "INVITE", 200)[0]
    assert ok.body == ANSWER
    assert ok.contacts[0].uri == sd.local_contact.uri
    assert requests(pair.server.layer.received, "ACK")


async def test_uas_confirmed_waits_for_the_ack(pair: Pair) -> None:
    # Hold back the client's ACK: the 200 is out, but the UAS session is not yet confirmed.
    held: list[Message] = []
    pair.client.layer.drop = lambda m: isinstance(m, Request) and m.method == "ACK" and not held
    session, response = await pair.place()
    assert response.status == 200 and session is not None
    assert await wait_until(lambda: pair.client.layer.dropped, timeout=BACKSTOP)
    held.extend(pair.client.layer.dropped)
    server_session = pair.server.sessions[0]
    assert server_session.state is SessionState.EARLY
    assert not server_session.confirmed.done()
    # The 2xx is retransmitted; its next ACK gets through and confirms the session.
    await asyncio.wait_for(server_session.confirmed, BACKSTOP)
    assert server_session.state is SessionState.CONFIRMED


# --- re-INVITE (§14) ---------------------------------------------------------------------------


async def test_reinvite_from_client(pair: Pair) -> None:
    client_session, server_session = await pair.call()
    response = await client_session.reinvite(OFFER + b"a=sendonly\r\n")
    assert response.status == 200
    assert response.body.startswith(ANSWER)
    assert pair.server.offers == [OFFER + b"a=sendonly\r\n"]
    # §14.2: the UAS's 2xx is acknowledged like any other; the dialog stays up.
    assert await wait_until(
        lambda: len(requests(pair.server.layer.received, "ACK")) >= 2, timeout=BACKSTOP
    )
    assert server_session.dialog.remote_seq == client_session.dialog.local_seq == 2
    assert client_session.state is server_session.state is SessionState.CONFIRMED


async def test_reinvite_from_server(pair: Pair) -> None:
    client_session, server_session = await pair.call()
    response = await server_session.reinvite(ANSWER + b"a=recvonly\r\n")
    assert response.status == 200
    assert pair.client.offers == [ANSWER + b"a=recvonly\r\n"]
    assert await wait_until(lambda: requests(pair.client.layer.received, "ACK"), timeout=BACKSTOP)
    # The UAS's local CSeq space starts empty (§12.1.1); the client learns it from this request.
    assert server_session.dialog.local_seq == 1
    assert client_session.dialog.remote_seq == 1
    assert client_session.state is server_session.state is SessionState.CONFIRMED


async def test_reinvite_both_ways_in_turn(pair: Pair) -> None:
    client_session, server_session = await pair.call()
    for round_ in range(2):
        assert (await client_session.reinvite(OFFER)).status == 200
        assert (await server_session.reinvite(ANSWER)).status == 200
        assert len(pair.server.offers) == len(pair.client.offers) == round_ + 1


async def test_reinvite_glare_backs_off_and_both_succeed(pair: Pair) -> None:
    # §14.1/§14.2: both sides re-INVITE at once; each answers the other's with 491 and retries
    # after a random wait (2.1–4 s for the Call-ID owner, the caller; 0–2 s for the callee).
    client_session, server_session = await pair.call()
    client_offer, server_offer = OFFER + b"a=x-from:client\r\n", ANSWER + b"a=x-from:server\r\n"
    client_response, server_response = await asyncio.gather(
        client_session.reinvite(client_offer), server_session.reinvite(server_offer)
    )
    assert client_response.status == 200
    assert server_response.status == 200
    seen_491 = responses(pair.client.layer.received, "INVITE", 491) + responses(
        pair.server.layer.received, "INVITE", 491
    )
    assert seen_491
    # Each re-INVITE was finally answered exactly once, by the other side's hook.
    assert pair.server.offers == [client_offer]
    assert pair.client.offers == [server_offer]
    # The back-offs came from the §14.1 ranges for each role.
    assert pair.client.rng.draws and set(pair.client.rng.draws) == {(2.1, 4.0)}
    assert pair.server.rng.draws and set(pair.server.rng.draws) == {(0, 2)}
    assert client_session.state is server_session.state is SessionState.CONFIRMED


async def test_reinvite_while_previous_unanswered_is_500_with_retry_after(pair: Pair) -> None:
    client_session, server_session = await pair.call()
    release = asyncio.Event()

    async def slow(session: Session, offer: Offer) -> None:
        pair.server.offers.append(offer.body)
        await asyncio.wait_for(release.wait(), BACKSTOP)
        session.answer_reinvite(offer, ANSWER)

    pair.server.on_reinvite = slow
    first = asyncio.ensure_future(client_session.reinvite(OFFER + b"a=x-first\r\n"))
    assert await wait_until(lambda: pair.server.offers, timeout=BACKSTOP)
    # A second re-INVITE on the dialog while the first has no final answer (§14.2).
    second = pair.send_in_dialog(pair.client, client_session, "INVITE", body=OFFER)
    refused = await asyncio.wait_for(second.final, BACKSTOP)
    assert refused.status == 500
    retry_after = refused.headers.get("Retry-After")
    assert retry_after is not None and 0 <= int(retry_after) <= 10
    release.set()
    assert (await asyncio.wait_for(first, BACKSTOP)).status == 200
    assert pair.server.offers == [OFFER + b"a=x-first\r\n"]
    assert server_session.state is SessionState.CONFIRMED


async def test_reinvite_without_hook_is_488(pair: Pair) -> None:
    client_session, server_session = await pair.call()
    server_session.on_reinvite = None
    response = await client_session.reinvite(OFFER)
    assert response.status == 488
    assert client_session.state is server_session.state is SessionState.CONFIRMED


async def test_lost_ack_for_reinvite_2xx_is_sent_again(pair: Pair) -> None:
    # §13.2.2.4: the UAC ACKs every 2xx retransmission, re-INVITE included, so a lost ACK
    # is repaired by the UAS's next 2xx (§13.3.1.4) instead of ending the call after 64*T1.
    client_session, _ = await pair.call()
    lost: list[Message] = []
    pair.client.layer.drop = lambda m: (
        isinstance(m, Request) and m.method == "ACK" and m.cseq.number == 2 and not lost
    )
    assert (await client_session.reinvite(OFFER)).status == 200
    assert await wait_until(lambda: pair.client.layer.dropped, timeout=BACKSTOP)
    lost.extend(pair.client.layer.dropped)
    assert await wait_until(
        lambda: [a for a in requests(pair.server.layer.received, "ACK") if a.cseq.number == 2],
        timeout=BACKSTOP,
    )
    reinvite_2xx = [
        r for r in responses(pair.server.layer.sent, "INVITE", 200) if r.cseq.number == 2
    ]
    assert len(reinvite_2xx) >= 2  # the first copy, whose ACK was lost, and a retransmission
    assert client_session.state is SessionState.CONFIRMED


async def test_stale_ack_does_not_stop_reinvite_2xx_retransmission(pair: Pair) -> None:
    # An ACK for the first INVITE arriving late must not count as the ACK for the re-INVITE's
    # 2xx (§13.3.1.4: retransmit "until an ACK is received" for that response).
    client_session, server_session = await pair.call()
    lost: list[Message] = []
    pair.client.layer.drop = lambda m: (
        isinstance(m, Request) and m.method == "ACK" and m.cseq.number == 2 and not lost
    )
    assert (await client_session.reinvite(OFFER)).status == 200
    lost.extend(pair.client.layer.dropped)
    assert lost
    stale = client_session.dialog.create_request(
        "ACK", via=pair.client.ua.via_for(pair.peer_of(pair.client)), cseq=1
    )
    pair.client.ua.send_stateless(stale, client_session.source)
    assert await wait_until(
        lambda: [a for a in requests(pair.server.layer.received, "ACK") if a.cseq.number == 2],
        timeout=BACKSTOP,
    )
    reinvite_2xx = [
        r for r in responses(pair.server.layer.sent, "INVITE", 200) if r.cseq.number == 2
    ]
    assert len(reinvite_2xx) >= 2
    assert server_session.state is SessionState.CONFIRMED


# --- BYE (§15) ---------------------------------------------------------------------------------


@pytest.mark.parametrize("hangs_up", ["client", "server"])
async def test_bye_from_either_side_ends_both(pair: Pair, hangs_up: str) -> None:
    client_session, server_session = await pair.call()
    local, remote = (
        (client_session, server_session)
        if hangs_up == "client"
        else (server_session, client_session)
    )
    await local.bye()
    assert await asyncio.wait_for(local.terminated, BACKSTOP) == "local BYE"
    assert await asyncio.wait_for(remote.terminated, BACKSTOP) == "remote BYE"
    assert local.state is remote.state is SessionState.TERMINATED
    assert not pair.client.ua.dialogs and not pair.server.ua.dialogs
    by = pair.client if hangs_up == "client" else pair.server
    assert {r.status for r in responses(by.layer.received, "BYE")} == {200}
    # A second bye() is a no-op: no new BYE (retransmissions share the one CSeq).
    await local.bye()
    assert len({r.cseq.number for r in requests(by.layer.sent, "BYE")}) == 1


async def test_request_after_bye_is_481(pair: Pair) -> None:
    client_session, server_session = await pair.call()
    await server_session.bye()
    await asyncio.wait_for(client_session.terminated, BACKSTOP)
    # The server has forgotten the dialog; a request built from the stale client dialog fails.
    late = pair.send_in_dialog(pair.client, client_session, "INFO")
    assert (await asyncio.wait_for(late.final, BACKSTOP)).status == 481


# --- in-dialog requests (§12.2.2) --------------------------------------------------------------


async def test_request_for_unknown_dialog_is_481(pair: Pair) -> None:
    target = pair.server.uri(pair.transport)
    request = build_request(
        "BYE",
        target,
        from_=pair.client.identity().with_tag("nosuchfrom"),
        to=NameAddr(target).with_tag("nosuchto"),
        call_id="no-such-call@127.0.0.1",
        cseq=7,
    )
    outgoing = pair.client.ua.send_request(request, pair.server_peer)
    response = await asyncio.wait_for(outgoing.final, BACKSTOP)
    assert response.status == 481
    assert not pair.server.incoming  # the application never saw it


async def test_out_of_order_cseq_is_500_and_the_dialog_survives(pair: Pair) -> None:
    client_session, server_session = await pair.call()
    assert (await client_session.request("INFO")).status == 200  # CSeq 2
    for cseq in (2, 1):  # equal, then lower than the last one the server saw
        stale = pair.send_in_dialog(pair.client, client_session, "INFO", cseq=cseq)
        assert (await asyncio.wait_for(stale.final, BACKSTOP)).status == 500
    assert server_session.dialog.remote_seq == 2
    assert server_session.state is SessionState.CONFIRMED
    assert (await client_session.request("INFO")).status == 200  # CSeq 3 is fine again


async def test_options_in_dialog_lists_allowed_methods(pair: Pair) -> None:
    client_session, _ = await pair.call()
    response = await client_session.request("OPTIONS")
    assert response.status == 200
    allow = response.headers.get("Allow") or ""
    assert {"INVITE", "ACK", "BYE", "CANCEL"} <= {m.strip() for m in allow.split(",")}


# --- CANCEL (§9) -------------------------------------------------------------------------------


async def test_cancel_of_pending_invite(pair: Pair) -> None:
    pair.server.hold_invites = True
    target = pair.server.uri(pair.transport)
    invite = build_request(
        "INVITE",
        target,
        from_=pair.client.identity().with_tag(pair.client.ua.token(8)),
        to=NameAddr(target),
        call_id=pair.client.ua.token(16),
        contact=pair.client.ua.contact_for(pair.server_peer, "alice"),
        body=OFFER,
        content_type=SDP,
    )
    ringing: list[Response] = []
    outgoing = pair.client.ua.send_request(invite, pair.server_peer)
    outgoing.provisional.append(ringing.append)
    # §9.1: CANCEL only once a provisional response arrived.
    assert await wait_until(lambda: any(r.status == 180 for r in ringing), timeout=BACKSTOP)
    cancel = pair.client.ua.send_request(build_cancel(outgoing.request), pair.server_peer)
    assert (await asyncio.wait_for(cancel.final, BACKSTOP)).status == 200
    terminated = await asyncio.wait_for(outgoing.final, BACKSTOP)
    assert terminated.status == 487
    incoming = pair.server.incoming[0]
    assert incoming.cancelled.done()
    # §8.2.6.2/§9.2: the 487 ends the same early dialog the 180 opened: same To tag.
    ring_tag = next(r for r in ringing if r.status == 180).to.tag
    assert ring_tag is not None and terminated.to.tag == ring_tag
    assert not pair.server.sessions and not pair.server.ua.dialogs


async def test_place_call_cancels_on_timeout(pair: Pair) -> None:
    pair.server.hold_invites = True
    session, response = await pair.place(timeout=0.3)
    assert session is None
    assert response.status == 487
    assert pair.server.incoming[0].cancelled.done()
    assert {r.status for r in responses(pair.client.layer.received, "CANCEL")} == {200}
    assert not pair.client.ua.dialogs


@udp_only
async def test_place_call_timeout_cancels_only_after_a_provisional(pair: Pair) -> None:
    # §9.1: no CANCEL before a provisional response. The server's 100 and 180 are lost
    # until the client has retransmitted its INVITE three times (at 0.05, 0.15 and 0.35 s on
    # the loop clock, all after the 0.05 s timeout), whatever the machine's load.
    pair.server.hold_invites = True
    quiet = True
    pair.server.layer.drop = lambda m: quiet and isinstance(m, Response) and m.status < 200
    placing = asyncio.ensure_future(pair.place(timeout=0.05))
    assert await wait_until(
        lambda: len(requests(pair.client.layer.sent, "INVITE")) >= 4, timeout=BACKSTOP
    )
    assert not requests(pair.client.layer.sent, "CANCEL")
    quiet = False  # the next retransmission is answered with the 180 again (§17.2.1)
    session, response = await asyncio.wait_for(placing, BACKSTOP)
    assert session is None and response.status == 487
    assert len(requests(pair.client.layer.sent, "CANCEL")) == 1


# --- 2xx retransmission until ACK (§13.3.1.4) --------------------------------------------------


async def test_uas_retransmits_2xx_until_the_ack_arrives(pair: Pair) -> None:
    pair.client.layer.drop = lambda m: (
        isinstance(m, Request) and m.method == "ACK" and not pair.client.layer.dropped
    )
    client_session, server_session = await pair.call()
    assert len(pair.client.layer.dropped) == 1
    # The first ACK was lost; the server sent the 2xx again and the client ACKed that copy.
    assert len(responses(pair.server.layer.sent, "INVITE", 200)) >= 2
    assert len(requests(pair.server.layer.received, "ACK")) >= 1
    assert server_session.state is SessionState.CONFIRMED
    assert client_session.state is SessionState.CONFIRMED
    assert not server_session.terminated.done()


@udp_only
async def test_uas_gives_up_after_64_t1_without_ack_and_sends_bye(pair: Pair) -> None:
    pair.client.layer.drop = lambda m: isinstance(m, Request) and m.method == "ACK"
    client_session, response = await pair.place()
    assert response.status == 200 and client_session is not None
    assert await wait_until(lambda: pair.server.sessions, timeout=BACKSTOP)
    server_session = pair.server.sessions[0]
    assert await asyncio.wait_for(server_session.terminated, BACKSTOP) == "no ACK"
    assert server_session.confirmed.cancelled()  # never confirmed by an ACK
    assert await asyncio.wait_for(client_session.terminated, BACKSTOP) == "remote BYE"
    sent_2xx = responses(pair.server.layer.sent, "INVITE", 200)
    # T1 doubling to T2 over 64*T1: 0.05, 0.1, 0.2, 0.4, 0.4, … — many copies, all identical.
    assert len(sent_2xx) >= 5
    assert len({r.serialize() for r in sent_2xx}) == 1
    assert not requests(pair.server.layer.received, "ACK")
    assert len({r.cseq.number for r in requests(pair.server.layer.sent, "BYE")}) == 1
