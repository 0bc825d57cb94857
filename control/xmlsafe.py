"""The one hardened XML parser for every XML body a peer sends us (conference-info, PIDF,
is-composing, IMDN, ...).

Peer XML never gets a DTD: no entity expansion (billion laughs), no external entities (XXE), no
network, no huge trees, and a size cap checked before lxml sees a byte. A refused document
raises :class:`XmlRefused` carrying the reason, which the caller turns into its protocol's own
error (SIP 400/413, MSRP 400/413); nothing else escapes.
"""

from __future__ import annotations

from lxml import etree

__all__ = ["DEFAULT_MAX_XML_BYTES", "XmlRefused", "parse"]

# A conference-info or PIDF document of a large room is tens of kilobytes; 1 MiB is far beyond
# any honest one and small enough to refuse a bomb before parsing.
DEFAULT_MAX_XML_BYTES = 1024 * 1024


class XmlRefused(ValueError):
    """A peer's XML we will not parse; ``too_large`` tells a size refusal (413) from others."""

    def __init__(self, reason: str, *, too_large: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.too_large = too_large


def _parser() -> etree.XMLParser:
    # One parser per call: lxml parsers keep state and are not shared across threads.
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        huge_tree=False,
        load_dtd=False,
        dtd_validation=False,
        remove_pis=True,
        remove_comments=True,
    )


def parse(data: bytes, *, max_bytes: int = DEFAULT_MAX_XML_BYTES) -> etree._Element:
    """The root element of ``data``, or :class:`XmlRefused` at once.

    The checks run cheapest first: size, encoding (UTF-8 only, so the DTD check below cannot be
    dodged with UTF-16), then any DOCTYPE or ENTITY declaration refused outright (none of the
    formats we take has one), then lxml with entities, DTDs and network off.
    """
    if len(data) > max_bytes:
        raise XmlRefused(
            f"document of {len(data)} bytes over the {max_bytes}-byte limit", too_large=True
        )
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        raise XmlRefused("document is not UTF-8") from None
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise XmlRefused("DTDs and entity declarations are not allowed")
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:
        raise XmlRefused(f"malformed XML: {exc}") from None
    if root is None:
        raise XmlRefused("empty document")
    if getattr(root.getroottree().docinfo, "doctype", ""):
        raise XmlRefused("DTDs are not allowed")
    return root
