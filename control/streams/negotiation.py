"""The one offer/answer routine every application uses, initial offer and re-offer alike.

It walks the offered m-lines in order (RFC 3264 §6: the answer has as many, in the same
order) and for each one:

- an m-line with port 0, or of a kind no stream carries (:func:`~control.streams.base.classify`
  says ``None``), is rejected in place (port 0, §6) and ends the stream that held it (§8.2);
- an m-line whose current stream still :meth:`~control.streams.base.Stream.fits` it keeps that
  stream (``update``: hold, resume, codec change; the same MSRP ``a=path``, §8.3.1);
- otherwise the application's :class:`Answerer` decides: a new stream of the kind offered (the
  old one, if any, is replaced), or ``None`` to refuse (port 0).

A re-offer with fewer m-lines than the session has is 488 (§8: m-lines are never removed,
only set to port 0), answered before any stream is touched.

Nothing is closed while the answer is being made: the caller sends the answer, then
:meth:`Negotiation.commit` closes what was removed or replaced; if the answer cannot be sent
(nothing usable, a cancelled call), :meth:`Negotiation.abort` closes what was created and the
session goes on with its old streams.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from control.sip import sdp
from control.sip.errors import SipError

from .base import MediaKind, Stream, classify

__all__ = ["Answerer", "Negotiation", "StreamRequest", "negotiate"]

log = logging.getLogger("chorus.streams")


@dataclass(frozen=True, slots=True)
class StreamRequest:
    """One offered m-line the application is asked to take as a new stream.

    ``others`` are the streams open at this moment at other m-lines (kept, created by this
    offer, or about to be removed): an application that allows one stream of a kind looks
    there (one audio stream per participant).
    """

    kind: MediaKind
    offer: sdp.SessionDescription
    index: int
    others: tuple[Stream, ...]
    replacing: Stream | None = None

    @property
    def media(self) -> sdp.MediaDescription:
        return self.offer.media[self.index]

    def has_other(self, kind: MediaKind) -> bool:
        return any(stream.kind is kind for stream in self.others)

    @property
    def alone(self) -> bool:
        """No other stream is open and no other m-line of the offer asks for one: refusing
        this m-line leaves the session nothing, so a stream may fail the offer instead (with
        a status that says why: 503 no ports, 488 no common codec)."""
        if self.others:
            return False
        return not any(
            i != self.index and not m.rejected and classify(m) is not None
            for i, m in enumerate(self.offer.media)
        )


class Answerer(Protocol):
    """The application's say per new m-line: a stream (made with the stream classes of this
    package, or one of its own such as echo's reflector) or ``None`` to refuse it.

    Raising :class:`~control.sip.errors.SipError` fails the whole offer with that status
    (what was created is closed first)."""

    async def __call__(self, request: StreamRequest) -> Stream | None: ...


@dataclass(slots=True)
class Negotiation:
    """The outcome of one offer: the decisions for ``SdpSession.answer`` and what changed."""

    decisions: list[sdp.Accept | sdp.Reject]
    streams: dict[int, Stream]
    created: list[Stream] = field(default_factory=list)
    kept: list[Stream] = field(default_factory=list)
    replaced: list[Stream] = field(default_factory=list)
    removed: list[Stream] = field(default_factory=list)

    @property
    def accepted(self) -> bool:
        """Whether any m-line was accepted (an answer rejecting all is usually a 488)."""
        return bool(self.streams)

    def of_kind(self, kind: MediaKind) -> list[Stream]:
        return [s for _, s in sorted(self.streams.items()) if s.kind is kind]

    async def commit(self) -> None:
        """The answer was sent: close the streams it removed or replaced."""
        await _close_all([*self.replaced, *self.removed])

    async def abort(self) -> None:
        """The answer was not sent: close the streams this offer created."""
        await _close_all(self.created)


async def _close_all(streams: Sequence[Stream]) -> None:
    for stream in streams:
        try:
            await stream.close()
        except Exception:  # noqa: BLE001 - one stream's failure must not leak the others
            log.exception("closing %s stream %d failed", stream.kind.value, stream.index)


async def negotiate(
    offer: sdp.SessionDescription,
    current: Mapping[int, Stream],
    answerer: Answerer,
) -> Negotiation:
    """Decide every m-line of ``offer`` given the session's ``current`` streams (by m-line
    index; empty for an initial offer). See the module doc."""
    if current and len(offer.media) <= max(current):
        raise SipError(488, "re-offer removed m-lines (RFC 3264 §8)")
    result = Negotiation(decisions=[], streams={})
    try:
        for index, media in enumerate(offer.media):
            existing = current.get(index)
            decision, stream = await _one(offer, index, media, existing, current, result, answerer)
            result.decisions.append(decision)
            if stream is not None:
                result.streams[index] = stream
                if stream is existing:
                    result.kept.append(stream)
                else:
                    result.created.append(stream)
                    if existing is not None:
                        result.replaced.append(existing)
            elif existing is not None:
                result.removed.append(existing)
    except BaseException:
        await result.abort()
        raise
    return result


async def _one(
    offer: sdp.SessionDescription,
    index: int,
    media: sdp.MediaDescription,
    existing: Stream | None,
    current: Mapping[int, Stream],
    result: Negotiation,
    answerer: Answerer,
) -> tuple[sdp.Accept | sdp.Reject, Stream | None]:
    kind = None if media.rejected else classify(media)
    if kind is None:
        return sdp.Reject(), None
    if existing is not None and existing.kind is kind and existing.fits(offer, index):
        accept = await existing.update(offer, index)
        if accept is None:
            return sdp.Reject(), None
        return accept, existing
    others = {i: s for i, s in current.items() if i != index}
    others.update(result.streams)  # created by this offer, at lower m-lines
    request = StreamRequest(kind, offer, index, tuple(others.values()), replacing=existing)
    stream = await answerer(request)
    if stream is None:
        return sdp.Reject(), None
    if stream.index != index or stream.kind is not kind:
        await stream.close()
        raise TypeError(f"answerer made a {stream.kind} stream at {stream.index} for {index}")
    return stream.accept, stream
