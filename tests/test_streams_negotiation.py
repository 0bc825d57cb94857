"""The one negotiation routine (control/streams/negotiation.py) against RFC 3264 §6–8, with
streams of a test kind: what is kept, created, replaced, removed and closed when."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from control.sip import sdp
from control.sip.errors import SipError
from control.streams import MediaKind, Stream, StreamRequest, negotiate

AUDIO = "m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
CHAT = (
    "m=message {port} TCP/TLS/MSRP *\r\n"
    "a=path:msrps://127.0.0.1:{port}/{sid};tcp\r\na=accept-types:message/cpim\r\n"
)
VIDEO = "m=video {port} RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\n"


def offer(*lines: str) -> sdp.SessionDescription:
    head = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    return sdp.parse(head + "".join(lines))


def audio(port: int = 4000) -> str:
    return AUDIO.format(port=port)


def chat(sid: str = "s1", port: int = 2855) -> str:
    return CHAT.format(port=port, sid=sid)


def video(port: int = 5000) -> str:
    return VIDEO.format(port=port)


class FakeStream:
    """A stream that fits a re-offer of the same m-line text (an MSRP stream compares its
    a=path the same way), and records its closing."""

    def __init__(self, kind: MediaKind, index: int, media: sdp.MediaDescription) -> None:
        self.kind = kind
        self.index = index
        self.key = media.get("path") or media.proto
        self.accept = sdp.Accept(9, ["*"])
        self.closed = False
        self.updates = 0

    def fits(self, offer: sdp.SessionDescription, index: int) -> bool:
        media = offer.media[index]
        return not self.closed and (media.get("path") or media.proto) == self.key

    async def update(self, offer: sdp.SessionDescription, index: int) -> sdp.Accept | None:
        self.updates += 1
        return self.accept

    async def close(self) -> None:
        self.closed = True


class App:
    """An answerer: audio once, chat as often as allowed; remembers what it made."""

    def __init__(self, *, several_chats: bool = True, fail_at: int | None = None) -> None:
        self.several_chats = several_chats
        self.fail_at = fail_at
        self.made: list[FakeStream] = []

    async def __call__(self, request: StreamRequest) -> Stream | None:
        if request.index == self.fail_at:
            raise SipError(503, "no resources")
        if request.kind is MediaKind.AUDIO and request.has_other(MediaKind.AUDIO):
            return None
        lone_chat = request.kind is MediaKind.CHAT and not self.several_chats
        if lone_chat and request.has_other(MediaKind.CHAT):
            return None
        stream = FakeStream(request.kind, request.index, request.media)
        self.made.append(stream)
        return stream


def ports(decisions: Sequence[sdp.Accept | sdp.Reject]) -> list[bool]:
    return [isinstance(d, sdp.Accept) for d in decisions]


async def test_initial_offer_audio_and_chat_creates_one_stream_per_m_line() -> None:
    app = App()
    result = await negotiate(offer(audio(), chat()), {}, app)
    assert ports(result.decisions) == [True, True]
    assert [s.kind for s in result.created] == [MediaKind.AUDIO, MediaKind.CHAT]
    assert result.streams == {0: app.made[0], 1: app.made[1]}
    assert result.kept == result.removed == result.replaced == []


async def test_re_offer_keeping_both_keeps_the_same_objects() -> None:
    app = App()
    first = await negotiate(offer(audio(), chat()), {}, app)
    again = await negotiate(offer(audio(4002), chat()), first.streams, app)
    assert again.streams[0] is first.streams[0] and again.streams[1] is first.streams[1]
    assert again.kept == [first.streams[0], first.streams[1]] and again.created == []
    assert len(app.made) == 2 and all(s.updates == 1 for s in app.made)
    await again.commit()
    assert not any(s.closed for s in app.made)


async def test_audio_set_to_port_0_is_removed_and_chat_kept() -> None:
    app = App()
    first = await negotiate(offer(audio(), chat()), {}, app)
    again = await negotiate(offer(audio(0), chat()), first.streams, app)
    assert ports(again.decisions) == [False, True]
    assert again.removed == [first.streams[0]] and again.kept == [first.streams[1]]
    assert list(again.streams) == [1]
    assert not app.made[0].closed  # closed only once the answer is committed
    await again.commit()
    assert app.made[0].closed and not app.made[1].closed


async def test_adding_chat_and_removing_audio_in_one_offer() -> None:
    app = App()
    first = await negotiate(offer(audio()), {}, app)
    again = await negotiate(offer(audio(0), chat()), first.streams, app)
    assert ports(again.decisions) == [False, True]
    assert [s.kind for s in again.created] == [MediaKind.CHAT]
    assert again.removed == [first.streams[0]]
    await again.commit()
    assert app.made[0].closed and not app.made[1].closed


async def test_two_chat_m_lines_when_the_app_allows_several() -> None:
    app = App(several_chats=True)
    result = await negotiate(offer(chat("a"), chat("b")), {}, app)
    assert ports(result.decisions) == [True, True]
    assert len(result.of_kind(MediaKind.CHAT)) == 2


async def test_a_second_chat_refused_when_the_app_allows_one() -> None:
    result = await negotiate(offer(chat("a"), chat("b")), {}, App(several_chats=False))
    assert ports(result.decisions) == [True, False]


async def test_second_audio_m_line_refused_in_place() -> None:
    result = await negotiate(offer(audio(), audio(4002), chat()), {}, App())
    assert ports(result.decisions) == [True, False, True]


async def test_a_changed_chat_m_line_replaces_its_stream() -> None:
    app = App()
    first = await negotiate(offer(chat("a")), {}, app)
    again = await negotiate(offer(chat("new-path")), first.streams, app)
    assert again.replaced == [first.streams[0]] and again.created == [again.streams[0]]
    assert again.streams[0] is not first.streams[0]
    await again.commit()
    assert app.made[0].closed and not app.made[1].closed


async def test_fewer_m_lines_is_488_and_touches_nothing() -> None:
    app = App()
    first = await negotiate(offer(audio(), chat()), {}, app)
    with pytest.raises(SipError) as raised:
        await negotiate(offer(audio()), first.streams, app)
    assert raised.value.status == 488
    assert len(app.made) == 2 and not any(s.closed or s.updates for s in app.made)


async def test_an_unknown_kind_is_rejected_at_port_0_in_place() -> None:
    app = App()
    result = await negotiate(offer(audio(), video(), chat()), {}, app)
    assert ports(result.decisions) == [True, False, True]
    assert sorted(result.streams) == [0, 2]
    answer = sdp.SdpSession(sess_id=1, address="127.0.0.1").answer(
        offer(audio(), video(), chat()), result.decisions
    )
    assert [m.port for m in answer.media][1] == 0 and len(answer.media) == 3


async def test_an_answerer_failure_closes_what_was_created_and_fails_the_offer() -> None:
    app = App(fail_at=1)
    with pytest.raises(SipError) as raised:
        await negotiate(offer(audio(), chat()), {}, app)
    assert raised.value.status == 503
    assert len(app.made) == 1 and app.made[0].closed


async def test_abort_closes_only_created_streams() -> None:
    app = App()
    first = await negotiate(offer(audio()), {}, app)
    again = await negotiate(offer(audio(), chat()), first.streams, app)
    await again.abort()  # the answer could not be sent
    assert app.made[1].closed and not app.made[0].closed


async def test_nothing_accepted_is_reported() -> None:
    result = await negotiate(offer(video()), {}, App())
    assert not result.accepted and ports(result.decisions) == [False]
