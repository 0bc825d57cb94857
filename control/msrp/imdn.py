"""Minimal IMDN (RFC 5438): message/imdn+xml delivery and display notifications.

A sender asks with CPIM headers (``imdn.Disposition-Notification: positive-delivery, display``
and ``imdn.Message-ID``); the recipient answers with a document naming that Message-ID and one
status. Only what chat needs is here: build and parse delivered/displayed (and their failures).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from lxml import etree

from .cpim import format_datetime, parse_datetime
from .errors import CpimError, ImdnError
from .xmldoc import MAX_XML_SIZE, parse_xml

__all__ = [
    "IMDN_CONTENT_TYPE",
    "IMDN_NS",
    "ImdnKind",
    "ImdnNotification",
    "parse_imdn",
]

IMDN_CONTENT_TYPE = "message/imdn+xml"
IMDN_NS = "urn:ietf:params:xml:ns:imdn"
# The CPIM namespace URN for the imdn.* headers (RFC 5438 §5.1).
IMDN_CPIM_NS = "urn:ietf:params:imdn"


class ImdnKind(enum.Enum):
    DELIVERY = "delivery-notification"
    DISPLAY = "display-notification"


# RFC 5438 §7.2.1: statuses allowed per notification kind.
_STATUSES = {
    ImdnKind.DELIVERY: ("delivered", "failed", "forbidden", "error"),
    ImdnKind.DISPLAY: ("displayed", "forbidden", "error"),
}


@dataclass(frozen=True, slots=True)
class ImdnNotification:
    message_id: str
    datetime: datetime
    kind: ImdnKind
    status: str
    recipient_uri: str | None = None
    original_recipient_uri: str | None = None

    def serialize(self) -> bytes:
        if self.status not in _STATUSES[self.kind]:
            raise ValueError(f"{self.status!r} is not a {self.kind.value} status")
        ns = f"{{{IMDN_NS}}}"
        root = etree.Element(ns + "imdn", nsmap={None: IMDN_NS})  # type: ignore[dict-item]
        etree.SubElement(root, ns + "message-id").text = self.message_id
        etree.SubElement(root, ns + "datetime").text = format_datetime(self.datetime)
        if self.recipient_uri is not None:
            etree.SubElement(root, ns + "recipient-uri").text = self.recipient_uri
        if self.original_recipient_uri is not None:
            element = etree.SubElement(root, ns + "original-recipient-uri")
            element.text = self.original_recipient_uri
        notification = etree.SubElement(root, ns + self.kind.value)
        status = etree.SubElement(notification, ns + "status")
        etree.SubElement(status, ns + self.status)
        return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


def parse_imdn(data: bytes, *, max_size: int = MAX_XML_SIZE) -> ImdnNotification:
    """Parse with the hardened parser; :class:`ImdnError` (400) on anything wrong."""
    root = parse_xml(data, max_size=max_size)
    if isinstance(root, str):
        raise ImdnError(root)
    ns = f"{{{IMDN_NS}}}"
    if root.tag != ns + "imdn":
        raise ImdnError("root element is not imdn")

    def text(name: str) -> str | None:
        element = root.find(ns + name)
        return None if element is None else (element.text or "").strip()

    message_id = text("message-id")
    stamp = text("datetime")
    if not message_id or not stamp:
        raise ImdnError("message-id and datetime are required")
    try:
        when = parse_datetime(stamp)
    except CpimError:
        raise ImdnError("bad datetime") from None
    for kind in ImdnKind:
        notification = root.find(ns + kind.value)
        if notification is None:
            continue
        status = notification.find(ns + "status")
        children = [] if status is None else [c for c in status if isinstance(c.tag, str)]
        if len(children) != 1:
            raise ImdnError("a notification needs exactly one status")
        qname = etree.QName(children[0])
        if qname.namespace != IMDN_NS or qname.localname not in _STATUSES[kind]:
            raise ImdnError(f"unknown {kind.value} status")
        return ImdnNotification(
            message_id,
            when,
            kind,
            qname.localname,
            text("recipient-uri"),
            text("original-recipient-uri"),
        )
    raise ImdnError("no delivery or display notification")
