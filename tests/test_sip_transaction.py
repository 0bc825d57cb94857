"""RFC 3261 §17 transactions: two cores back to back, no sockets, a fake clock.

In the style of aioquic's connection tests: a client transaction and a server transaction are
joined by a fake link that delivers or drops each datagram, ``now`` is a plain float, and every
deadline is asserted exactly.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from control.sip.events import (
    AckFor2xxReceived,
    AckReceived,
    ResponseReceived,
    TimedOut,
    TransactionTerminated,
)
from control.sip.message import Request, Response, parse_message
from control.sip.transaction import (
    ClientTransaction,
    InviteClientTransaction,
    InviteServerTransaction,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    ServerTransaction,
    Timers,
    TransactionState,
    TransactionStateError,
    TwoHundredRetransmitter,
    build_ack_for_non2xx,
    build_cancel,
    cancel_target_key,
    client_key,
    new_client_transaction,
    new_server_transaction,
    server_key,
)

S = TransactionState

INVITE = (
    "INVITE sip:room@conference.example.com SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds\r\n"
    "Route: <sip:edge.example.com;lr>\r\n"
    "Max-Forwards: 70\r\n"
    "To: <sip:room@conference.example.com>\r\n"
    "From: Alice <sip:alice@example.com>;tag=1928301774\r\n"
    "Call-ID: a84b4c76e66710@pc33.example.com\r\n"
    "CSeq: 314159 INVITE\r\n"
    "Contact: <sip:alice@192.0.2.1>\r\n"
    "Timestamp: 54\r\n"
    "Content-Length: 0\r\n"
    "\r\n"
)

OPTIONS = (
    "OPTIONS sip:room@conference.example.com SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKopt1\r\n"
    "Max-Forwards: 70\r\n"
    "To: <sip:room@conference.example.com>\r\n"
    "From: Alice <sip:alice@example.com>;tag=55\r\n"
    "Call-ID: opt-1@pc33.example.com\r\n"
    "CSeq: 1 OPTIONS\r\n"
    "Content-Length: 0\r\n"
    "\r\n"
)

TO_TAG = "as83kd9bs"


def request(text: str = INVITE, **replace: str) -> Request:
    for old, new in replace.items():
        text = text.replace(old, new)
    message = parse_message(text.encode())
    assert isinstance(message, Request)
    return message


def parse_response(data: bytes) -> Response:
    message = parse_message(data)
    assert isinstance(message, Response)
    return message


def parse_request(data: bytes) -> Request:
    message = parse_message(data)
    assert isinstance(message, Request)
    return message


def events(txn: ClientTransaction | ServerTransaction) -> list[object]:
    out: list[object] = []
    while (event := txn.next_event()) is not None:
        out.append(event)
    return out


def statuses(data: list[bytes]) -> list[int]:
    return [parse_response(d).status for d in data]


def fire_all(txn: ClientTransaction | ServerTransaction) -> list[float]:
    """Run the clock deadline by deadline until no timer is left; return the deadlines."""
    seen: list[float] = []
    while (deadline := txn.next_timer()) is not None:
        seen.append(deadline)
        txn.handle_timer(deadline)
    return seen


class Link:
    """A client transaction and the server transaction it creates, over a fake link."""

    def __init__(self, req: Request, *, reliable: bool = False, send_trying: bool = True) -> None:
        self.client = new_client_transaction(req, reliable=reliable, now=0.0)
        self.server: ServerTransaction | None = None
        self.reliable = reliable
        self.send_trying = send_trying

    def to_server(self, now: float, *, drop: bool = False) -> list[bytes]:
        sent = self.client.data_to_send()
        if drop:
            return sent
        for data in sent:
            req = parse_request(data)
            if self.server is None:
                if req.method == "INVITE":
                    self.server = InviteServerTransaction(
                        req, reliable=self.reliable, now=now, send_trying=self.send_trying
                    )
                else:
                    self.server = new_server_transaction(req, reliable=self.reliable, now=now)
            else:
                self.server.receive_request(req, now)
        return sent

    def to_client(self, now: float, *, drop: bool = False) -> list[bytes]:
        assert self.server is not None
        sent = self.server.data_to_send()
        if not drop:
            for data in sent:
                self.client.receive_response(parse_response(data), now)
        return sent

    def respond(self, status: int, now: float) -> Response:
        assert self.server is not None
        tag = TO_TAG if status > 100 else None
        response = self.server.request.make_response(status, to_tag=tag)
        self.server.send_response(response, now)
        return response


# --- INVITE client ↔ INVITE server over UDP ---------------------------------------------------


def test_invite_rejected_over_udp_end_to_end() -> None:
    link = Link(request())
    assert link.client.state is S.CALLING
    assert link.client.next_timer() == 0.5  # Timer A
    link.to_server(0.0)
    server = link.server
    assert isinstance(server, InviteServerTransaction)
    assert server.state is S.PROCEEDING
    assert statuses(link.to_client(0.01)) == [100]
    assert link.client.state is S.PROCEEDING
    assert link.client.next_timer() is None  # A stops; B only runs in Calling (§17.1.1.2)
    assert [type(e) for e in events(link.client)] == [ResponseReceived]

    link.respond(486, 1.0)
    assert server.state is S.COMPLETED
    assert server.next_timer() == 1.5  # Timer G = T1
    assert statuses(link.to_client(1.0)) == [486]
    assert link.client.state is S.COMPLETED
    (event,) = events(link.client)
    assert isinstance(event, ResponseReceived) and event.response.status == 486
    assert link.client.next_timer() == 33.0  # Timer D = 32 s

    (ack,) = link.to_server(1.0)
    assert parse_request(ack).method == "ACK"
    assert server.state is S.CONFIRMED
    (event,) = events(server)
    assert isinstance(event, AckReceived) and event.request.method == "ACK"
    assert server.next_timer() == 6.0  # Timer I = T4; Timer G and H stopped
    server.handle_timer(6.0)
    assert server.terminated and events(server) == [TransactionTerminated()]

    link.client.handle_timer(33.0)
    assert link.client.terminated and events(link.client) == [TransactionTerminated()]
    assert link.client.data_to_send() == [] and server.data_to_send() == []


def test_timer_a_schedule_and_timer_b_timeout() -> None:
    client = InviteClientTransaction(request(), reliable=False, now=0.0)
    (first,) = client.data_to_send()
    deadlines: list[float] = []
    sent: list[bytes] = []
    while (deadline := client.next_timer()) is not None:
        deadlines.append(deadline)
        client.handle_timer(deadline)
        sent += client.data_to_send()
    assert deadlines == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5, 32.0]  # A doubles; B = 64*T1
    assert sent == [first] * 6
    assert events(client) == [TimedOut(), TransactionTerminated()]


def test_dropped_invite_is_retransmitted_and_then_answered() -> None:
    link = Link(request())
    link.to_server(0.0, drop=True)
    assert link.server is None
    link.client.handle_timer(0.5)
    link.to_server(0.5)
    assert link.server is not None
    link.to_client(0.5, drop=True)  # the 100 Trying is lost too
    link.client.handle_timer(1.5)
    link.to_server(1.5)  # the INVITE retransmission makes the server resend its 100
    assert statuses(link.to_client(1.5)) == [100]
    assert link.client.state is S.PROCEEDING and link.client.next_timer() is None


def test_timer_before_deadline_does_nothing_and_late_timer_sends_once() -> None:
    client = InviteClientTransaction(request(), reliable=False, now=0.0)
    client.data_to_send()
    client.handle_timer(0.49)
    assert client.data_to_send() == [] and client.next_timer() == 0.5
    client.handle_timer(10.0)  # the loop woke up late: one retransmission, schedule kept
    assert len(client.data_to_send()) == 1
    assert client.next_timer() == 15.5


def test_non2xx_ack_has_the_right_headers_and_is_resent_for_retransmissions() -> None:
    invite = request()
    link = Link(invite)
    link.to_server(0.0)
    link.respond(486, 0.0)
    link.to_client(0.0)
    (ack_bytes,) = link.client.data_to_send()
    ack = parse_request(ack_bytes)
    assert ack.method == "ACK"
    assert str(ack.uri) == "sip:room@conference.example.com"
    assert ack.headers.get_all("Via") == ["SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds"]
    assert ack.top_via.branch == invite.top_via.branch
    assert ack.to.tag == TO_TAG
    assert ack.headers.get("From") == invite.headers.get("From")
    assert ack.call_id == invite.call_id
    assert str(ack.cseq) == "314159 ACK"
    assert ack.headers.get_all("Route") == ["<sip:edge.example.com;lr>"]
    assert ack.body == b""
    assert server_key(ack) == server_key(invite)

    # A retransmitted 486 is answered with the same ACK and not passed up again.
    events(link.client)
    assert link.server is not None and link.server.last_response is not None
    link.client.receive_response(link.server.last_response, 2.0)
    assert link.client.data_to_send() == [ack_bytes]
    assert events(link.client) == []


def test_invite_client_2xx_accepted_state_timer_m() -> None:
    link = Link(request())
    link.to_server(0.0)
    link.to_client(0.0)
    events(link.client)
    ok = link.respond(200, 2.0)
    link.to_client(2.0)
    assert link.client.state is S.ACCEPTED
    assert link.client.data_to_send() == []  # the TU ACKs a 2xx, not the transaction
    assert link.client.next_timer() == 34.0  # Timer M = 64*T1
    (event,) = events(link.client)
    assert isinstance(event, ResponseReceived) and event.response.status == 200
    # 2xx retransmissions still go up so the dialog layer can ACK each (RFC 6026 §8.4).
    link.client.receive_response(ok, 2.5)
    assert events(link.client) == [ResponseReceived(ok)]
    link.client.receive_response(request().make_response(486, to_tag="x"), 3.0)
    assert events(link.client) == [] and link.client.data_to_send() == []
    link.client.handle_timer(34.0)
    assert link.client.terminated and events(link.client) == [TransactionTerminated()]


# --- INVITE server -----------------------------------------------------------------------------


def test_server_486_timer_g_schedule_and_timer_h() -> None:
    invite = request()
    server = InviteServerTransaction(invite, reliable=False, now=0.0)
    (trying,) = server.data_to_send()
    assert parse_response(trying).status == 100
    assert parse_response(trying).to.tag is None
    assert parse_response(trying).headers.get("Timestamp") == "54"  # §8.2.6.1
    assert server.next_timer() is None  # no timer until the TU answers

    busy = invite.make_response(486, to_tag=TO_TAG)
    server.send_response(busy, 0.0)
    assert server.data_to_send() == [busy.serialize()]
    deadlines: list[float] = []
    sent: list[bytes] = []
    while (deadline := server.next_timer()) is not None:
        deadlines.append(deadline)
        server.handle_timer(deadline)
        sent += server.data_to_send()
    intervals = [b - a for a, b in zip([0.0, *deadlines], deadlines, strict=False)]
    assert intervals[:6] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]  # Timer G doubles up to T2
    assert deadlines == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5, 32.0]
    assert sent == [busy.serialize()] * 10
    assert events(server) == [TimedOut(), TransactionTerminated()]


def test_server_ack_absorption_and_timer_i() -> None:
    invite = request()
    server = InviteServerTransaction(invite, reliable=False, now=0.0, send_trying=False)
    assert server.data_to_send() == []
    busy = invite.make_response(486, to_tag=TO_TAG)
    server.send_response(busy, 0.0)
    server.handle_timer(0.5)
    assert server.data_to_send() == [busy.serialize()] * 2  # sent, then Timer G
    ack = build_ack_for_non2xx(invite, busy)
    server.receive_request(ack, 0.7)
    assert server.state is S.CONFIRMED
    assert events(server) == [AckReceived(ack)]
    assert server.next_timer() == 5.7  # Timer I = T4; G no longer runs
    server.receive_request(ack, 1.0)  # retransmitted ACK: absorbed
    server.receive_request(invite, 1.1)  # late INVITE retransmission: absorbed
    assert events(server) == [] and server.data_to_send() == []
    assert fire_all(server) == [5.7]
    assert events(server) == [TransactionTerminated()]
    server.receive_request(ack, 6.0)  # after the end: ignored
    assert events(server) == [] and server.data_to_send() == []


def test_invite_retransmission_resends_the_last_response() -> None:
    invite = request()
    server = InviteServerTransaction(invite, reliable=False, now=0.0)
    server.data_to_send()
    server.receive_request(invite, 0.5)
    assert statuses(server.data_to_send()) == [100]
    server.send_response(invite.make_response(180, to_tag=TO_TAG), 0.6)
    server.data_to_send()
    server.receive_request(invite, 1.0)
    assert statuses(server.data_to_send()) == [180]
    server.send_response(invite.make_response(603, to_tag=TO_TAG), 1.1)
    server.data_to_send()
    server.receive_request(invite, 1.2)
    assert statuses(server.data_to_send()) == [603]
    assert events(server) == []


def test_invite_server_2xx_accepted_absorbs_retransmissions_until_timer_l() -> None:
    invite = request()
    server = InviteServerTransaction(invite, reliable=False, now=0.0)
    server.data_to_send()
    ok = invite.make_response(200, to_tag=TO_TAG)
    server.send_response(ok, 1.0)
    assert server.state is S.ACCEPTED
    assert server.data_to_send() == [ok.serialize()]
    assert server.next_timer() == 33.0  # Timer L = 64*T1
    server.receive_request(invite, 2.0)
    assert server.data_to_send() == []  # absorbed, not resent: the 2xx is the TU's to resend
    server.send_response(ok, 2.5)  # the TU's own retransmission goes out (RFC 6026 §8.7)
    assert server.data_to_send() == [ok.serialize()]
    # An RFC 2543 style ACK that keys like the INVITE goes up as the 2xx's ACK.
    ack = request(INVITE.replace("INVITE sip", "ACK sip").replace("INVITE\r\n", "ACK\r\n"))
    server.receive_request(ack, 3.0)
    assert events(server) == [AckFor2xxReceived(ack)]
    assert fire_all(server) == [33.0]
    assert events(server) == [TransactionTerminated()]  # Timer L is no timeout


def test_non_invite_server_retransmissions_and_timer_j() -> None:
    options = request(OPTIONS)
    server = NonInviteServerTransaction(options, reliable=False, now=0.0)
    assert server.state is S.TRYING and server.data_to_send() == []
    server.receive_request(options, 0.5)
    assert server.data_to_send() == []  # Trying: nothing to resend yet
    server.send_response(options.make_response(100), 0.6)
    assert server.state is S.PROCEEDING
    server.data_to_send()
    server.receive_request(options, 1.0)
    assert statuses(server.data_to_send()) == [100]
    server.send_response(options.make_response(200, to_tag=TO_TAG), 1.5)
    assert server.state is S.COMPLETED and statuses(server.data_to_send()) == [200]
    server.receive_request(options, 2.0)
    assert statuses(server.data_to_send()) == [200]
    assert fire_all(server) == [33.5]  # Timer J = 64*T1
    assert server.terminated and events(server) == [TransactionTerminated()]


def test_server_transactions_let_go_of_the_messages_once_only_retransmissions_remain() -> None:
    """After a 2xx to INVITE (Accepted), a non-INVITE final (Completed) or the ACK of a
    non-2xx (Confirmed) the parsed request and response are dropped; the timers and the
    retransmissions they serve work from the key, the CSeq and the bytes."""
    invite = request()
    server = InviteServerTransaction(invite, reliable=False, now=0.0)
    server.data_to_send()
    assert server.request is invite and not server.released
    ok = invite.make_response(200, to_tag=TO_TAG)
    server.send_response(ok, 1.0)
    assert server.released and server.last_response is None
    with pytest.raises(TransactionStateError):
        server.request  # noqa: B018
    server.send_response(ok, 2.0)  # the TU's 2xx retransmission still checked and sent
    assert server.data_to_send() == [ok.serialize(), ok.serialize()]
    with pytest.raises(TransactionStateError):
        other = request(INVITE.replace("314159", "314160"))
        server.send_response(other.make_response(200, to_tag="x"), 2.5)

    options = request(OPTIONS)
    bye_like = NonInviteServerTransaction(options, reliable=False, now=0.0)
    final = options.make_response(200, to_tag=TO_TAG)
    bye_like.send_response(final, 0.5)
    assert bye_like.released and bye_like.data_to_send() == [final.serialize()]
    bye_like.receive_request(options, 1.0)
    assert bye_like.data_to_send() == [final.serialize()]  # Completed still resends it
    assert fire_all(bye_like) == [32.5]

    refused = InviteServerTransaction(request(), reliable=False, now=0.0)
    refused.send_response(refused.request.make_response(486, to_tag=TO_TAG), 0.1)
    assert not refused.released  # Completed: the 486 is resent until the ACK
    ack = build_ack_for_non2xx(invite, parse_response(refused.data_to_send()[-1]))
    refused.receive_request(ack, 0.2)
    assert refused.state is S.CONFIRMED and refused.released


# --- non-INVITE client ------------------------------------------------------------------------


def test_timer_e_doubles_up_to_t2_then_timer_f() -> None:
    client = NonInviteClientTransaction(request(OPTIONS), reliable=False, now=0.0)
    client.data_to_send()
    deadlines = fire_all(client)
    assert deadlines[:6] == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5]
    assert deadlines[-2:] == [31.5, 32.0]
    assert len(client.data_to_send()) == len(deadlines) - 1
    assert events(client) == [TimedOut(), TransactionTerminated()]


def test_timer_e_becomes_t2_after_a_provisional() -> None:
    options = request(OPTIONS)
    client = NonInviteClientTransaction(options, reliable=False, now=0.0)
    client.handle_timer(0.5)
    assert client.next_timer() == 1.5
    client.receive_response(options.make_response(100), 0.7)
    assert client.state is S.PROCEEDING
    assert client.next_timer() == 1.5  # the running timer is not restarted (§17.1.2.2)
    client.handle_timer(1.5)
    assert client.next_timer() == 5.5  # fired in Proceeding: reset to T2
    client.handle_timer(5.5)
    assert client.next_timer() == 9.5
    assert len(client.data_to_send()) == 4
    assert [type(e) for e in events(client)] == [ResponseReceived]
    deadlines = fire_all(client)
    assert deadlines[-2:] == [29.5, 32.0]  # Timer F still runs in Proceeding
    assert events(client) == [TimedOut(), TransactionTerminated()]


def test_timer_e_with_an_early_provisional_goes_straight_to_t2() -> None:
    options = request(OPTIONS)
    client = NonInviteClientTransaction(options, reliable=False, now=0.0)
    client.receive_response(options.make_response(100), 0.2)
    assert fire_all(client)[:3] == [0.5, 4.5, 8.5]


def test_non_invite_final_then_timer_k_absorbs_retransmissions() -> None:
    link = Link(request(OPTIONS))
    link.to_server(0.0)
    ok = link.respond(200, 0.1)
    link.to_client(0.1)
    assert link.client.state is S.COMPLETED
    (event,) = events(link.client)
    assert isinstance(event, ResponseReceived)
    assert event.response.serialize() == ok.serialize()
    assert link.client.next_timer() == 5.1  # Timer K = T4; E and F stopped
    link.client.receive_response(ok, 1.0)
    assert events(link.client) == [] and link.client.data_to_send() == []
    assert fire_all(link.client) == [5.1]
    assert events(link.client) == [TransactionTerminated()]


# --- reliable transports ----------------------------------------------------------------------


def test_reliable_invite_client_and_server() -> None:
    tcp = request().headers.get_all("Via")[0].replace("UDP", "TCP")
    invite = request(INVITE.replace("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds", tcp))
    link = Link(invite, reliable=True)
    assert link.client.next_timer() == 32.0  # Timer B only: no Timer A
    link.to_server(0.0)
    server = link.server
    assert server is not None
    link.to_client(0.0)
    link.respond(486, 1.0)
    assert server.next_timer() == 33.0  # Timer H only: no Timer G
    link.to_client(1.0)
    assert link.client.terminated  # Timer D is zero
    assert [type(e) for e in events(link.client)] == [
        ResponseReceived,
        ResponseReceived,
        TransactionTerminated,
    ]
    link.to_server(1.0)  # the ACK still goes out, and Timer I is zero too
    assert server.terminated
    assert [type(e) for e in events(server)] == [AckReceived, TransactionTerminated]


def test_reliable_invite_server_timer_h() -> None:
    invite = request()
    server = InviteServerTransaction(invite, reliable=True, now=0.0)
    server.data_to_send()
    server.send_response(invite.make_response(486, to_tag=TO_TAG), 0.0)
    server.data_to_send()
    assert fire_all(server) == [32.0]
    assert server.data_to_send() == []
    assert events(server) == [TimedOut(), TransactionTerminated()]


def test_reliable_non_invite_client_and_server() -> None:
    options = request(OPTIONS)
    client = NonInviteClientTransaction(options, reliable=True, now=0.0)
    assert len(client.data_to_send()) == 1
    assert client.next_timer() == 32.0  # Timer F only: no Timer E
    server = NonInviteServerTransaction(options, reliable=True, now=0.0)
    server.send_response(options.make_response(200, to_tag=TO_TAG), 0.5)
    assert server.terminated  # Timer J is zero
    client.receive_response(parse_response(server.data_to_send()[0]), 0.5)
    assert client.terminated  # Timer K is zero
    assert [type(e) for e in events(client)] == [ResponseReceived, TransactionTerminated]
    assert fire_all(client) == []


def test_reliable_client_times_out_without_retransmitting() -> None:
    client = NonInviteClientTransaction(request(OPTIONS), reliable=True, now=0.0)
    client.data_to_send()
    assert fire_all(client) == [32.0]
    assert client.data_to_send() == []
    assert events(client) == [TimedOut(), TransactionTerminated()]


def test_timers_come_from_config() -> None:
    timers = Timers(t1=0.1, t2=0.4, t4=1.0, d=40.0)
    client = InviteClientTransaction(request(), reliable=False, now=0.0, timers=timers)
    assert fire_all(client) == pytest.approx([0.1, 0.3, 0.7, 1.5, 3.1, 6.3, 6.4])
    invite = request()
    server = InviteServerTransaction(invite, reliable=False, now=0.0, timers=timers)
    server.send_response(invite.make_response(500, to_tag=TO_TAG), 0.0)
    assert fire_all(server) == pytest.approx(
        [0.1, 0.3, 0.7, 1.1, 1.5, 1.9, 2.3, 2.7, 3.1, 3.5, 3.9, 4.3, 4.7, 5.1, 5.5, 5.9, 6.3, 6.4]
    )
    with pytest.raises(ValueError):
        Timers(t1=0.0)


# --- CANCEL, keys -----------------------------------------------------------------------------


def test_build_cancel() -> None:
    invite = request()
    cancel = build_cancel(invite)
    assert cancel.method == "CANCEL"
    assert cancel.uri == invite.uri
    assert cancel.call_id == invite.call_id
    assert cancel.headers.get("From") == invite.headers.get("From")
    assert cancel.headers.get("To") == invite.headers.get("To")
    assert cancel.to.tag is None
    assert str(cancel.cseq) == "314159 CANCEL"
    assert cancel.headers.get_all("Via") == [invite.headers.get_all("Via")[0]]
    assert cancel.headers.get_all("Route") == ["<sip:edge.example.com;lr>"]
    assert cancel.headers.get("Contact") is None and cancel.body == b""
    reparsed = parse_request(cancel.serialize())  # the parser's validation accepts it
    assert server_key(reparsed) != server_key(invite)
    assert cancel_target_key(reparsed) == server_key(invite)
    with pytest.raises(ValueError):
        build_cancel(reparsed)


def test_build_cancel_keeps_only_the_top_via() -> None:
    two_vias = request(
        INVITE.replace("Route:", "Via: SIP/2.0/UDP 198.51.100.7;branch=z9hG4bKbelow\r\nRoute:")
    )
    assert len(two_vias.vias) == 2
    cancel = build_cancel(two_vias)
    assert [v.branch for v in cancel.vias] == ["z9hG4bK776asdhds"]


def test_server_keys() -> None:
    invite = request()
    key = server_key(invite)
    assert key == ("z9hG4bK776asdhds", "192.0.2.1:5060", "INVITE")
    ack = build_ack_for_non2xx(invite, invite.make_response(486, to_tag=TO_TAG))
    assert server_key(ack) == key  # the ACK for a non-2xx finds the INVITE's transaction
    assert server_key(build_cancel(invite))[2] == "CANCEL"  # CANCEL is its own transaction
    other_host = request(INVITE.replace("192.0.2.1:5060;", "192.0.2.2:5060;"))
    assert server_key(other_host) != key  # same branch, other sent-by
    other_branch = request(INVITE.replace("z9hG4bK776asdhds", "z9hG4bK776asdhdt"))
    assert server_key(other_branch) != key


def test_client_keys() -> None:
    invite = request()
    client = InviteClientTransaction(invite, reliable=False, now=0.0)
    assert client.key == ("z9hG4bK776asdhds", "", "INVITE")
    assert client_key(invite.make_response(180, to_tag=TO_TAG)) == client.key
    cancel = build_cancel(invite)
    assert client_key(cancel.make_response(200)) != client.key  # same branch, CSeq CANCEL
    cancel_txn = NonInviteClientTransaction(cancel, reliable=False, now=0.0)
    assert client_key(cancel.make_response(200)) == cancel_txn.key


RFC2543_INVITE = INVITE.replace(";branch=z9hG4bK776asdhds", "")


def test_rfc2543_keys_without_a_branch() -> None:
    invite = request(RFC2543_INVITE)
    key = server_key(invite)
    assert key[1:] == ("192.0.2.1:5060", "INVITE")
    assert server_key(request(RFC2543_INVITE)) == key  # a retransmission matches
    ack = build_ack_for_non2xx(invite, invite.make_response(486, to_tag=TO_TAG))
    assert ack.to.tag == TO_TAG
    assert server_key(ack) == key  # the ACK matches even though its To now has a tag
    cancel = build_cancel(invite)
    assert server_key(cancel) != key and cancel_target_key(cancel) == key
    next_cseq = request(RFC2543_INVITE.replace("314159 INVITE", "314160 INVITE"))
    assert server_key(next_cseq) != key
    other_from = request(RFC2543_INVITE.replace("tag=1928301774", "tag=1928301775"))
    assert server_key(other_from) != key
    other_call = request(RFC2543_INVITE.replace("a84b4c76e66710", "a84b4c76e66711"))
    assert server_key(other_call) != key
    other_uri = request(RFC2543_INVITE.replace("INVITE sip:room@", "INVITE sip:lobby@"))
    assert server_key(other_uri) != key
    # An RFC 2543 branch (no magic cookie) falls back too, and never equals a real branch.
    old_branch = request(INVITE.replace("z9hG4bK776asdhds", "776asdhds"))
    assert server_key(old_branch)[0] != "776asdhds"
    assert " " in server_key(old_branch)[0]


def test_rfc2543_server_transaction_absorbs_its_ack() -> None:
    invite = request(RFC2543_INVITE)
    server = InviteServerTransaction(invite, reliable=False, now=0.0)
    busy = invite.make_response(486, to_tag=TO_TAG)
    server.send_response(busy, 0.0)
    server.receive_request(build_ack_for_non2xx(invite, busy), 0.1)
    assert server.state is S.CONFIRMED


# --- the UAS core's 2xx retransmissions -------------------------------------------------------


def test_two_hundred_retransmitter_schedule_and_timeout() -> None:
    retransmitter = TwoHundredRetransmitter(b"SIP/2.0 200 OK\r\n...", now=10.0)
    assert retransmitter.data_to_send() == []  # the transaction sent the first copy
    deadlines: list[float] = []
    sent: list[bytes] = []
    while (deadline := retransmitter.next_timer()) is not None:
        deadlines.append(deadline)
        retransmitter.handle_timer(deadline)
        sent += retransmitter.data_to_send()
    assert deadlines == [10.5, 11.5, 13.5, 17.5, 21.5, 25.5, 29.5, 33.5, 37.5, 41.5, 42.0]
    assert sent == [b"SIP/2.0 200 OK\r\n..."] * 10
    assert retransmitter.timed_out and not retransmitter.acked


def test_two_hundred_retransmitter_stops_on_ack() -> None:
    retransmitter = TwoHundredRetransmitter(b"200", now=0.0)
    retransmitter.handle_timer(0.5)
    retransmitter.handle_timer(1.0)  # early: nothing
    assert retransmitter.data_to_send() == [b"200"]
    assert retransmitter.next_timer() == 1.5
    retransmitter.ack_received()
    assert retransmitter.next_timer() is None
    retransmitter.handle_timer(40.0)
    assert retransmitter.data_to_send() == [] and not retransmitter.timed_out


# --- misuse -----------------------------------------------------------------------------------


def test_second_final_and_late_provisional_raise() -> None:
    invite = request()
    server = InviteServerTransaction(invite, reliable=False, now=0.0)
    server.send_response(invite.make_response(486, to_tag=TO_TAG), 0.0)
    with pytest.raises(TransactionStateError):
        server.send_response(invite.make_response(500, to_tag=TO_TAG), 0.1)
    with pytest.raises(TransactionStateError):
        server.send_response(invite.make_response(180, to_tag=TO_TAG), 0.1)
    with pytest.raises(TransactionStateError):
        server.send_response(invite.make_response(200, to_tag=TO_TAG), 0.1)


def test_second_different_2xx_raises_but_a_resend_does_not() -> None:
    invite = request()
    server = InviteServerTransaction(invite, reliable=False, now=0.0)
    ok = invite.make_response(200, to_tag=TO_TAG)
    server.send_response(ok, 0.0)
    server.send_response(ok, 0.5)
    with pytest.raises(TransactionStateError):
        server.send_response(invite.make_response(200, to_tag="other"), 0.6)
    with pytest.raises(TransactionStateError):
        server.send_response(invite.make_response(486, to_tag=TO_TAG), 0.6)


def test_non_invite_second_final_and_after_termination_raise() -> None:
    options = request(OPTIONS)
    server = NonInviteServerTransaction(options, reliable=True, now=0.0)
    server.send_response(options.make_response(200, to_tag=TO_TAG), 0.0)
    assert server.terminated
    with pytest.raises(TransactionStateError):
        server.send_response(options.make_response(200, to_tag=TO_TAG), 0.1)


def test_wrong_messages_fed_to_a_transaction_raise() -> None:
    invite = request()
    options = request(OPTIONS)
    server = InviteServerTransaction(invite, reliable=False, now=0.0)
    with pytest.raises(TransactionStateError):
        server.receive_request(options, 0.0)
    with pytest.raises(TransactionStateError):
        server.send_response(options.make_response(200), 0.0)  # another request's response
    client = InviteClientTransaction(invite, reliable=False, now=0.0)
    with pytest.raises(TransactionStateError):
        client.receive_response(options.make_response(200), 0.0)


def test_wrong_method_for_the_machine_raises() -> None:
    invite, options = request(), request(OPTIONS)
    with pytest.raises(ValueError):
        InviteClientTransaction(options, reliable=False, now=0.0)
    with pytest.raises(ValueError):
        NonInviteClientTransaction(invite, reliable=False, now=0.0)
    with pytest.raises(ValueError):
        InviteServerTransaction(options, reliable=False, now=0.0)
    with pytest.raises(ValueError):
        NonInviteServerTransaction(invite, reliable=False, now=0.0)
    ack = build_ack_for_non2xx(invite, invite.make_response(486, to_tag=TO_TAG))
    with pytest.raises(ValueError):
        NonInviteServerTransaction(ack, reliable=False, now=0.0)
    with pytest.raises(ValueError):
        build_ack_for_non2xx(invite, invite.make_response(200, to_tag=TO_TAG))
    no_branch = request(OPTIONS.replace(";branch=z9hG4bKopt1", ""))
    with pytest.raises(ValueError):
        NonInviteClientTransaction(no_branch, reliable=False, now=0.0)


def test_responses_after_termination_are_ignored() -> None:
    options = request(OPTIONS)
    client = NonInviteClientTransaction(options, reliable=True, now=0.0)
    client.receive_response(options.make_response(200, to_tag=TO_TAG), 0.1)
    assert client.terminated
    events(client)
    client.receive_response(options.make_response(200, to_tag=TO_TAG), 0.2)
    assert events(client) == [] and client.next_timer() is None


# --- property: any drops and timer interleavings ---------------------------------------------


def ack_for_2xx(response: Response) -> bytes:
    """What the client's dialog layer sends for a 2xx: an ACK of its own transaction."""
    invite = request()
    ack = build_ack_for_non2xx(invite, invite.make_response(486, to_tag=TO_TAG))
    ack.headers.set("Via", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKack2xx")
    ack.headers.set("To", response.headers.get("To") or "")
    return ack.serialize()


@dataclass
class Network:
    """Two transaction cores and the UAS's 2xx retransmitter over a lossy FIFO link.

    ``losses_*`` say, datagram by datagram, which ones the link loses; once a list runs out the
    link is perfect, so every run ends.
    """

    method: str
    final: int
    losses_to_server: deque[bool]
    losses_to_client: deque[bool]
    now: float = 0.0
    client: ClientTransaction = field(init=False)
    server: ServerTransaction | None = None
    retransmitter: TwoHundredRetransmitter | None = None
    to_server: deque[bytes] = field(default_factory=deque)
    to_client: deque[bytes] = field(default_factory=deque)
    client_events: list[object] = field(default_factory=list)
    server_events: list[object] = field(default_factory=list)
    finals_delivered: int = 0
    final_sent: bool = False

    def __post_init__(self) -> None:
        self.client = new_client_transaction(
            request(OPTIONS if self.method == "OPTIONS" else INVITE), reliable=False, now=0.0
        )
        self.pump()

    def pump(self) -> None:
        self.to_server.extend(self.client.data_to_send())
        while (event := self.client.next_event()) is not None:
            self.client_events.append(event)
            is_2xx = isinstance(event, ResponseReceived) and event.response.status // 100 == 2
            if is_2xx and self.method == "INVITE":
                assert isinstance(event, ResponseReceived)
                self.to_server.append(ack_for_2xx(event.response))
        if self.server is not None:
            self.to_client.extend(self.server.data_to_send())
            while (server_event := self.server.next_event()) is not None:
                self.server_events.append(server_event)
        if self.retransmitter is not None:
            self.to_client.extend(self.retransmitter.data_to_send())

    def step(self, action: str) -> None:
        if action == "to_server" and self.to_server:
            data = self.to_server.popleft()
            if not (self.losses_to_server and self.losses_to_server.popleft()):
                self.deliver_to_server(parse_request(data))
        elif action == "to_client" and self.to_client:
            data = self.to_client.popleft()
            if not (self.losses_to_client and self.losses_to_client.popleft()):
                response = parse_response(data)
                self.finals_delivered += response.status >= 200
                self.client.receive_response(response, self.now)
        elif action == "timer":
            self.fire_next_timer()
        elif action == "provisional" and self.server is not None and not self.final_sent:
            self.server.send_response(self.server.request.make_response(180, to_tag="t"), self.now)
        elif action == "final" and self.server is not None and not self.final_sent:
            self.send_final()
        self.pump()

    def deliver_to_server(self, req: Request) -> None:
        if self.server is None:
            if req.method == self.method:  # the dispatcher creates the server transaction
                self.server = new_server_transaction(req, reliable=False, now=self.now)
            return
        if server_key(req) != self.server.key:  # the ACK for a 2xx goes to the dialog
            if self.retransmitter is not None:
                self.retransmitter.ack_received()
            return
        if not self.server.terminated:  # (after that, a new transaction: out of scope)
            self.server.receive_request(req, self.now)

    def send_final(self) -> None:
        assert self.server is not None
        response = self.server.request.make_response(self.final, to_tag="t")
        self.server.send_response(response, self.now)
        self.final_sent = True
        if self.method == "INVITE" and self.final < 300:
            self.retransmitter = TwoHundredRetransmitter(response.serialize(), now=self.now)

    def owners(self) -> list[ClientTransaction | ServerTransaction | TwoHundredRetransmitter]:
        found: list[ClientTransaction | ServerTransaction | TwoHundredRetransmitter] = [self.client]
        if self.server is not None:
            found.append(self.server)
        if self.retransmitter is not None:
            found.append(self.retransmitter)
        return found

    def fire_next_timer(self) -> bool:
        deadlines = [d for o in self.owners() if (d := o.next_timer()) is not None]
        if not deadlines:
            return False
        self.now = max(self.now, min(deadlines))
        for owner in self.owners():
            deadline = owner.next_timer()
            if deadline is not None and deadline <= self.now:
                owner.handle_timer(self.now)
        return True

    def drain(self) -> None:
        """Let the TU answer, then deliver and fire timers until nothing is left to do."""
        for _ in range(10_000):
            if self.server is not None and not self.final_sent:
                self.send_final()
                self.pump()
            if self.to_server:
                self.step("to_server")
            elif self.to_client:
                self.step("to_client")
            elif not self.fire_next_timer():
                return
            else:
                self.pump()
        raise AssertionError("the network never went quiet")


ACTIONS = st.sampled_from(["to_server", "to_client", "timer", "provisional", "final"])


def _losses(count: int, rate: float, seed: int) -> deque[bool]:
    rng = random.Random(seed)
    return deque(rng.random() < rate for _ in range(count))


# A loss rate per direction rather than free booleans, so runs where a whole retransmission
# schedule is lost (Timer B, F, H, the 2xx give-up) come up often.
LOSSES = st.builds(
    _losses,
    st.integers(0, 30),
    st.sampled_from([0.0, 0.3, 0.8, 1.0]),
    st.integers(0, 2**32 - 1),
)


@settings(max_examples=300, deadline=None)
@given(
    method=st.sampled_from(["INVITE", "OPTIONS"]),
    final=st.sampled_from([200, 302, 486, 603]),
    actions=st.lists(ACTIONS, max_size=60),
    losses_to_server=LOSSES,
    losses_to_client=LOSSES,
)
def test_property_one_final_and_always_terminates(
    method: str,
    final: int,
    actions: list[str],
    losses_to_server: deque[bool],
    losses_to_client: deque[bool],
) -> None:
    net = Network(method, final, losses_to_server, losses_to_client)
    for action in actions:
        net.step(action)
    net.drain()

    passed_up = [e.response for e in net.client_events if isinstance(e, ResponseReceived)]
    finals = [r.status for r in passed_up if r.status >= 200]
    assert len(set(finals)) <= 1  # never two different finals
    assert all(status == final for status in finals)
    if final >= 300 or method == "OPTIONS":
        assert len(finals) <= 1  # non-2xx (and non-INVITE) finals go up exactly once
    timed_out = TimedOut() in net.client_events
    assert not (timed_out and finals)
    # A final that reached the client went up, unless the client had already given up.
    assert finals or timed_out or net.finals_delivered == 0

    if net.client.terminated:
        assert net.client_events.count(TransactionTerminated()) == 1
        assert net.client_events[-1] == TransactionTerminated()
    else:
        # The one case the transaction layer leaves to the TU (Timer C, CANCEL): an INVITE
        # that got a provisional and then lost every copy of the final response.
        assert method == "INVITE" and net.client.state is S.PROCEEDING
        assert net.finals_delivered == 0
    assert net.client.next_timer() is None

    if net.server is not None:
        assert net.server.terminated
        assert net.server_events[-1] == TransactionTerminated()
        assert net.server_events.count(TransactionTerminated()) == 1
        acks = [e for e in net.server_events if isinstance(e, AckReceived)]
        assert len(acks) <= 1
        assert not (acks and TimedOut() in net.server_events)
    if net.retransmitter is not None:
        assert net.retransmitter.done
