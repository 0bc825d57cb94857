"""XML parsing for the small XML bodies carried in chat (RFC 3994, RFC 5438): the one hardened
parser of control/xmlsafe.py with chat's own size cap, refusals as reason strings."""

from __future__ import annotations

from lxml import etree

from control.xmlsafe import XmlRefused, parse

__all__ = ["MAX_XML_SIZE", "parse_xml"]

# An is-composing or IMDN document is a few hundred bytes.
MAX_XML_SIZE = 16 * 1024


def parse_xml(data: bytes, *, max_size: int = MAX_XML_SIZE) -> etree._Element | str:
    """The root element, or a reason string when the document is refused (the one hardened
    parser of control/xmlsafe.py)."""
    try:
        return parse(data, max_bytes=max_size)
    except XmlRefused as exc:
        return exc.reason
