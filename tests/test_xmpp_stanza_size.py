"""control/xmpp/component.py's size check for [xmpp] max_stanza_bytes: the bound from the
parsed tree is never below the serialised size (so the check is not weakened), a stanza over
the limit is still refused with its exact size, and one under it is never serialised."""

from __future__ import annotations

from xml.etree import ElementTree as ET

from hypothesis import given, settings
from hypothesis import strategies as st

from control.xmpp.component import size_bound, stanza_size
from control.xmpp.errors import StanzaLimits, StanzaRefused, check_message

NS = "jabber:component:accept"
# Every character ET escapes, some that need a character reference, and plain ones.
CHARS = st.sampled_from(list("a &<>\"\r\n\t'é€😀\U0010ffffz"))
TEXT = st.text(CHARS, max_size=40)
NAMES = st.sampled_from(["body", "{urn:xmpp:receipts}request", "{http://a&b}c", "id"])


class Serialiser:
    """ET.tostring that counts its calls (the size check's only way to serialise)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, xml: ET.Element) -> bytes:
        self.calls += 1
        return ET.tostring(xml)


def message(body: str, **attrs: str) -> ET.Element:
    xml = ET.Element(f"{{{NS}}}message", {"from": "bob@x/desk", "to": "alice@sip", **attrs})
    ET.SubElement(xml, f"{{{NS}}}body").text = body
    return xml


@st.composite
def trees(draw: st.DrawFn, depth: int = 0) -> ET.Element:
    element = ET.Element(draw(NAMES), draw(st.dictionaries(NAMES, TEXT, max_size=3)))
    element.text = draw(st.none() | TEXT)
    element.tail = draw(st.none() | TEXT)
    if depth < 3:
        for child in draw(st.lists(trees(depth + 1), max_size=3)):
            element.append(child)
    return element


@settings(max_examples=300, deadline=None)
@given(trees())
def test_the_bound_is_never_below_the_serialised_size(xml: ET.Element) -> None:
    bound = size_bound(xml)
    assert bound is not None and bound >= len(ET.tostring(xml))


def test_a_parsed_stanza_bound_holds() -> None:
    text = (
        f'<message xmlns="{NS}" from="b@x/d" to="a@s" id="q&amp;&quot;">'
        "<body>1 &lt; 2 &amp; é😀</body>"
        '<request xmlns="urn:xmpp:receipts"/><active xmlns="http://jabber.org/protocol/chatstates"/>'
        "</message>"
    )
    xml = ET.fromstring(text)
    bound = size_bound(xml)
    assert bound is not None and bound >= len(ET.tostring(xml))


def test_a_stanza_under_the_limit_is_never_serialised() -> None:
    serialise = Serialiser()
    xml = message("hello " * 100)
    size = stanza_size(xml, 4096, serialise)
    assert serialise.calls == 0
    assert len(ET.tostring(xml)) <= size <= 4096
    check_message(xml, size=size, limits=StanzaLimits(4096))  # it passes


def test_a_stanza_over_the_limit_is_still_refused_with_its_exact_size() -> None:
    serialise = Serialiser()
    xml = message("x" * 5000)
    size = stanza_size(xml, 4096, serialise)
    assert serialise.calls == 1 and size == len(ET.tostring(xml)) > 4096
    try:
        check_message(xml, size=size, limits=StanzaLimits(4096))
    except StanzaRefused as refused:
        assert refused.condition == "policy-violation"
        assert f"stanza of {size} bytes" in refused.text
    else:
        raise AssertionError("an oversize stanza passed")


def test_a_loose_bound_near_the_limit_takes_the_exact_size_and_passes() -> None:
    """Non-ASCII text makes the bound ten times its length; the exact size decides."""
    serialise = Serialiser()
    xml = message("é" * 500)  # &#233; each: 3,000 bytes serialised, bound 5,000
    exact = len(ET.tostring(xml))
    size = stanza_size(xml, 4096, serialise)
    assert serialise.calls == 1 and size == exact <= 4096
    check_message(xml, size=size, limits=StanzaLimits(4096))


def test_a_comment_in_the_tree_falls_back_to_serialising() -> None:
    xml = message("hi")
    xml.append(ET.Comment("note"))
    assert size_bound(xml) is None
    serialise = Serialiser()
    assert stanza_size(xml, 4096, serialise) == len(ET.tostring(xml))
    assert serialise.calls == 1
