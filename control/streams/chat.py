"""An MSRP chat stream as the answering side holds it (RFC 4975, RFC 3862 CPIM, RFC 7701).

Every complete message is checked before its last chunk is answered (the MSRP core calls the
validator first, RFC 4975 §7.3.1), so a message the application cannot use gets its error on
the wire instead of a 200:

- 400 for a malformed ``message/cpim`` wrapper (RFC 3862 §3);
- 415 for a wrapped type outside our ``a=accept-wrapped-types`` (RFC 4975 §8.6);
- then the application's own :data:`MessageCheck` (the conference checks the CPIM ``From``
  against the sender and stores the message here, so the sender's 200 means it is kept).

What the answer says (accept-types, accept-wrapped-types, ``a=chatroom`` tokens of RFC 7701
§4, max-size) is the application's :class:`ChatOptions`; by default accept-types and
accept-wrapped-types mirror the offer (echo takes whatever it is sent).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from control.msrp.cpim import CPIM_CONTENT_TYPE, CpimMessage, check_content_type, parse_cpim
from control.msrp.sdp import MsrpMedia, accept_msrp
from control.msrp.transport import MsrpChannel, MsrpTransport
from control.sip import sdp

from .base import MediaKind
from .msrp import MsrpLeg, read_msrp_offer

__all__ = ["ChatOptions", "CpimValidator", "MessageCheck", "MsrpChatStream", "media_type"]

MessageCheck = Callable[[str | None, bytes, CpimMessage | None], None]
"""The application's check of a complete message (content type, body, the parsed CPIM
wrapper when the body is ``message/cpim``); raises :class:`~control.msrp.errors.MsrpError`
with the status to answer (403 for a spoofed sender, 413 …)."""


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


class CpimValidator:
    """The checks of the module doc, as the MSRP core's ``MessageValidator``."""

    def __init__(self, wrapped_types: Sequence[str], check: MessageCheck | None = None) -> None:
        self.wrapped_types = tuple(wrapped_types) or ("*",)
        self.check = check

    def __call__(self, content_type: str | None, body: bytes) -> None:
        cpim: CpimMessage | None = None
        if media_type(content_type) == CPIM_CONTENT_TYPE:
            cpim = parse_cpim(body)
            check_content_type(cpim, self.wrapped_types)
        if self.check is not None:
            self.check(content_type, body, cpim)


@dataclass(frozen=True, slots=True)
class ChatOptions:
    """What the application answers a chat m-line with.

    ``None`` for ``accept_types`` / ``accept_wrapped_types``: what the offer lists.
    ``max_size``: ``None`` is the transport's limit. ``nicknames``: the application answers
    RFC 7701 NICKNAME requests (``NicknameRequested`` events); otherwise the core answers 403.
    """

    accept_types: tuple[str, ...] | None = None
    accept_wrapped_types: tuple[str, ...] | None = None
    chatroom: tuple[str, ...] = ()
    max_size: int | None = None
    nicknames: bool = False
    check: MessageCheck | None = None


class MsrpChatStream:
    """One chat m-line: its MSRP session (``channel``) and what was offered (``offered``)."""

    kind = MediaKind.CHAT

    def __init__(self, index: int, leg: MsrpLeg, accept: sdp.Accept) -> None:
        self.index = index
        self._leg = leg
        self.accept = accept

    @classmethod
    def open(
        cls,
        transport: MsrpTransport,
        offer: sdp.SessionDescription,
        index: int,
        options: ChatOptions = ChatOptions(),
    ) -> MsrpChatStream | None:
        """Answer the chat m-line ``index`` of ``offer``; ``None`` refuses it (port 0)."""
        theirs = read_msrp_offer(offer, index)
        if theirs is None:
            return None
        offered = theirs.offered
        accept_types = options.accept_types or offered.accept_types
        wrapped = (
            options.accept_wrapped_types
            if options.accept_wrapped_types is not None
            else offered.accept_wrapped_types
        )
        max_size = options.max_size if options.max_size is not None else transport.max_message_bytes
        leg = MsrpLeg.open(
            transport,
            theirs,
            accept_types=accept_types,
            validator=CpimValidator(wrapped or accept_types, options.check),
            max_message_size=max_size,
            nicknames=options.nicknames,
        )
        if leg is None:
            return None
        accept = accept_msrp(
            leg.channel.local_uri,
            accept_types,
            accept_wrapped_types=wrapped,
            max_size=max_size,
            setup=theirs.setup,
            chatroom=options.chatroom,
        )
        return cls(index, leg, accept)

    @property
    def channel(self) -> MsrpChannel:
        return self._leg.channel

    @property
    def offered(self) -> MsrpMedia:
        return self._leg.offered

    @property
    def closed(self) -> bool:
        return self._leg.channel.closed

    def fits(self, offer: sdp.SessionDescription, index: int) -> bool:
        """A re-offer with the same peer path, scheme and roles keeps the MSRP session (and
        our a=path in the answer); anything else replaces it (RFC 4975 §8.1)."""
        theirs = read_msrp_offer(offer, index)
        return theirs is not None and self._leg.fits(theirs)

    async def update(self, offer: sdp.SessionDescription, index: int) -> sdp.Accept | None:
        return self.accept

    async def close(self) -> None:
        self._leg.close()
