"""The Event Socket wire format (control/media/freeswitch/esl.py), sans-IO.

Vectors are what mod_event_socket 1.10 writes (see tests/peers/eslfake.py for where each
byte comes from); each is fed whole, one byte at a time and with the next message behind it,
as the framing must not care how TCP splits it.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from control.media.freeswitch.esl import (
    EslError,
    EslParser,
    api_response_bytes,
    command_bytes,
    command_reply_bytes,
    event_plain_bytes,
    parse_event_plain,
    url_encode,
)

AUTH = b"Content-Type: auth/request\n\n"
ACCEPTED = b"Content-Type: command/reply\nReply-Text: +OK accepted\n\n"
LIST = b"Content-Type: api/response\nContent-Length: 23\n\nOK kicked 3\nOK mute 4\n\n"
EVENT = (
    b"Content-Length: 165\nContent-Type: text/event-plain\n\n"
    b"Event-Name: CUSTOM\n"
    b"Event-Subclass: conference%3A%3Amaintenance\n"
    b"Conference-Name: chorus-r1\n"
    b"Caller-Caller-ID-Name: Alice%20%40%20Home\n"
    b"Member-ID: 7\n"
    b"Action: add-member\n\n"
)


def messages(data: bytes, step: int | None = None) -> list[tuple[dict[str, str], bytes]]:
    parser = EslParser()
    out = []
    chunks = [data] if step is None else [data[i : i + step] for i in range(0, len(data), step)]
    for chunk in chunks:
        parser.feed(chunk)
        while (message := parser.next_message()) is not None:
            out.append((dict(message.headers), message.body))
    return out


def test_the_vectors_frame_exactly() -> None:
    assert len(EVENT.split(b"\n\n", 1)[1]) == 165
    whole = AUTH + ACCEPTED + LIST + EVENT
    expected = messages(whole)
    assert [h["Content-Type"] for h, _ in expected] == [
        "auth/request",
        "command/reply",
        "api/response",
        "text/event-plain",
    ]
    assert expected[1][0]["Reply-Text"] == "+OK accepted"
    assert expected[2][1] == b"OK kicked 3\nOK mute 4\n\n"
    assert messages(whole, 1) == expected
    assert messages(whole, 7) == expected


def test_a_half_written_event_waits_for_its_rest() -> None:
    parser = EslParser()
    parser.feed(EVENT[:70])
    assert parser.next_message() is None
    parser.feed(EVENT[70:-10])
    assert parser.next_message() is None
    parser.feed(EVENT[-10:])
    message = parser.next_message()
    assert message is not None and message.content_type == "text/event-plain"
    event = parse_event_plain(message.body)
    assert event.subclass == "conference::maintenance"
    assert event.get("Caller-Caller-ID-Name") == "Alice @ Home"
    assert event.get("Member-ID") == "7" and event.get("Action") == "add-member"


def test_a_bad_content_length_is_a_framing_error() -> None:
    parser = EslParser()
    parser.feed(b"Content-Type: api/response\nContent-Length: ten\n\n")
    with pytest.raises(EslError):
        parser.next_message()
    parser = EslParser(max_body_bytes=10)
    parser.feed(b"Content-Type: api/response\nContent-Length: 11\n\n")
    with pytest.raises(EslError):
        parser.next_message()


def test_serialisers_write_what_freeswitch_writes() -> None:
    assert command_reply_bytes("+OK accepted") == ACCEPTED
    assert api_response_bytes("OK kicked 3\nOK mute 4\n\n") == LIST
    assert command_bytes("api conference chorus-r1 mute 7") == (
        b"api conference chorus-r1 mute 7\n\n"
    )
    headers = [
        ("Event-Name", "CUSTOM"),
        ("Event-Subclass", "conference::maintenance"),
        ("Conference-Name", "chorus-r1"),
        ("Caller-Caller-ID-Name", "Alice @ Home"),
        ("Member-ID", "7"),
        ("Action", "add-member"),
    ]
    assert event_plain_bytes(headers) == EVENT
    with pytest.raises(ValueError):
        command_bytes("api a\n\nexit")


def test_url_encoding_is_switch_url_encode() -> None:
    # SWITCH_URL_UNSAFE is encoded; '/', ',', '-', '.', '!' are not; %XX is kept.
    assert url_encode("sofia/chorus/a@127.0.0.1:5080") == "sofia/chorus/a%40127.0.0.1%3A5080"
    assert url_encode("a b+c;d") == "a%20b%2Bc%3Bd"
    assert url_encode("x%20y") == "x%20y"
    assert url_encode("100%") == "100%25"
    assert url_encode("é\n") == "%C3%A9%0A"


@given(st.dictionaries(st.from_regex(r"[A-Za-z][A-Za-z-]{0,12}", fullmatch=True), st.text()))
def test_any_event_survives_the_round_trip(headers: dict[str, str]) -> None:
    headers = {k: v for k, v in headers.items() if k != "Content-Length"}
    data = event_plain_bytes(list(headers.items()))
    (found,) = messages(data, 3)
    event = parse_event_plain(found[1])
    assert {k: v for k, v in event.headers.items()} == {
        k: (v if v else "_undef_") for k, v in headers.items()
    }


@given(
    st.lists(st.integers(min_value=1, max_value=len(AUTH + ACCEPTED + LIST + EVENT)), max_size=8)
)
def test_any_split_of_the_stream_gives_the_same_messages(cuts: list[int]) -> None:
    data = AUTH + ACCEPTED + LIST + EVENT
    points = sorted(set(cuts))
    parser = EslParser()
    out = []
    for start, end in zip([0, *points], [*points, len(data)], strict=True):
        parser.feed(data[start:end])
        while (message := parser.next_message()) is not None:
            out.append((dict(message.headers), message.body))
    assert out == messages(data)


@given(st.binary(max_size=300))
def test_any_bytes_give_messages_or_an_esl_error(data: bytes) -> None:
    parser = EslParser(max_header_bytes=200, max_body_bytes=100)
    parser.feed(data)
    try:
        while parser.next_message() is not None:
            pass
    except EslError:
        pass
