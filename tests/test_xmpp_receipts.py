"""XEP-0184 receipts ↔ RFC 5438 delivery notifications: the sans-IO mapping."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from control.msrp.cpim import parse_cpim
from control.msrp.imdn import IMDN_CPIM_NS, ImdnKind
from control.sip.uri import parse_uri
from control.xmpp.messages import MessageRefused, chat_from_sip
from control.xmpp.receipts import (
    ImdnRequest,
    ReceiptBook,
    delivery_notification,
    imdn_request_of,
    notification_of,
    wrap_with_request,
)

NOW = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
ALICE = parse_uri("sip:alice@sip.localhost")
BOB = parse_uri("sip:bob@xmpp.localhost;gr=desk")

# RFC 5438 §9.1.1's request, as a SIP MESSAGE body (a prefix other than "imdn" on purpose:
# the namespace, not the prefix, names the headers).
RFC_REQUEST = (
    b"From: Alice <sip:alice@sip.localhost>\r\n"
    b"To: Bob <sip:bob@xmpp.localhost>\r\n"
    b"NS: n <urn:ietf:params:imdn>\r\n"
    b"n.Message-ID: 34jk324j\r\n"
    b"DateTime: 2006-04-04T12:16:49-05:00\r\n"
    b"n.Disposition-Notification: positive-delivery, display\r\n"
    b"\r\n"
    b"Content-Type: text/plain\r\n"
    b"\r\n"
    b"Hi there"
)


def test_a_request_for_positive_delivery_is_read_by_namespace() -> None:
    assert imdn_request_of("message/cpim", RFC_REQUEST) == ImdnRequest("34jk324j", True, False)
    assert chat_from_sip("message/cpim", RFC_REQUEST, max_bytes=1000).body == "Hi there"


def test_no_request_without_message_id_or_delivery_kinds() -> None:
    display_only = RFC_REQUEST.replace(b"positive-delivery, display", b"display")
    assert imdn_request_of("message/cpim", display_only) is None
    no_id = RFC_REQUEST.replace(b"n.Message-ID: 34jk324j\r\n", b"")
    assert imdn_request_of("message/cpim", no_id) is None
    assert imdn_request_of("text/plain", b"Hi there") is None
    with pytest.raises(MessageRefused) as refused:
        imdn_request_of("message/cpim", b"garbage without a blank line")
    assert refused.value.sip_status == 400


def test_an_xmpp_request_becomes_cpim_asking_positive_and_negative_delivery() -> None:
    content_type, body = wrap_with_request(
        "text/plain; charset=utf-8",
        b"hello alice",
        message_id="m1",
        sender=BOB,
        recipient=ALICE,
        now=NOW,
    )
    assert content_type == "message/cpim"
    cpim = parse_cpim(body)
    assert cpim.value("Message-ID", IMDN_CPIM_NS) == "m1"
    assert cpim.datetime == NOW  # RFC 5438 §6.3: DateTime is required with a request
    assert str(cpim.sender) == f"<{BOB}>"
    assert imdn_request_of(content_type, body) == ImdnRequest("m1", True, True)
    assert chat_from_sip(content_type, body, max_bytes=1000).body == "hello alice"


def test_a_delivery_notification_reads_back() -> None:
    content_type, body = delivery_notification(
        "34jk324j", status="delivered", sender=BOB, recipient=ALICE, notification_id="n1", now=NOW
    )
    cpim = parse_cpim(body)
    assert cpim.content_type == "message/imdn+xml"
    assert ("Content-Disposition", "notification") in cpim.content_headers
    assert cpim.value("Message-ID", IMDN_CPIM_NS) == "n1"
    assert imdn_request_of(content_type, body) is None  # §7.1.1: none asked for a notification
    notification = notification_of(content_type, body)
    assert notification is not None
    assert notification.message_id == "34jk324j"
    assert notification.kind is ImdnKind.DELIVERY
    assert notification.status == "delivered"
    assert notification.recipient_uri == str(BOB)


def test_a_bare_imdn_document_and_other_content() -> None:
    _, body = delivery_notification(
        "x", status="failed", sender=BOB, recipient=ALICE, notification_id="n", now=NOW
    )
    document = parse_cpim(body).body
    notification = notification_of("message/imdn+xml", document)
    assert notification is not None and notification.status == "failed"
    assert notification_of("message/cpim", RFC_REQUEST) is None
    assert notification_of("text/plain", b"hello") is None


def test_a_malformed_or_hostile_notification_is_400() -> None:
    for document in (
        b"<imdn xmlns='urn:ietf:params:xml:ns:imdn'><message-id>x</message-id></imdn>",
        b"<!DOCTYPE x [<!ENTITY a 'a'>]><imdn/>",
        b"not xml",
    ):
        with pytest.raises(MessageRefused) as refused:
            notification_of("message/imdn+xml", document)
        assert refused.value.sip_status == 400


def test_the_book_is_bounded_oldest_first() -> None:
    book: ReceiptBook[int] = ReceiptBook(limit=2)
    book.add("a", 1)
    book.add("b", 2)
    book.add("c", 3)
    assert len(book) == 2
    assert book.pop("a") is None
    assert book.pop("b") == 2
    assert book.pop("b") is None
    assert book.pop("c") == 3
