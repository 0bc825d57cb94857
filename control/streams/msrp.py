"""The answering side of one MSRP m-line (RFC 4975 §8, RFC 6135), shared by chat and file
transfer by composition: both hold an :class:`MsrpLeg`.

- The offered m-line is read with :func:`~control.msrp.sdp.parse_msrp_media`; one that cannot
  be used (no a=path, no a=accept-types) is refused, not failed: port 0 for that m-line.
- RFC 6135 roles: :func:`~control.msrp.sdp.answer_setup` picks ours; ``holdconn`` (RFC 4145
  §4: no connection now) is refused, since a session with no connection carries nothing.
- The session rides our ``msrps`` listener for a ``TCP/TLS/MSRP`` offer, ``msrp`` for
  ``TCP/MSRP``; when we are the passive end and that listener is not configured the stream is
  refused (nobody could reach us).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from control.msrp.errors import MsrpError, MsrpUsageError
from control.msrp.sdp import MsrpMedia, Setup, answer_setup, parse_msrp_media
from control.msrp.session import MessageValidator
from control.msrp.transport import MsrpChannel, MsrpTransport
from control.sip import sdp
from control.sip.errors import SipError

__all__ = ["MsrpLeg", "MsrpOffer", "read_msrp_offer"]

log = logging.getLogger("chorus.streams.msrp")


@dataclass(frozen=True, slots=True)
class MsrpOffer:
    """An offered MSRP m-line as we would answer it: what it says, our a=setup, who connects."""

    offered: MsrpMedia
    setup: Setup | None
    active: bool


def read_msrp_offer(offer: sdp.SessionDescription, index: int) -> MsrpOffer | None:
    """The offered m-line ``index`` read for answering; ``None`` when it cannot be answered."""
    media = offer.media[index]
    try:
        offered = parse_msrp_media(media, offer.direction_of(media))
    except SipError as exc:
        log.info("unusable MSRP m-line %d: %s", index, exc.reason)
        return None
    if offered.setup is Setup.HOLDCONN:
        return None
    setup, active = answer_setup(offered.setup)
    return MsrpOffer(offered, setup, active)


@dataclass(slots=True)
class MsrpLeg:
    """One open MSRP session and the offer it answers."""

    channel: MsrpChannel
    offered: MsrpMedia
    setup: Setup | None

    @classmethod
    def open(
        cls,
        transport: MsrpTransport,
        theirs: MsrpOffer,
        *,
        accept_types: tuple[str, ...],
        validator: MessageValidator | None = None,
        max_message_size: int | None = None,
        deliver_chunks: bool = False,
        nicknames: bool = False,
    ) -> MsrpLeg | None:
        """Open the session on the listener the offer's scheme needs (``None``: refused)."""
        offered = theirs.offered
        if not theirs.active and transport.listener(offered.secure) is None:
            log.info("no %s listener: MSRP m-line refused", "msrps" if offered.secure else "msrp")
            return None
        try:
            channel = transport.open(
                transport.local_uri(offered.secure),
                offered.path,
                active=theirs.active,
                accept_types=accept_types,
                validator=validator,
                max_message_size=max_message_size,
                deliver_chunks=deliver_chunks,
                nicknames=nicknames,
            )
        except (MsrpError, MsrpUsageError) as exc:
            log.info("cannot open an MSRP session: %s", exc)
            return None
        return cls(channel, offered, theirs.setup)

    def fits(self, theirs: MsrpOffer) -> bool:
        """A re-offer that keeps this session as it is (same peer path, scheme and roles)."""
        return (
            not self.channel.closed
            and theirs.offered.path == self.offered.path
            and theirs.offered.secure == self.offered.secure
            and theirs.setup == self.setup
        )

    def close(self) -> None:
        self.channel.close()
