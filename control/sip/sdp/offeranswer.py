"""RFC 3264 offer/answer over the SDP model: answering an offer m-line by m-line, building
offers, choosing codecs, and our side's origin across re-INVITEs (``SdpSession``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from control.sip.sdp.model import (
    _AUXILIARY,
    _DIRECTIONS,
    _STATIC_PT,
    Attribute,
    Bandwidth,
    Connection,
    Direction,
    MediaDescription,
    Origin,
    RtpMap,
    SdpError,
    SessionDescription,
    Timing,
)
from control.sip.sdp.wire import serialize

__all__ = [
    "Accept",
    "Reject",
    "SdpSession",
    "accept_audio",
    "audio_media",
    "build_answer",
    "build_offer",
    "choose_codecs",
]


@dataclass(frozen=True, slots=True)
class Accept:
    """The application accepts one offered m-line.

    ``direction`` is what we would like; the answer gets it narrowed to what the offer allows
    (RFC 3264 §6.1), so the default mirrors the offer. For RTP, ``a=rtpmap`` (and the offer's
    ``a=fmtp``) lines are added for ``formats`` unless ``attributes`` already carry them.
    """

    port: int
    formats: Sequence[str]
    direction: Direction = Direction.SENDRECV
    attributes: Sequence[Attribute] = ()
    connection: Connection | None = None
    bandwidths: Sequence[Bandwidth] = ()
    proto: str | None = None


@dataclass(frozen=True, slots=True)
class Reject:
    """The application rejects one offered m-line (RFC 3264 §6: port 0 in the answer)."""


def choose_codecs(
    media: MediaDescription,
    supported: Sequence[tuple[str, int]],
    *,
    offerer_order: bool = True,
) -> list[RtpMap]:
    """Pick one voice codec plus telephone-event/CN from an offered audio m-line.

    ``supported`` is ours, in preference order. By default the offerer's order decides among
    the codecs we both have (RFC 3264 §6.1 says the offer lists its preference first); with
    ``offerer_order=False`` ours does. The offerer's payload type numbers are kept, dynamic ones
    included (RFC 3264 §6.1 "SHOULD use the same payload type"). Auxiliary formats we support
    are kept when their clock rate equals the chosen codec's (RFC 4733 §2.1). The voice codec
    comes first; an empty list means no codec in common.
    """
    voice, auxiliary = _our_codecs(tuple(supported))
    offered = [(r, (r.encoding.lower(), r.clock_rate)) for r in media.rtpmaps()]
    chosen: RtpMap | None = None
    if offerer_order:
        for r, key in offered:
            if key in voice:
                chosen = r
                break
    else:
        rank = {key: i for i, key in enumerate(voice)}  # dicts keep our order
        best = len(rank)
        for r, key in offered:
            if rank.get(key, best) < best:
                chosen, best = r, rank[key]
    if chosen is None:
        return []
    rate = chosen.clock_rate
    extras = [r for r, key in offered if key in auxiliary and r.clock_rate == rate]
    return [chosen, *extras]


@lru_cache(maxsize=32)
def _our_codecs(
    supported: tuple[tuple[str, int], ...],
) -> tuple[dict[tuple[str, int], None], frozenset[tuple[str, int]]]:
    """``supported`` as (lower-case name, rate) keys (RFC 4855 §3: names are
    case-insensitive): the voice codecs in order, and the auxiliary formats. An application
    passes the same list on every call, so this is worked out once per configuration."""
    keys = [(name.lower(), rate) for name, rate in supported]
    voice = dict.fromkeys(k for k in keys if k[0] not in _AUXILIARY)
    return voice, frozenset(k for k in keys if k[0] in _AUXILIARY)


def accept_audio(
    media: MediaDescription,
    supported: Sequence[tuple[str, int]],
    *,
    port: int,
    direction: Direction = Direction.SENDRECV,
    attributes: Sequence[Attribute] = (),
    offerer_order: bool = True,
) -> Accept | Reject:
    """An :class:`Accept` with the chosen codecs, or :class:`Reject` when none is common."""
    codecs = choose_codecs(media, supported, offerer_order=offerer_order)
    if not codecs:
        return Reject()
    return Accept(port, [c.format for c in codecs], direction, attributes)


def build_answer(
    offer: SessionDescription,
    decisions: Sequence[Accept | Reject],
    *,
    origin: Origin,
    connection: Connection,
    session_name: str = "-",
    attributes: Sequence[Attribute] = (),
) -> SessionDescription:
    """The RFC 3264 §6 answer: one m-line per offered one, same order, same media and proto.

    A stream the offer already disabled (port 0) stays rejected whatever the decision. The
    ``t=`` lines are the offer's (§6). RFC 6157 asks for the offer's address family in ``c=``;
    that is the caller's choice of ``connection``.
    """
    if len(decisions) != len(offer.media):
        raise ValueError(f"{len(decisions)} decisions for {len(offer.media)} m-lines")
    media = []
    for offered, decision in zip(offer.media, decisions, strict=True):
        if isinstance(decision, Reject) or offered.rejected:
            media.append(
                MediaDescription(offered.media, 0, None, offered.proto, offered.formats[:1])
            )
        else:
            media.append(_answer_media(offer, offered, decision))
    return SessionDescription(
        origin=origin,
        session_name=session_name,
        connection=connection,
        timings=list(offer.timings) or [Timing(0, 0)],
        attributes=list(attributes),
        media=media,
    )


def _answer_media(
    offer: SessionDescription, offered: MediaDescription, accept: Accept
) -> MediaDescription:
    if not accept.formats or isinstance(accept.formats, str):
        raise ValueError("an accepted m-line needs a list of at least one format")
    if not 0 < accept.port <= 65535:
        raise ValueError(f"bad port {accept.port} for an accepted m-line")
    theirs = offer.direction_of(offered)
    direction = Direction.from_flags(
        send=accept.direction.sends and theirs.receives,
        recv=accept.direction.receives and theirs.sends,
    )
    attrs: list[Attribute] = []
    if offered.is_rtp:
        given = {
            (a.name, (a.value or "").partition(" ")[0])
            for a in accept.attributes
            if a.name in ("rtpmap", "fmtp")
        }
        known = {r.format: r for r in offered.rtpmaps()}
        for fmt in accept.formats:
            rtpmap = known.get(fmt)
            if rtpmap is None:
                continue
            if ("rtpmap", fmt) not in given:
                attrs.append(Attribute("rtpmap", rtpmap.rtpmap_value()))
            if rtpmap.fmtp is not None and ("fmtp", fmt) not in given:
                attrs.append(Attribute("fmtp", f"{fmt} {rtpmap.fmtp}"))
    attrs += [a for a in accept.attributes if not (a.value is None and a.name in _DIRECTIONS)]
    attrs.append(Attribute(direction.value))
    return MediaDescription(
        offered.media,
        accept.port,
        None,
        accept.proto or offered.proto,
        list(accept.formats),
        connection=accept.connection,
        bandwidths=list(accept.bandwidths),
        attributes=attrs,
    )


def audio_media(
    port: int,
    codecs: Sequence[RtpMap | tuple[str, int]],
    *,
    proto: str = "RTP/AVP",
    direction: Direction = Direction.SENDRECV,
    ptime: int | None = None,
    attributes: Sequence[Attribute] = (),
    first_dynamic: int = 96,
) -> MediaDescription:
    """An audio m-line for an offer, codecs in our preference order (RFC 3264 §5.1).

    ``(name, rate)`` pairs get their RFC 3551 static payload type where one exists, else the
    next dynamic one from ``first_dynamic``; telephone-event gets ``a=fmtp:<pt> 0-16``
    (RFC 4733 §2.4.1). Pass an :class:`RtpMap` to fix the payload type and fmtp yourself.
    """
    static = {(e[0].lower(), e[1]): pt for pt, e in _STATIC_PT.items() if e[2] is None}
    taken = {c.payload_type for c in codecs if isinstance(c, RtpMap)}
    dynamic = first_dynamic
    maps: list[RtpMap] = []
    for codec in codecs:
        if isinstance(codec, RtpMap):
            maps.append(codec)
            continue
        name, rate = codec
        pt = static.get((name.lower(), rate))
        if pt is None:
            while dynamic in taken:
                dynamic += 1
            if dynamic > 127:
                raise ValueError("out of dynamic payload types")
            pt, dynamic = dynamic, dynamic + 1
        taken.add(pt)
        fmtp = "0-16" if name.lower() == "telephone-event" else None
        maps.append(RtpMap(pt, name, rate, None, fmtp))
    attrs = [Attribute("rtpmap", r.rtpmap_value()) for r in maps]
    attrs += [Attribute("fmtp", f"{r.format} {r.fmtp}") for r in maps if r.fmtp is not None]
    if ptime is not None:
        attrs.append(Attribute("ptime", str(ptime)))
    attrs += attributes
    attrs.append(Attribute(direction.value))
    return MediaDescription("audio", port, None, proto, [r.format for r in maps], attributes=attrs)


def build_offer(
    *,
    origin: Origin,
    connection: Connection,
    media: Sequence[MediaDescription],
    session_name: str = "-",
    attributes: Sequence[Attribute] = (),
) -> SessionDescription:
    """An offer (RFC 3264 §5) with ``t=0 0`` and a session-level ``c=``."""
    return SessionDescription(
        origin=origin,
        session_name=session_name,
        connection=connection,
        attributes=list(attributes),
        media=[m.copy() for m in media],
    )


class SdpSession:
    """Our half of one SDP session for the life of a dialog (RFC 3264 §8).

    The origin's username, sess-id and address never change; sess-version goes up by one each
    time we send an SDP that differs from the previous one and stays put when we resend it
    unchanged (session refresh). Version numbers are never reused, even after a rejected
    re-offer. ``sess_id`` comes from the caller (an injected random source).
    """

    def __init__(
        self,
        *,
        sess_id: int | str,
        address: str,
        username: str = "-",
        session_name: str = "-",
        initial_version: int | None = None,
    ) -> None:
        self._connection = Connection.for_address(address)
        self._username = username
        self._sess_id = str(sess_id)
        self._session_name = session_name
        self._version = initial_version if initial_version is not None else int(self._sess_id)
        self._sent: bytes | None = None  # the last SDP we stamped, serialised
        self._origin: Origin | None = None
        self.local: SessionDescription | None = None  # ours, from the last completed exchange
        self.remote: SessionDescription | None = None  # theirs, from the last completed exchange
        self._pending_offer: SessionDescription | None = None

    @property
    def origin(self) -> Origin:
        origin = self._origin
        if origin is None or origin.sess_version != self._version:  # one per version
            c = self._connection
            origin = Origin(
                self._username, self._sess_id, self._version, c.nettype, c.addrtype, c.address
            )
            self._origin = origin
        return origin

    @property
    def connection(self) -> Connection:
        return self._connection

    def stamp(self, desc: SessionDescription) -> SessionDescription:
        """``desc`` (built for this exchange: it becomes ours) under our origin, its version
        bumped only if what goes on the wire changed. What is kept to compare the next one
        with is its serialisation (:attr:`sent`): one bytes object, no copy of the model for
        the garbage collector to walk for the life of the dialog."""
        desc.origin = self.origin
        data = serialize(desc)
        if self._sent is not None and data != self._sent:
            self._version += 1
            desc.origin = self.origin
            data = serialize(desc)
        self._sent = data
        return desc

    @property
    def sent(self) -> bytes | None:
        """The last SDP :meth:`stamp` gave (offer or answer) as sent: ``serialize`` of it,
        unless it was changed in place since."""
        return self._sent

    def offer(
        self, media: Sequence[MediaDescription], *, attributes: Sequence[Attribute] = ()
    ) -> SessionDescription:
        """Our (re-)offer. RFC 3264 §8: m-lines are never removed, only set to port 0."""
        if self.local is not None and len(media) < len(self.local.media):
            raise ValueError("a re-offer must keep every previous m-line (use port 0)")
        desc = build_offer(
            origin=self.origin,
            connection=self._connection,
            media=media,
            session_name=self._session_name,
            attributes=attributes,
        )
        self._pending_offer = self.stamp(desc)
        return self._pending_offer

    def answer_received(self, answer: SessionDescription) -> None:
        """Complete our offer; an answer with another m-line count is unusable (§6)."""
        if self._pending_offer is None:
            raise ValueError("no offer outstanding")
        if len(answer.media) != len(self._pending_offer.media):
            raise SdpError(488, "answer m-line count differs from the offer")
        self.local, self.remote, self._pending_offer = self._pending_offer, answer, None

    def offer_rejected(self) -> None:
        """Our re-offer failed: the previous exchange stays in force (RFC 3261 §14.1)."""
        self._pending_offer = None

    def answer(
        self,
        offer: SessionDescription,
        decisions: Sequence[Accept | Reject],
        *,
        attributes: Sequence[Attribute] = (),
    ) -> SessionDescription:
        """Answer the peer's (re-)offer and record the exchange as completed."""
        if self.local is not None and len(offer.media) < len(self.local.media):
            raise SdpError(488, "re-offer removed m-lines (RFC 3264 §8)")
        desc = build_answer(
            offer,
            decisions,
            origin=self.origin,
            connection=self._connection,
            session_name=self._session_name,
            attributes=attributes,
        )
        self.local, self.remote = self.stamp(desc), offer
        return self.local

    def answer_body(
        self,
        offer: SessionDescription,
        decisions: Sequence[Accept | Reject],
        *,
        attributes: Sequence[Attribute] = (),
    ) -> bytes:
        """:meth:`answer`, serialised for the response body (the bytes :meth:`stamp` made:
        no second serialisation)."""
        self.answer(offer, decisions, attributes=attributes)
        assert self._sent is not None
        return self._sent

    def remote_changed(self, offer: SessionDescription) -> bool:
        """False for a refresh: same SDP as last time, whatever its o= version says."""
        if self.remote is None:
            return True
        previous = self.remote.copy()
        previous.origin = offer.origin
        return previous != offer
