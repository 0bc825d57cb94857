"""Hardened XML parsing for the small XML bodies carried in chat (RFC 3994, RFC 5438).

Peer XML never gets a DTD: no entity expansion (billion laughs), no external entities (XXE), no
network, no huge trees, and a size cap before lxml sees a byte.
"""

from __future__ import annotations

from lxml import etree

__all__ = ["MAX_XML_SIZE", "parse_xml"]

# An is-composing or IMDN document is a few hundred bytes.
MAX_XML_SIZE = 16 * 1024


def _parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        huge_tree=False,
        load_dtd=False,
        dtd_validation=False,
        remove_pis=True,
        remove_comments=True,
    )


def parse_xml(data: bytes, *, max_size: int = MAX_XML_SIZE) -> etree._Element | str:
    """The root element, or a reason string when the document is refused."""
    if len(data) > max_size:
        return "document too large"
    # UTF-8 only, so the byte check below cannot be dodged with another encoding.
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return "document is not UTF-8"
    # Any DTD is refused outright: these formats never need one.
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        return "DTDs and entity declarations are not allowed"
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:
        return f"malformed XML: {exc}"
    if getattr(root.getroottree().docinfo, "doctype", ""):
        return "DTDs are not allowed"
    return root
