"""RFC 3261 §12 dialogs, sans-IO: no sockets, no loop, messages parsed from text.

The vectors follow the §24.2 call flow (Alice at atlanta.com calls Bob at biloxi.com through
two record-routing proxies): the UAS builds its dialog from the INVITE (§12.1.1), the UAC from
the INVITE and its 2xx (§12.1.2), and both then build and absorb in-dialog requests (§12.2).
"""

from __future__ import annotations

import pytest

from control.sip.dialog import TARGET_REFRESH, Dialog, dialog_id_of_request
from control.sip.errors import SipError
from control.sip.message import Request, Response, parse_message
from control.sip.uri import NameAddr, SipUri, parse_name_addr, parse_uri

INVITE = (
    "INVITE sip:bob@biloxi.com SIP/2.0\r\n"
    "Via: SIP/2.0/UDP bigbox3.site3.atlanta.com;branch=z9hG4bK77ef4c2312983.1\r\n"
    "Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bKnashds8;received=192.0.2.1\r\n"
    "Max-Forwards: 69\r\n"
    "Record-Route: <sip:p2.biloxi.com;lr>, <sip:p1.atlanta.com;lr>\r\n"
    "Record-Route: <sip:edge.example.net;lr>\r\n"
    "To: Bob <sip:bob@biloxi.com>\r\n"
    "From: Alice <sip:alice@atlanta.com>;tag=1928301774\r\n"
    "Call-ID: a84b4c76e66710@pc33.atlanta.com\r\n"
    "CSeq: 314159 INVITE\r\n"
    "Contact: <sip:alice@pc33.atlanta.com>\r\n"
    "Content-Length: 0\r\n"
    "\r\n"
)

OK = (
    "SIP/2.0 200 OK\r\n"
    "Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bKnashds8;received=192.0.2.1\r\n"
    "Record-Route: <sip:p2.biloxi.com;lr>, <sip:p1.atlanta.com;lr>\r\n"
    "Record-Route: <sip:edge.example.net;lr>\r\n"
    "To: Bob <sip:bob@biloxi.com>;tag=a6c85cf\r\n"
    "From: Alice <sip:alice@atlanta.com>;tag=1928301774\r\n"
    "Call-ID: a84b4c76e66710@pc33.atlanta.com\r\n"
    "CSeq: 314159 INVITE\r\n"
    "Contact: <sip:bob@192.0.2.4>\r\n"
    "Content-Length: 0\r\n"
    "\r\n"
)

BOB_CONTACT = NameAddr(SipUri(host="192.0.2.4", user="bob"))
UAS_TAG = "a6c85cf"
VIA = "SIP/2.0/UDP 192.0.2.4;branch=z9hG4bKnew1"


def request(text: str = INVITE, **replace: str) -> Request:
    for old, new in replace.items():
        text = text.replace(old, new)
    message = parse_message(text.encode())
    assert isinstance(message, Request)
    return message


def response(text: str = OK, **replace: str) -> Response:
    for old, new in replace.items():
        text = text.replace(old, new)
    message = parse_message(text.encode())
    assert isinstance(message, Response)
    return message


def uas_dialog(invite: Request | None = None) -> Dialog:
    return Dialog.as_uas(invite or request(), UAS_TAG, BOB_CONTACT)


def uac_dialog(invite: Request | None = None, ok: Response | None = None) -> Dialog:
    return Dialog.as_uac(invite or request(), ok or response())


def in_dialog(
    method: str,
    cseq: int,
    *,
    contact: str | None = None,
    from_tag: str = "1928301774",
    to_tag: str = UAS_TAG,
) -> Request:
    """A request Alice sends to Bob inside the dialog (Bob's view: the UAS)."""
    lines = [
        f"{method} sip:bob@192.0.2.4 SIP/2.0",
        "Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK" + f"{method.lower()}{cseq}",
        "Max-Forwards: 70",
        f"To: Bob <sip:bob@biloxi.com>;tag={to_tag}",
        f"From: Alice <sip:alice@atlanta.com>;tag={from_tag}",
        "Call-ID: a84b4c76e66710@pc33.atlanta.com",
        f"CSeq: {cseq} {method}",
    ]
    if contact is not None:
        lines.append(f"Contact: {contact}")
    lines += ["Content-Length: 0", "", ""]
    return request("\r\n".join(lines))


def routes(req: Request) -> list[str]:
    return req.headers.get_all("Route")


# --- §12.1.1: the UAS builds its dialog from the INVITE ----------------------------------------


def test_uas_dialog_identity_and_parties() -> None:
    dialog = uas_dialog()
    assert dialog.call_id == "a84b4c76e66710@pc33.atlanta.com"
    assert dialog.local_tag == UAS_TAG
    assert dialog.remote_tag == "1928301774"
    assert dialog.id == ("a84b4c76e66710@pc33.atlanta.com", UAS_TAG, "1928301774")
    # The local party is the INVITE's To with our tag added; the remote party its From.
    assert dialog.local_party.uri == parse_uri("sip:bob@biloxi.com")
    assert dialog.local_party.tag == UAS_TAG
    assert dialog.remote_party.uri == parse_uri("sip:alice@atlanta.com")
    assert dialog.remote_party.tag == "1928301774"
    assert dialog.local_contact == BOB_CONTACT


def test_uas_route_set_is_record_route_in_order() -> None:
    # §12.1.1: "the route set MUST be set to the list of URIs in the Record-Route header field
    # from the request, taken in order", across lines and comma-separated values alike.
    dialog = uas_dialog()
    assert dialog.route_set == [
        "<sip:p2.biloxi.com;lr>",
        "<sip:p1.atlanta.com;lr>",
        "<sip:edge.example.net;lr>",
    ]


def test_uas_remote_target_and_sequence_numbers() -> None:
    dialog = uas_dialog()
    assert dialog.remote_target == parse_uri("sip:alice@pc33.atlanta.com")
    assert dialog.remote_seq == 314159  # §12.1.1: remote sequence number = the CSeq
    assert dialog.local_seq == 0  # §12.1.1: the local sequence number is empty


def test_uas_without_record_route_has_empty_route_set() -> None:
    invite = request(
        INVITE.replace(
            "Record-Route: <sip:p2.biloxi.com;lr>, <sip:p1.atlanta.com;lr>\r\n", ""
        ).replace("Record-Route: <sip:edge.example.net;lr>\r\n", "")
    )
    assert uas_dialog(invite).route_set == []


def test_uas_secure_only_for_sips_request_uri() -> None:
    # §12.1.1: the secure flag is set when the Request-URI is a SIPS URI.
    assert uas_dialog().secure is False
    sips = request(**{"INVITE sip:bob@biloxi.com": "INVITE sips:bob@biloxi.com"})
    assert uas_dialog(sips).secure is True


def test_uas_rejects_invite_without_contact() -> None:
    invite = request(**{"Contact: <sip:alice@pc33.atlanta.com>\r\n": ""})
    with pytest.raises(SipError) as caught:
        uas_dialog(invite)
    assert caught.value.status == 400


def test_uas_rejects_from_without_tag() -> None:
    invite = request(**{";tag=1928301774": ""})
    with pytest.raises(SipError) as caught:
        uas_dialog(invite)
    assert caught.value.status == 400


# --- §12.1.2: the UAC builds its dialog from the INVITE and the 2xx ----------------------------


def test_uac_dialog_from_request_and_2xx() -> None:
    dialog = uac_dialog()
    assert dialog.id == ("a84b4c76e66710@pc33.atlanta.com", "1928301774", UAS_TAG)
    assert dialog.local_party.tag == "1928301774"
    assert dialog.remote_party.tag == UAS_TAG
    # §12.1.2: remote target from the 2xx's Contact, local sequence number the INVITE's CSeq,
    # remote sequence number empty; our own Contact from the INVITE.
    assert dialog.remote_target == parse_uri("sip:bob@192.0.2.4")
    assert dialog.local_seq == 314159
    assert dialog.remote_seq is None
    assert dialog.local_contact.uri == parse_uri("sip:alice@pc33.atlanta.com")
    assert dialog.secure is False


def test_uac_route_set_is_record_route_reversed() -> None:
    # §12.1.2: "taken in reverse order" — the first hop on the way back is the UAC's own proxy.
    assert uac_dialog().route_set == [
        "<sip:edge.example.net;lr>",
        "<sip:p1.atlanta.com;lr>",
        "<sip:p2.biloxi.com;lr>",
    ]


def test_uac_secure_for_sips_request() -> None:
    sips = request(**{"INVITE sip:bob@biloxi.com": "INVITE sips:bob@biloxi.com"})
    assert uac_dialog(sips).secure is True


def test_uac_rejects_2xx_without_contact_or_to_tag() -> None:
    with pytest.raises(SipError) as no_contact:
        uac_dialog(ok=response(**{"Contact: <sip:bob@192.0.2.4>\r\n": ""}))
    assert no_contact.value.status == 400
    with pytest.raises(SipError) as no_tag:
        uac_dialog(ok=response(**{";tag=a6c85cf": ""}))
    assert no_tag.value.status == 400


def test_both_sides_agree_on_the_dialog() -> None:
    uas, uac = uas_dialog(), uac_dialog()
    assert (uas.call_id, uas.local_tag, uas.remote_tag) == (
        uac.call_id,
        uac.remote_tag,
        uac.local_tag,
    )


# --- §12.2.1.1: building in-dialog requests ----------------------------------------------------


def test_create_request_increments_cseq() -> None:
    dialog = uac_dialog()
    first = dialog.create_request("INFO", via=VIA)
    second = dialog.create_request("BYE", via=VIA)
    assert first.cseq.number == 314160
    assert first.cseq.method == "INFO"
    assert second.cseq.number == 314161
    assert dialog.local_seq == 314161


def test_uas_first_request_starts_from_empty_local_seq() -> None:
    dialog = uas_dialog()
    assert dialog.create_request("BYE", via=VIA).cseq.number == 1


def test_ack_reuses_the_invite_cseq() -> None:
    # §13.2.2.4: the ACK's CSeq number is the INVITE's, and it does not consume a new one.
    dialog = uac_dialog()
    reinvite = dialog.create_request("INVITE", via=VIA)
    ack = dialog.create_request("ACK", via=VIA, cseq=reinvite.cseq.number)
    assert ack.cseq.number == reinvite.cseq.number == 314160
    assert ack.cseq.method == "ACK"
    assert dialog.create_request("BYE", via=VIA).cseq.number == 314161


def test_create_request_headers() -> None:
    dialog = uac_dialog()
    req = dialog.create_request(
        "MESSAGE",
        via=VIA,
        body=b"hi",
        content_type="text/plain",
        extra_headers=[("Subject", "test")],
    )
    assert req.method == "MESSAGE"
    assert req.headers.get_all("Via") == [VIA]
    assert req.headers.get("Max-Forwards") == "70"
    assert req.call_id == dialog.call_id
    assert req.from_.tag == "1928301774"
    assert req.from_.uri == parse_uri("sip:alice@atlanta.com")
    assert req.to.tag == UAS_TAG
    assert req.to.uri == parse_uri("sip:bob@biloxi.com")
    assert req.headers.get("Subject") == "test"
    assert req.headers.get("Content-Type") == "text/plain"
    assert req.body == b"hi"
    # What we build must be a well-formed message: parse it back.
    again = parse_message(req.serialize())
    assert isinstance(again, Request)
    assert again.cseq == req.cseq
    assert again.body == b"hi"


def test_loose_routing_keeps_remote_target_as_request_uri() -> None:
    # §12.2.1.1: first route has ;lr → Request-URI = remote target, Route = the route set.
    dialog = uac_dialog()
    req = dialog.create_request("BYE", via=VIA)
    assert req.uri == parse_uri("sip:bob@192.0.2.4")
    assert routes(req) == [
        "<sip:edge.example.net;lr>",
        "<sip:p1.atlanta.com;lr>",
        "<sip:p2.biloxi.com;lr>",
    ]
    assert dialog.next_hop() == parse_uri("sip:edge.example.net;lr")


def test_strict_routing_puts_first_route_in_request_uri() -> None:
    # §12.2.1.1: a first route without ;lr (an RFC 2543 proxy) becomes the Request-URI; the
    # rest of the route set follows in Route and the remote target goes last.
    dialog = uac_dialog()
    dialog.route_set = ["<sip:old.example.net>", "<sip:p1.atlanta.com;lr>"]
    req = dialog.create_request("BYE", via=VIA)
    assert req.uri == parse_uri("sip:old.example.net")
    assert routes(req) == ["<sip:p1.atlanta.com;lr>", "<sip:bob@192.0.2.4>"]
    assert dialog.next_hop() == parse_uri("sip:old.example.net")


def test_strict_routing_with_a_single_route() -> None:
    dialog = uac_dialog()
    dialog.route_set = ["<sip:old.example.net>"]
    req = dialog.create_request("INFO", via=VIA)
    assert req.uri == parse_uri("sip:old.example.net")
    assert routes(req) == ["<sip:bob@192.0.2.4>"]


def test_no_route_set_goes_straight_to_remote_target() -> None:
    dialog = uac_dialog()
    dialog.route_set = []
    req = dialog.create_request("BYE", via=VIA)
    assert req.uri == parse_uri("sip:bob@192.0.2.4")
    assert "Route" not in req.headers
    assert dialog.next_hop() == parse_uri("sip:bob@192.0.2.4")


def test_uas_routes_back_through_record_route_in_order() -> None:
    dialog = uas_dialog()
    req = dialog.create_request("BYE", via=VIA)
    assert req.uri == parse_uri("sip:alice@pc33.atlanta.com")
    assert routes(req)[0] == "<sip:p2.biloxi.com;lr>"
    assert dialog.next_hop() == parse_uri("sip:p2.biloxi.com;lr")


@pytest.mark.parametrize("method", sorted(TARGET_REFRESH))
def test_target_refresh_requests_carry_contact(method: str) -> None:
    # §12.2.1.1 / §8.1.1.8: a target refresh request carries our Contact (§14.1 re-INVITE).
    dialog = uas_dialog()
    req = dialog.create_request(method, via=VIA)
    assert [c.uri for c in req.contacts] == [BOB_CONTACT.uri]


@pytest.mark.parametrize("method", ["BYE", "INFO", "MESSAGE", "OPTIONS"])
def test_other_requests_carry_no_contact(method: str) -> None:
    dialog = uas_dialog()
    assert "Contact" not in dialog.create_request(method, via=VIA).headers


def test_contact_drops_header_parameters() -> None:
    # Our local Contact may carry header params (expires, +sip.instance); only the URI goes out.
    contact = parse_name_addr("<sip:bob@192.0.2.4;transport=tcp>;expires=60")
    dialog = Dialog.as_uas(request(), UAS_TAG, contact)
    req = dialog.create_request("INVITE", via=VIA)
    assert req.headers.get("Contact") == "<sip:bob@192.0.2.4;transport=tcp>"


# --- §12.2.2: absorbing in-dialog requests -----------------------------------------------------


def test_receive_request_advances_remote_seq() -> None:
    dialog = uas_dialog()
    dialog.receive_request(in_dialog("INFO", 314160))
    assert dialog.remote_seq == 314160
    # Gaps are allowed: CSeq need only increase (§12.2.2).
    dialog.receive_request(in_dialog("INFO", 314170))
    assert dialog.remote_seq == 314170


@pytest.mark.parametrize("cseq", [314159, 314158, 1])
def test_receive_request_with_lower_or_equal_cseq_is_500(cseq: int) -> None:
    # §12.2.2: "If the remote sequence number was not empty, but the sequence number of the
    # request is lower than the remote sequence number, the request is out of order and MUST be
    # rejected with a 500". An equal one is a new request with a reused number: also refused.
    dialog = uas_dialog()
    with pytest.raises(SipError) as caught:
        dialog.receive_request(in_dialog("BYE", cseq))
    assert caught.value.status == 500
    assert dialog.remote_seq == 314159


def test_uac_accepts_any_first_remote_cseq() -> None:
    # §12.2.2: with an empty remote sequence number any value is taken.
    dialog = uac_dialog()
    assert dialog.remote_seq is None
    dialog.receive_request(in_dialog("BYE", 1, from_tag=UAS_TAG, to_tag="1928301774"))
    assert dialog.remote_seq == 1


def test_ack_and_cancel_do_not_move_remote_seq() -> None:
    # ACK and CANCEL reuse the CSeq number of the request they refer to.
    dialog = uas_dialog()
    dialog.receive_request(in_dialog("ACK", 314159))
    dialog.receive_request(in_dialog("CANCEL", 314159))
    assert dialog.remote_seq == 314159


@pytest.mark.parametrize("method", ["INVITE", "UPDATE"])
def test_target_refresh_with_new_contact_updates_remote_target(method: str) -> None:
    dialog = uas_dialog()
    dialog.receive_request(in_dialog(method, 314160, contact="<sip:alice@198.51.100.7:5070>"))
    assert dialog.remote_target == parse_uri("sip:alice@198.51.100.7:5070")
    # The next request we send goes to the new target.
    dialog.route_set = []
    assert dialog.create_request("BYE", via=VIA).uri == parse_uri("sip:alice@198.51.100.7:5070")


def test_target_refresh_without_contact_keeps_remote_target() -> None:
    dialog = uas_dialog()
    dialog.receive_request(in_dialog("INVITE", 314160))
    assert dialog.remote_target == parse_uri("sip:alice@pc33.atlanta.com")


def test_non_refresh_request_with_contact_keeps_remote_target() -> None:
    dialog = uas_dialog()
    dialog.receive_request(in_dialog("INFO", 314160, contact="<sip:elsewhere@203.0.113.9>"))
    assert dialog.remote_target == parse_uri("sip:alice@pc33.atlanta.com")


# --- §12.2.1.2: absorbing responses ------------------------------------------------------------


def test_2xx_to_reinvite_refreshes_remote_target() -> None:
    dialog = uac_dialog()
    reinvite = dialog.create_request("INVITE", via=VIA)
    ok = reinvite.make_response(200)
    ok.headers.add("Contact", "<sip:bob@203.0.113.5:5080>")
    dialog.receive_response(reinvite, ok)
    assert dialog.remote_target == parse_uri("sip:bob@203.0.113.5:5080")


def test_error_response_to_reinvite_keeps_remote_target() -> None:
    dialog = uac_dialog()
    reinvite = dialog.create_request("INVITE", via=VIA)
    refused = reinvite.make_response(488)
    refused.headers.add("Contact", "<sip:bob@203.0.113.5:5080>")
    dialog.receive_response(reinvite, refused)
    assert dialog.remote_target == parse_uri("sip:bob@192.0.2.4")


def test_2xx_to_non_refresh_request_keeps_remote_target() -> None:
    dialog = uac_dialog()
    info = dialog.create_request("INFO", via=VIA)
    ok = info.make_response(200)
    ok.headers.add("Contact", "<sip:bob@203.0.113.5:5080>")
    dialog.receive_response(info, ok)
    assert dialog.remote_target == parse_uri("sip:bob@192.0.2.4")


# --- matching requests to dialogs --------------------------------------------------------------


def test_dialog_id_of_request_is_from_the_receivers_side() -> None:
    # §12.2.2: the local tag is the request's To tag, the remote tag its From tag.
    req = in_dialog("BYE", 314160)
    assert dialog_id_of_request(req) == uas_dialog().id


def test_dialog_id_of_a_request_built_by_the_peer_matches() -> None:
    # A request Alice's dialog builds is matched by Bob's dialog id, and vice versa.
    uas, uac = uas_dialog(), uac_dialog()
    assert dialog_id_of_request(uac.create_request("BYE", via=VIA)) == uas.id
    assert dialog_id_of_request(uas.create_request("BYE", via=VIA)) == uac.id


def test_dialog_id_of_out_of_dialog_request_is_none() -> None:
    assert dialog_id_of_request(request()) is None  # no To tag: a dialog-creating INVITE
    no_from_tag = in_dialog("BYE", 2).headers
    no_from_tag.set("From", "Alice <sip:alice@atlanta.com>")
    req = Request(headers=no_from_tag, method="BYE", uri=parse_uri("sip:bob@192.0.2.4"))
    assert dialog_id_of_request(req) is None
