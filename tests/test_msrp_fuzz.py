"""hypothesis properties of the MSRP core: never an exception out of receive_data, and any
split of a stream yields the same events."""

from __future__ import annotations

import hashlib
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from control.msrp import ChunkEnded, ChunkParser, MsrpConnection, MsrpSession, parse_uri
from control.msrp.events import Event

DATA = Path(__file__).parent / "data" / "msrp"
ALICE = parse_uri("msrp://alicepc.example.com:7777/iau39soe2843z;tcp")
BOB = parse_uri("msrp://bob.example.com:8888/9di4eae923wzd;tcp")
VECTORS = [p.read_bytes() for p in sorted(DATA.glob("*.msrp"))]


class FakeRandom:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self, n: int) -> bytes:
        self.count += 1
        return hashlib.sha256(self.count.to_bytes(4, "big")).digest()[:n]


def bob() -> MsrpConnection:
    conn = MsrpConnection(random=FakeRandom(), body_piece_size=64)
    conn.add_session(MsrpSession(BOB, [ALICE]))
    return conn


def run(pieces: list[bytes]) -> tuple[list[Event], bytes]:
    conn = bob()
    for piece in pieces:
        conn.receive_data(piece, now=0.0)
    return conn.events(), conn.data_to_send()


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


# Streams built from valid chunks, mutated chunks and MSRP-ish noise.
_noise = st.sampled_from(
    [b"\r\n", b"-------", b"MSRP ", b"$", b"+", b"#", b"SEND", b"200 OK", b"abcd1234", b":"]
)
_mutated = st.builds(
    lambda v, i, b: v[: i % len(v)] + b + v[i % len(v) + 1 :],
    st.sampled_from(VECTORS),
    st.integers(0, 10_000),
    st.binary(max_size=3),
)
_streamish = st.lists(
    st.one_of(st.sampled_from(VECTORS), _mutated, _noise, st.binary(max_size=20)), max_size=8
).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=400), _streamish), st.lists(st.integers(0, 10_000)))
def test_any_bytes_never_raise(data: bytes, cuts: list[int]) -> None:
    run(split(data, cuts))
    parser = ChunkParser(body_piece_size=7)
    for piece in split(data, cuts):
        parser.feed(piece)


@settings(max_examples=200, deadline=None)
@given(_streamish, st.lists(st.integers(0, 10_000), max_size=30))
def test_any_split_gives_the_same_events(data: bytes, cuts: list[int]) -> None:
    assert run(split(data, cuts)) == run([data])


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.sampled_from(VECTORS), min_size=1, max_size=6),
    st.lists(st.integers(0, 10_000), max_size=30),
)
def test_valid_streams_split_anywhere(vectors: list[bytes], cuts: list[int]) -> None:
    data = b"".join(vectors)
    whole = ChunkParser(body_piece_size=5).feed(data)
    assert sum(isinstance(e, ChunkEnded) for e in whole) == len(vectors)  # every chunk framed
    parser = ChunkParser(body_piece_size=5)
    pieces = []
    for piece in split(data, cuts):
        pieces += parser.feed(piece)
    assert pieces == whole


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=3000), st.integers(1, 4000))
def test_send_then_receive_round_trip(body: bytes, chunk_size: int) -> None:
    alice = MsrpConnection(random=FakeRandom())
    wire = alice.send_message(
        [BOB], [ALICE], "prop0001", "application/octet-stream", body, now=0.0, chunk_size=chunk_size
    )
    events, _ = run([wire])
    assert len(events) == 1 and getattr(events[0], "body", None) == body
