"""Delivery receipts (XEP-0184) ↔ positive delivery notifications (IMDN, RFC 5438), sans-IO.

SIP → XMPP: a MESSAGE whose CPIM (RFC 3862) carries ``imdn.Message-ID`` and
``imdn.Disposition-Notification: positive-delivery`` (RFC 5438 §6.2) becomes a chat message
with ``<request xmlns="urn:xmpp:receipts"/>`` under a stanza id of ours; the XMPP client's
``<received id=…/>`` becomes a MESSAGE back to the SIP sender: CPIM wrapping a
``message/imdn+xml`` *delivered* notification for that Message-ID (§7.1,
``Content-Disposition: notification``). A ``negative-delivery`` request is answered the same
way with *failed* when XMPP returns an error for the message (§7.2.1.1).

XMPP → SIP: a chat message with a receipt request is sent as CPIM with a Message-ID of ours
and ``positive-delivery, negative-delivery``; the SIP side's *delivered* notification becomes
``<received id=…/>`` for the XMPP stanza id, *failed* (or *forbidden*, *error*) an error
stanza, so a message is never lost silently.

Both directions keep what a later notification needs in a :class:`ReceiptBook`, bounded
(``limit``): the oldest entries go first, a notification for one gone is logged and answered
200 (it has nowhere to go). XMPP ids are never reused as Message-IDs: §6.3 wants them unique
and unguessable, and the book maps ours back to theirs.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from control.msrp.cpim import CPIM_CONTENT_TYPE, CpimAddress, CpimMessage, parse_cpim
from control.msrp.errors import CpimError, ImdnError
from control.msrp.imdn import (
    IMDN_CONTENT_TYPE,
    IMDN_CPIM_NS,
    ImdnKind,
    ImdnNotification,
    parse_imdn,
)
from control.sip.uri import SipUri
from control.xmpp.addressing import Jid
from control.xmpp.messages import MessageRefused

__all__ = [
    "RECEIPTS_NS",
    "ImdnRequest",
    "ReceiptBook",
    "SipOrigin",
    "XmppOrigin",
    "delivery_notification",
    "imdn_request_of",
    "notification_of",
    "wrap_with_request",
]

RECEIPTS_NS = "urn:xmpp:receipts"
BOOK_LIMIT = 10000  # messages awaiting a receipt or an error, per direction
_IMDN_PREFIX = "imdn"


@dataclass(frozen=True, slots=True)
class ImdnRequest:
    """What a SIP sender asked to be told (RFC 5438 §6.2), under its Message-ID."""

    message_id: str
    positive: bool
    negative: bool


@dataclass(frozen=True, slots=True)
class SipOrigin:
    """A SIP MESSAGE sent on to XMPP: who to report to, and what the sender asked for."""

    sender: SipUri
    recipient: SipUri
    imdn: ImdnRequest | None = None


@dataclass(frozen=True, slots=True)
class XmppOrigin:
    """An XMPP message sent on to SIP with a receipt request: the stanza to acknowledge."""

    sender: Jid
    recipient: Jid
    stanza_id: str


_V = TypeVar("_V")


class ReceiptBook(Generic[_V]):
    """A bounded map of messages in flight (oldest dropped first past ``limit``)."""

    def __init__(self, limit: int = BOOK_LIMIT) -> None:
        self.limit = limit
        self._entries: OrderedDict[str, _V] = OrderedDict()

    def add(self, key: str, value: _V) -> None:
        self._entries[key] = value
        while len(self._entries) > self.limit:
            self._entries.popitem(last=False)

    def pop(self, key: str) -> _V | None:
        return self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)


def _mime(content_type: str) -> str:
    return content_type.partition(";")[0].strip().lower()


def _cpim(content_type: str, body: bytes) -> CpimMessage | None:
    if _mime(content_type) != CPIM_CONTENT_TYPE:
        return None
    try:
        return parse_cpim(body)
    except CpimError as exc:
        raise MessageRefused(exc.reason, sip_status=400) from exc


def imdn_request_of(content_type: str, body: bytes) -> ImdnRequest | None:
    """The delivery notifications a MESSAGE asks for (positive and negative delivery only:
    display is the XMPP client's business, XEP-0333, which this gateway does not carry)."""
    cpim = _cpim(content_type, body)
    if cpim is None:
        return None
    try:
        message_id = cpim.value("Message-ID", IMDN_CPIM_NS)
        asked = cpim.value("Disposition-Notification", IMDN_CPIM_NS)
    except CpimError as exc:
        raise MessageRefused(exc.reason, sip_status=400) from exc
    if not message_id or not asked:
        return None
    kinds = {kind.strip().lower() for kind in asked.split(",")}
    positive = "positive-delivery" in kinds
    negative = "negative-delivery" in kinds
    if not positive and not negative:
        return None
    return ImdnRequest(message_id.strip(), positive, negative)


def notification_of(content_type: str, body: bytes) -> ImdnNotification | None:
    """The delivery notification a MESSAGE carries (CPIM around ``message/imdn+xml``, or the
    bare document some stacks send), None for any other content; a malformed one is 400."""
    cpim = _cpim(content_type, body)
    if cpim is not None:
        content_type, body = cpim.content_type or "text/plain", cpim.body
    if _mime(content_type) != IMDN_CONTENT_TYPE:
        return None
    try:
        return parse_imdn(body)
    except ImdnError as exc:
        raise MessageRefused(exc.reason, sip_status=400) from exc


def _imdn_cpim(
    content_type: str,
    body: bytes,
    *,
    sender: SipUri,
    recipient: SipUri,
    now: datetime,
    headers: list[tuple[str, str]],
    content_headers: tuple[tuple[str, str], ...] = (),
) -> tuple[str, bytes]:
    """CPIM from ``sender`` to ``recipient`` with a DateTime and imdn.* ``headers``."""
    cpim = CpimMessage.build(
        content_type=content_type,
        body=body,
        sender=CpimAddress(str(sender)),
        recipients=[CpimAddress(str(recipient))],
        datetime=now,
        namespaces={_IMDN_PREFIX: IMDN_CPIM_NS},
        extra=[(f"{_IMDN_PREFIX}.{name}", value) for name, value in headers],
        content_headers=content_headers,
    )
    return CPIM_CONTENT_TYPE, cpim.serialize()


def wrap_with_request(
    content_type: str,
    body: bytes,
    *,
    message_id: str,
    sender: SipUri,
    recipient: SipUri,
    now: datetime,
) -> tuple[str, bytes]:
    """The MESSAGE content for an XMPP message that asked for a receipt: CPIM with our
    Message-ID, a DateTime (§6.3 requires it) and positive + negative delivery asked."""
    asked = [
        ("Message-ID", message_id),
        ("Disposition-Notification", "positive-delivery, negative-delivery"),
    ]
    return _imdn_cpim(
        content_type, body, sender=sender, recipient=recipient, now=now, headers=asked
    )


def delivery_notification(
    message_id: str,
    *,
    status: str,
    sender: SipUri,
    recipient: SipUri,
    notification_id: str,
    now: datetime,
) -> tuple[str, bytes]:
    """The MESSAGE content of a delivery notification (RFC 5438 §7.1.1): from ``sender`` (the
    one who got the message) to ``recipient`` (its original sender), ``status`` delivered or
    failed, for ``message_id``; the notification has a Message-ID of its own and asks for no
    notification back (§7.1.1)."""
    document = ImdnNotification(
        message_id, now, ImdnKind.DELIVERY, status, recipient_uri=str(sender)
    ).serialize()
    return _imdn_cpim(
        IMDN_CONTENT_TYPE,
        document,
        sender=sender,
        recipient=recipient,
        now=now,
        headers=[("Message-ID", notification_id)],
        content_headers=(("Content-Disposition", "notification"),),
    )
