"""Is-composing indications (RFC 3994): application/im-iscomposing+xml.

``active`` while the user types, with a ``refresh`` interval after which the receiver falls back
to ``idle`` unless refreshed (§3); ``idle`` with optional ``lastactive`` when typing stops.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from lxml import etree

from .cpim import format_datetime, parse_datetime
from .errors import CpimError, IsComposingError
from .xmldoc import MAX_XML_SIZE, parse_xml

__all__ = [
    "ISCOMPOSING_CONTENT_TYPE",
    "ISCOMPOSING_NS",
    "ComposingState",
    "IsComposing",
    "parse_iscomposing",
]

ISCOMPOSING_CONTENT_TYPE = "application/im-iscomposing+xml"
ISCOMPOSING_NS = "urn:ietf:params:xml:ns:im-iscomposing"


class ComposingState(enum.Enum):
    ACTIVE = "active"
    IDLE = "idle"


@dataclass(frozen=True, slots=True)
class IsComposing:
    """One indication. ``refresh`` is in seconds (RFC 3994 §4: positive integer)."""

    state: ComposingState
    last_active: datetime | None = None
    content_type: str | None = None
    refresh: int | None = None

    def serialize(self) -> bytes:
        root = etree.Element(f"{{{ISCOMPOSING_NS}}}isComposing", nsmap={None: ISCOMPOSING_NS})  # type: ignore[dict-item]
        etree.SubElement(root, f"{{{ISCOMPOSING_NS}}}state").text = self.state.value
        if self.last_active is not None:
            element = etree.SubElement(root, f"{{{ISCOMPOSING_NS}}}lastactive")
            element.text = format_datetime(self.last_active)
        if self.content_type is not None:
            etree.SubElement(root, f"{{{ISCOMPOSING_NS}}}contenttype").text = self.content_type
        if self.refresh is not None:
            if self.refresh < 1:
                raise ValueError("refresh must be a positive number of seconds")
            etree.SubElement(root, f"{{{ISCOMPOSING_NS}}}refresh").text = str(self.refresh)
        return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


def parse_iscomposing(data: bytes, *, max_size: int = MAX_XML_SIZE) -> IsComposing:
    """Parse with the hardened parser; :class:`IsComposingError` (400) on anything wrong."""
    root = parse_xml(data, max_size=max_size)
    if isinstance(root, str):
        raise IsComposingError(root)
    if root.tag != f"{{{ISCOMPOSING_NS}}}isComposing":
        raise IsComposingError("root element is not isComposing")
    fields: dict[str, str] = {}
    for child in root:
        if not isinstance(child.tag, str):
            continue
        qname = etree.QName(child)
        if qname.namespace == ISCOMPOSING_NS:
            fields.setdefault(qname.localname, (child.text or "").strip())
    try:
        state = ComposingState(fields.get("state", ""))
    except ValueError:
        raise IsComposingError("state must be active or idle") from None
    last_active = None
    if "lastactive" in fields:
        try:
            last_active = parse_datetime(fields["lastactive"])
        except CpimError:
            raise IsComposingError("bad lastactive") from None
    refresh = None
    if "refresh" in fields:
        text = fields["refresh"]
        if not text.isdigit() or len(text) > 9 or int(text) < 1:
            raise IsComposingError("refresh must be a positive integer")
        refresh = int(text)
    return IsComposing(state, last_active, fields.get("contenttype") or None, refresh)
