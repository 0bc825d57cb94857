"""RFC 5547 SDP attributes: the RFC's own examples, round trips, and strict rejection (488)."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from control.msrp.fileselector import (
    HASH_SHA1,
    FileDate,
    FileRange,
    FileSelector,
    FileSelectorError,
    file_transfer_attributes,
    format_file_date,
    format_file_range,
    format_file_selector,
    parse_file_date,
    parse_file_range,
    parse_file_selector,
    parse_file_transfer,
    parse_token,
)
from control.sip import sdp

# RFC 5547 §9.1, the offer of Alice's picture.
RFC_SELECTOR = (
    'name:"My cool picture.jpg" type:image/jpeg size:32349 '
    "hash:sha-1:72:24:5F:E8:65:3D:DA:F3:71:36:2F:86:D4:71:91:3E:E4:A2:CE:2E"
)
RFC_SHA1 = bytes.fromhex("72245FE8653DDAF371362F86D471913EE4A2CE2E")

RFC_OFFER = (
    "v=0\r\n"
    "o=alice 2890844526 2890844526 IN IP4 alicepc.example.com\r\n"
    "s=-\r\n"
    "c=IN IP4 alicepc.example.com\r\n"
    "t=0 0\r\n"
    "m=message 7654 TCP/MSRP *\r\n"
    "i=This is my latest picture\r\n"
    "a=sendonly\r\n"
    "a=accept-types:message/cpim\r\n"
    "a=accept-wrapped-types:*\r\n"
    "a=path:msrp://alicepc.example.com:7654/jshA7we;tcp\r\n"
    f"a=file-selector:{RFC_SELECTOR}\r\n"
    "a=file-transfer-id:vBnG916bdberum2fFEABR1FR3ExZMUrd\r\n"
    "a=file-disposition:render\r\n"
    'a=file-date:creation:"Mon, 15 May 2006 15:01:31 +0300"\r\n'
    "a=file-icon:cid:id2@alicepc.example.com\r\n"
    "a=file-range:1-32349\r\n"
)


def test_rfc_example_selector() -> None:
    selector = parse_file_selector(RFC_SELECTOR)
    assert selector.name == "My cool picture.jpg"
    assert selector.type == "image/jpeg"
    assert selector.size == 32349
    assert selector.sha1 == RFC_SHA1
    assert selector.sha1_hex == RFC_SHA1.hex()
    assert format_file_selector(selector) == RFC_SELECTOR


def test_rfc_example_offer() -> None:
    media = sdp.parse(RFC_OFFER).media[0]
    transfer = parse_file_transfer(media)
    assert transfer is not None
    assert transfer.selector.sha1 == RFC_SHA1
    assert transfer.transfer_id == "vBnG916bdberum2fFEABR1FR3ExZMUrd"
    assert transfer.disposition == "render"
    assert transfer.date is not None and transfer.date.creation is not None
    assert transfer.date.creation.utcoffset() == dt.timedelta(hours=3)
    assert transfer.date.creation.astimezone(dt.UTC).hour == 12
    assert transfer.range == FileRange(1, 32349)
    assert transfer.icon == "cid:id2@alicepc.example.com"


def test_chat_line_is_no_transfer() -> None:
    media = sdp.parse(RFC_OFFER.replace("a=file-selector", "a=x-selector")).media[0]
    assert parse_file_transfer(media) is None


def test_pull_selector_by_hash_only() -> None:
    selector = parse_file_selector(f"hash:sha-1:{RFC_SHA1.hex(':').upper()}")
    assert selector.name is None and selector.size is None and selector.sha1 == RFC_SHA1
    assert selector.matches("anything", "text/plain", 5, RFC_SHA1)
    assert not selector.matches("anything", "text/plain", 5, bytes(20))


def test_matches_every_given_part() -> None:
    selector = FileSelector("a.txt", "text/plain; charset=utf-8", 3, ((HASH_SHA1, RFC_SHA1),))
    assert selector.matches("a.txt", "TEXT/plain", 3, RFC_SHA1)
    assert not selector.matches("b.txt", "text/plain", 3, RFC_SHA1)
    assert not selector.matches("a.txt", "image/png", 3, RFC_SHA1)
    assert not selector.matches("a.txt", "text/plain", 4, RFC_SHA1)


def test_empty_attribute_and_lower_case_hash() -> None:
    assert parse_file_selector(None).is_empty
    assert parse_file_selector("").is_empty
    lower = parse_file_selector(f"hash:SHA-1:{RFC_SHA1.hex(':')}")
    assert lower.sha1 == RFC_SHA1


def test_name_percent_encoding_round_trip() -> None:
    name = 'we said "100%"\r\nok ünïcode.txt'
    text = format_file_selector(FileSelector(name=name))
    assert '"100%"' not in text and "\r" not in text and "%25" in text and "%22" in text
    assert parse_file_selector(text).name == name


def test_type_with_parameters() -> None:
    selector = parse_file_selector('type:text/plain;charset="UTF-8" size:10')
    assert selector.type == 'text/plain;charset="UTF-8"' and selector.size == 10
    assert format_file_selector(selector) == 'type:text/plain;charset="UTF-8" size:10'


@pytest.mark.parametrize(
    "text",
    [
        "name:unquoted.txt",
        'name:"open',
        'name:""',
        'name:"bad%zz"',
        'name:"bad%"',
        'name:"%FF%FE"',  # not UTF-8
        "size:-1",
        "size:01",
        "size:1e3",
        "size:99999999999999999999",
        "size:",
        "type:image",
        "type:/jpeg",
        "type:text/plain;charset=UTF-8",
        "hash:sha-1",
        "hash:sha-1:zz",
        "hash:sha-1:72:24",  # a SHA-1 is 20 bytes
        "hash:sha-1:7224",
        "hash:sha-1:72:24:5F:E8:65:3D:DA:F3:71:36:2F:86:D4:71:91:3E:E4:A2:CE:2E:",
        "colour:red",
        "size:1 size:2",
        'name:"a" name:"b"',
        'name:"a"size:1',
        "size",
        "x" * 9000,
    ],
)
def test_bad_selectors_are_488(text: str) -> None:
    with pytest.raises(FileSelectorError) as info:
        parse_file_selector(text)
    assert info.value.status == 488


def test_two_hashes_of_one_algorithm_are_refused() -> None:
    value = f"hash:sha-1:{RFC_SHA1.hex(':')} hash:sha-1:{RFC_SHA1.hex(':')}"
    with pytest.raises(FileSelectorError):
        parse_file_selector(value)


def test_file_range() -> None:
    assert parse_file_range("1-*") == FileRange(1, None)
    assert parse_file_range("1001-2000") == FileRange(1001, 2000)
    rng = FileRange(1001, 2000)
    assert rng.offset == 1000 and rng.length(5000) == 1000 and rng.length(1500) == 500
    assert FileRange(1, None).length(7) == 7
    for value in ("1-*", "5-5", "1001-2000"):
        assert format_file_range(parse_file_range(value)) == value
    for bad in ("0-10", "10-5", "1", "-5", "a-b", "1-", "1-**", "01-5"):
        with pytest.raises(FileSelectorError):
            parse_file_range(bad)


def test_file_date() -> None:
    date = parse_file_date(
        'creation:"Mon, 15 May 2006 15:01:31 +0300" modification:"Tue, 16 May 2006 08:00:00 GMT"'
    )
    assert date.creation is not None and date.modification is not None and date.read is None
    assert parse_file_date(format_file_date(date)) == date
    naive = FileDate(read=dt.datetime(2020, 1, 2, 3, 4, 5))
    assert format_file_date(naive) == 'read:"Thu, 02 Jan 2020 03:04:05 +0000"'
    for bad in (
        "",
        "creation:Mon",
        'creation:"not a date"',
        'birth:"Mon, 15 May 2006 15:01:31 +0300"',
        'read:"Mon, 15 May 2006 15:01:31 +0300" read:"Mon, 15 May 2006 15:01:31 +0300"',
    ):
        with pytest.raises(FileSelectorError):
            parse_file_date(bad)


def test_tokens() -> None:
    assert parse_token("attachment", "file-disposition") == "attachment"
    for bad in ("", "two words", 'quo"te', "semi;colon"):
        with pytest.raises(FileSelectorError):
            parse_token(bad, "file-transfer-id")


def test_bad_attribute_in_offer_is_488() -> None:
    broken = RFC_OFFER.replace("a=file-range:1-32349", "a=file-range:9-1")
    with pytest.raises(FileSelectorError) as info:
        parse_file_transfer(sdp.parse(broken).media[0])
    assert info.value.status == 488
    icon = RFC_OFFER.replace("cid:id2", "http://evil")
    with pytest.raises(FileSelectorError):
        parse_file_transfer(sdp.parse(icon).media[0])
    doubled = RFC_OFFER.replace("a=file-transfer-id", f"a=file-selector:{RFC_SELECTOR}\r\na=x")
    with pytest.raises(FileSelectorError):
        parse_file_transfer(sdp.parse(doubled).media[0])


def test_attributes_for_an_answer_parse_back() -> None:
    selector = FileSelector("r.bin", "application/octet-stream", 42, ((HASH_SHA1, RFC_SHA1),))
    attrs = file_transfer_attributes(
        selector, transfer_id="abc123", disposition="attachment", file_range=FileRange(1, None)
    )
    media = sdp.MediaDescription("message", 9, None, "TCP/TLS/MSRP", ["*"], attributes=attrs)
    transfer = parse_file_transfer(media)
    assert transfer is not None
    assert transfer.selector == selector
    assert transfer.transfer_id == "abc123" and transfer.disposition == "attachment"
    assert transfer.range == FileRange(1, None)


names = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"),
    min_size=1,
    max_size=60,
)


@given(
    name=st.none() | names,
    size=st.none() | st.integers(0, 10**18),
    digest=st.none() | st.binary(min_size=20, max_size=20),
)
def test_selector_round_trip(name: str | None, size: int | None, digest: bytes | None) -> None:
    selector = FileSelector(
        name, "application/octet-stream", size, ((HASH_SHA1, digest),) if digest else ()
    )
    assert parse_file_selector(format_file_selector(selector)) == selector


@given(st.text(max_size=200))
def test_any_text_parses_or_is_488(text: str) -> None:
    try:
        parse_file_selector(text)
    except FileSelectorError as exc:
        assert exc.status == 488


def test_a_percent_encoded_nul_is_a_name_like_any_other() -> None:
    """RFC 5547 §10 allows ``%00``: the name is metadata, kept as sent (never a path) and
    cleaned where it is shown, so it is read, and written back encoded."""
    selector = parse_file_selector('name:"minutes%00.pdf" size:3')
    assert selector.name == "minutes\x00.pdf"
    assert format_file_selector(selector) == 'name:"minutes%00.pdf" size:3'
