"""CPIM (RFC 3862), is-composing (RFC 3994) and IMDN (RFC 5438) bodies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from control.msrp import (
    ComposingState,
    CpimAddress,
    CpimError,
    CpimMessage,
    ImdnError,
    ImdnKind,
    ImdnNotification,
    IsComposing,
    IsComposingError,
    check_content_type,
    parse_address,
    parse_chunk,
    parse_cpim,
    parse_imdn,
    parse_iscomposing,
)

DATA = Path(__file__).parent / "data" / "msrp"
IMDN_URN = "urn:ietf:params:imdn"


def test_rfc3862_example() -> None:
    data = (DATA / "rfc3862_example.cpim").read_bytes()
    msg = parse_cpim(data)
    assert msg.serialize() == data
    assert msg.sender == CpimAddress("im:piglet@100akerwood.com", "MR SANDERS")
    assert msg.recipients == (CpimAddress("im:eeyore@100akerwood.com", "Depressed Donkey"),)
    assert msg.datetime == datetime(2000, 12, 13, 13, 40, tzinfo=timezone(timedelta(hours=-8)))
    assert msg.subjects == [
        ("the weather will be fine today", None),
        ("beau temps prevu pour aujourd'hui", "fr"),
    ]
    assert msg.namespaces == {"MyFeatures": "mid:MessageFeatures@id.foo.com"}
    assert msg.value("VitalMessageOption", "mid:MessageFeatures@id.foo.com") == (
        "Confirmation-requested"
    )
    assert msg.value("VitalMessageOption") is None  # needs its namespace
    assert msg.content_type == "text/xml; charset=utf-8"
    assert msg.body == b"<body>\r\nHere is the text of my message.\r\n</body>\r\n"


def test_build_chat_message_with_imdn_round_trip() -> None:
    when = datetime(2024, 5, 1, 10, 0, 0, 123000, tzinfo=UTC)
    msg = CpimMessage.build(
        sender=CpimAddress("sip:alice@example.com", 'Alice "Al" \\ Smith'),
        recipients=[
            CpimAddress("sip:room@conference.example.com"),
            CpimAddress("sip:bob@example.com", "Bob"),
        ],
        cc=[CpimAddress("sip:carol@example.com")],
        datetime=when,
        subject="line one\nline two",
        namespaces={"imdn": IMDN_URN},
        extra=[
            ("imdn.Message-ID", "34jk324j"),
            ("imdn.Disposition-Notification", "positive-delivery, display"),
        ],
        content_type="text/plain; charset=utf-8",
        body="héllo\r\n-------x$".encode(),
    )
    wire = msg.serialize()
    assert wire.startswith(
        b'From: "Alice \\"Al\\" \\\\ Smith" <sip:alice@example.com>\r\n'
        b"To: <sip:room@conference.example.com>\r\n"
    )
    assert b"DateTime: 2024-05-01T10:00:00.123000+00:00\r\n" in wire
    assert b"NS: imdn <urn:ietf:params:imdn>\r\nimdn.Message-ID: 34jk324j\r\n" in wire
    back = parse_cpim(wire)
    assert back == msg
    assert back.sender == CpimAddress("sip:alice@example.com", 'Alice "Al" \\ Smith')
    assert [a.uri for a in back.recipients] == [
        "sip:room@conference.example.com",
        "sip:bob@example.com",
    ]
    assert back.cc == (CpimAddress("sip:carol@example.com"),)
    assert back.datetime == when
    assert back.subjects == [("line one\nline two", None)]
    assert back.value("Message-ID", IMDN_URN) == "34jk324j"


def test_namespace_prefix_is_the_peers_choice() -> None:
    data = (
        b"From: <sip:a@example.com>\r\nNS: x <urn:ietf:params:imdn>\r\n"
        b"x.Message-ID: abc\r\n\r\nContent-Type: text/plain\r\n\r\nhi"
    )
    assert parse_cpim(data).value("Message-ID", IMDN_URN) == "abc"


# ---- what real clients send (issue 8, item 5) ---------------------------------------------

SIPSIMPLE_CPIM = (
    b"From: Alice <sip:alice@example.com>\r\n"
    b"To: <sip:room@conference.example.com>\r\n"
    b"DateTime: 2026-12-02T19:00:00.123456+01:00\r\n"
    b"\r\n"
    b"MIME-Version: 1.0\n"
    b'Content-Type: text/plain; charset="utf8"\n'
    b"\n"
    b"hello"
)
STRICT_CPIM = (
    b"From: Alice <sip:alice@example.com>\r\n"
    b"To: <sip:room@conference.example.com>\r\n"
    b"DateTime: 2026-12-02T19:00:00.123456+01:00\r\n"
    b"\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: text/plain; charset="utf8"\r\n'
    b"\r\n"
    b"hello"
)


def test_sipsimple_vector_body_is_the_sipsimple_form() -> None:
    chunk = parse_chunk((DATA / "cpim_sipsimple_lf.msrp").read_bytes())
    assert chunk.body == SIPSIMPLE_CPIM


def test_sipsimple_bare_lf_mime_part_is_accepted() -> None:
    msg = parse_cpim(SIPSIMPLE_CPIM)
    assert msg.sender == CpimAddress("sip:alice@example.com", "Alice")
    assert msg.recipients == (CpimAddress("sip:room@conference.example.com"),)
    assert msg.datetime == datetime(2026, 12, 2, 18, 0, 0, 123456, tzinfo=UTC)
    assert msg.content_headers == (
        ("MIME-Version", "1.0"),
        ("Content-Type", 'text/plain; charset="utf8"'),
    )
    assert msg.content_type == 'text/plain; charset="utf8"'
    assert msg.body == b"hello"
    check_content_type(msg, ["text/plain"])


def test_sipsimple_form_reserializes_strictly() -> None:
    assert parse_cpim(SIPSIMPLE_CPIM).serialize() == STRICT_CPIM
    assert parse_cpim(STRICT_CPIM).serialize() == STRICT_CPIM
    assert parse_cpim(STRICT_CPIM) == parse_cpim(SIPSIMPLE_CPIM)


def test_bare_lf_in_the_cpim_block_too_and_mixed_line_ends() -> None:
    all_lf = STRICT_CPIM.replace(b"\r\n", b"\n")
    mixed = b"From: Alice <sip:alice@example.com>\nTo: <sip:room@conference.example.com>\r\n"
    mixed += b"DateTime: 2026-12-02T19:00:00.123456+01:00\n\r\n"
    mixed += b'MIME-Version: 1.0\r\nContent-Type: text/plain; charset="utf8"\n\r\nhello'
    for data in (all_lf, mixed):
        assert parse_cpim(data) == parse_cpim(STRICT_CPIM)
        assert parse_cpim(data).serialize() == STRICT_CPIM


def test_body_is_kept_byte_exact_whatever_the_header_line_ends() -> None:
    body = b"line\none\r\nline two\n\n\r\n\r\n\x00\xff end\n"
    for sep in (b"\n", b"\r\n"):
        data = b"From: <sip:a@x>" + sep + sep + b"Content-Type: text/plain" + sep + sep + body
        assert parse_cpim(data).body == body


def test_folded_mime_header_is_unfolded() -> None:
    data = (
        b"From: <sip:a@x>\r\n\r\n"
        b"Content-Type: application/vnd.openxmlformats-officedocument.wordprocessingml.document;\n"
        b'\tname="report.docx"\n\nPK'
    )
    msg = parse_cpim(data)
    assert msg.content_type == (
        'application/vnd.openxmlformats-officedocument.wordprocessingml.document;\tname="report.docx"'
    )
    assert msg.body == b"PK"
    assert b"\r\n\t" not in msg.serialize()  # we never fold


@given(
    st.text(max_size=30),
    st.binary(max_size=80),
    st.lists(st.sampled_from([b"\r\n", b"\n"]), min_size=8, max_size=8),
)
@settings(max_examples=200, deadline=None)
def test_any_line_end_mix_parses_like_the_strict_form(
    name: str, body: bytes, ends: list[bytes]
) -> None:
    strict = CpimMessage.build(
        sender=CpimAddress("sip:a@example.com", name or None),
        recipients=[CpimAddress("sip:room@example.com")],
        namespaces={"imdn": IMDN_URN},
        extra=[("imdn.Message-ID", "m1")],
        content_type="text/plain",
        content_headers=[("Content-Transfer-Encoding", "8bit")],
        body=body,
    ).serialize()
    # Rewrite every header line end (not the body's) with the chosen mix.
    lines = (strict[: len(strict) - len(body)]).split(b"\r\n")[:-1]
    assert len(lines) == 8  # 4 CPIM headers, blank, 2 MIME headers, blank
    relaxed = b"".join(line + end for line, end in zip(lines, ends, strict=True)) + body
    assert parse_cpim(relaxed) == parse_cpim(strict)
    assert parse_cpim(relaxed).serialize() == strict


@given(st.text(max_size=40), st.text(max_size=60))
@settings(max_examples=100, deadline=None)
def test_cpim_round_trip_property(name: str, subject: str) -> None:
    msg = CpimMessage.build(
        sender=CpimAddress("sip:a@example.com", name or None),
        subject=subject,
        content_type="text/plain",
        body=b"x",
    )
    back = parse_cpim(msg.serialize())
    assert back.sender == CpimAddress("sip:a@example.com", name or None)
    assert back.subjects == [(subject, None)]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\r\nContent-Type: text/plain\r\n\r\nx",
        b"From: <sip:a@x>\r\n\r\nx",  # no inner headers / Content-Type
        b"From: <sip:a@x>\r\n\r\nContent-Length: 1\r\n\r\nx",
        b"From <sip:a@x>\r\n\r\nContent-Type: text/plain\r\n\r\nx",
        b"From: <sip:a@x>\r\nContent-Type: text/plain\r\n",
        b"From: \xff\r\n\r\nContent-Type: text/plain\r\n\r\nx",
        b"X: " + b"a" * 20000 + b"\r\n\r\nContent-Type: text/plain\r\n\r\nx",
        b"X: " + b"a" * 20000 + b"\n\nContent-Type: text/plain\n\nx",
        b"\nContent-Type: text/plain\n\nx",  # LF forms: no message headers
        b"From: <sip:a@x>\nContent-Type: text/plain\n",  # no blank line
        b"From: <sip:a@x>\n\nContent-Type: text/plain\n",  # no blank line after the MIME part
        b"From: <sip:a@x>\n\nMIME-Version: 1.0\n\nx",  # no Content-Type
        b"From: <sip:a@x>\rTo: <sip:b@x>\r\n\r\nContent-Type: text/plain\r\n\r\nx",  # bare CR
        b"From: <sip:a@x>\r\n\r\nContent-Type: text/plain\rX: y\n\nx",
        b"From: <sip:a@x>\r\n\r\n\tfolded: first\n\nx",  # a fold with nothing to continue
        b" From: <sip:a@x>\r\n\r\nContent-Type: text/plain\r\n\r\nx",  # no folding in CPIM
    ],
)
def test_bad_cpim(data: bytes) -> None:
    with pytest.raises(CpimError) as info:
        parse_cpim(data)
    assert info.value.status == 400


def test_bad_typed_values() -> None:
    msg = parse_cpim(b"From: nobody\r\nDateTime: yesterday\r\n\r\nContent-Type: a/b\r\n\r\n")
    with pytest.raises(CpimError):
        _ = msg.sender
    with pytest.raises(CpimError):
        _ = msg.datetime
    with pytest.raises(CpimError):
        parse_address('"unterminated <sip:a@b>')


def test_content_type_check_is_415() -> None:
    msg = CpimMessage.build(content_type="image/png", body=b"")
    check_content_type(msg, ["image/*"])
    with pytest.raises(CpimError) as info:
        check_content_type(msg, ["text/plain", "application/im-iscomposing+xml"])
    assert info.value.status == 415


# ---- is-composing ----------------------------------------------------------------------------

RFC3994_ACTIVE = b"""<?xml version="1.0" encoding="UTF-8"?>
<isComposing xmlns="urn:ietf:params:xml:ns:im-iscomposing"
  xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
  xsi:schemaLocation="urn:ietf:params:xml:ns:im-composing iscomposing.xsd">
  <state>active</state>
  <contenttype>text/plain</contenttype>
  <refresh>90</refresh>
</isComposing>
"""


def test_iscomposing_rfc_example() -> None:
    assert parse_iscomposing(RFC3994_ACTIVE) == IsComposing(
        ComposingState.ACTIVE, None, "text/plain", 90
    )


def test_iscomposing_round_trip() -> None:
    idle = IsComposing(
        ComposingState.IDLE,
        last_active=datetime(2003, 1, 27, 10, 43, tzinfo=UTC),
        content_type="audio",
    )
    wire = idle.serialize()
    assert wire.startswith(b"<?xml version='1.0' encoding='UTF-8'?>\n<isComposing xmlns=")
    assert parse_iscomposing(wire) == idle


@pytest.mark.parametrize(
    "data",
    [
        b"<isComposing xmlns='urn:ietf:params:xml:ns:im-iscomposing'><state>typing</state>"
        b"</isComposing>",
        b"<isComposing xmlns='urn:ietf:params:xml:ns:im-iscomposing'><state>active</state>"
        b"<refresh>0</refresh></isComposing>",
        b"<isComposing><state>active</state></isComposing>",  # wrong namespace
        b"<isComposing xmlns='urn:ietf:params:xml:ns:im-iscomposing'><state>active",
        b"\xff\xfe<\x00x\x00/\x00>\x00",  # UTF-16
        b"<isComposing xmlns='urn:ietf:params:xml:ns:im-iscomposing'><state>active</state>"
        + b"<!-- pad -->" * 2000
        + b"</isComposing>",  # over the size cap
    ],
)
def test_iscomposing_rejects(data: bytes) -> None:
    with pytest.raises(IsComposingError):
        parse_iscomposing(data)


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<isComposing xmlns="urn:ietf:params:xml:ns:im-iscomposing"><state>&lol4;</state></isComposing>
"""

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<imdn xmlns="urn:ietf:params:xml:ns:imdn"><message-id>&x;</message-id></imdn>
"""


def test_entities_refused() -> None:
    with pytest.raises(IsComposingError, match="DTD"):
        parse_iscomposing(BILLION_LAUGHS)
    with pytest.raises(ImdnError, match="DTD"):
        parse_imdn(XXE)


# ---- IMDN ------------------------------------------------------------------------------------

RFC5438_DELIVERED = b"""<?xml version="1.0" encoding="UTF-8"?>
<imdn xmlns="urn:ietf:params:xml:ns:imdn">
  <message-id>34jk324j</message-id>
  <datetime>2008-04-04T12:16:49-05:00</datetime>
  <recipient-uri>im:bob@example.com</recipient-uri>
  <original-recipient-uri>im:bob@example.com</original-recipient-uri>
  <delivery-notification>
    <status>
      <delivered/>
    </status>
  </delivery-notification>
</imdn>
"""


def test_imdn_rfc_example() -> None:
    note = parse_imdn(RFC5438_DELIVERED)
    assert (note.message_id, note.kind, note.status) == ("34jk324j", ImdnKind.DELIVERY, "delivered")
    assert note.recipient_uri == "im:bob@example.com"
    assert note.datetime.utcoffset() == timedelta(hours=-5)


def test_imdn_displayed_round_trip() -> None:
    note = ImdnNotification(
        "34jk324j", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC), ImdnKind.DISPLAY, "displayed"
    )
    assert parse_imdn(note.serialize()) == note
    with pytest.raises(ValueError):
        ImdnNotification("x", note.datetime, ImdnKind.DISPLAY, "delivered").serialize()


@pytest.mark.parametrize(
    "data",
    [
        b"<imdn xmlns='urn:ietf:params:xml:ns:imdn'><datetime>2008-04-04T12:16:49Z</datetime>"
        b"<display-notification><status><displayed/></status></display-notification></imdn>",
        b"<imdn xmlns='urn:ietf:params:xml:ns:imdn'><message-id>a</message-id>"
        b"<datetime>2008-04-04T12:16:49Z</datetime><display-notification><status><delivered/>"
        b"</status></display-notification></imdn>",
        b"<imdn xmlns='urn:ietf:params:xml:ns:imdn'><message-id>a</message-id>"
        b"<datetime>2008-04-04T12:16:49Z</datetime></imdn>",
        b"<other/>",
    ],
)
def test_imdn_rejects(data: bytes) -> None:
    with pytest.raises(ImdnError):
        parse_imdn(data)
