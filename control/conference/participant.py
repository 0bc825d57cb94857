"""A participant: one SIP session in a room, carrying several streams (control.streams, one per
accepted m-line) added and removed on their own by re-INVITE."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

from control.media.engine import ParticipantId
from control.sip import sdp
from control.sip.sdp import Accept, Reject
from control.sip.session import Session
from control.sip.uri import NameAddr, SipUri
from control.streams import MediaKind, Stream

__all__ = ["MODERATOR", "PARTICIPANT", "MediaKind", "Participant", "Role", "identity_uri"]

Role = str  # "moderator" | "participant" (RFC 4575 §5.6.4 roles; conference-info shows it)
MODERATOR: Role = "moderator"
PARTICIPANT: Role = "participant"


def identity_uri(identity: NameAddr) -> str:
    """The SIP identity of a From: its URI without port, parameters or headers."""
    uri = identity.uri
    if isinstance(uri, SipUri):
        return str(replace(uri, password=None, port=None, params={}, headers={}))
    return str(uri)


@dataclass(slots=True)
class Participant:
    id: ParticipantId
    identity: NameAddr
    session: Session
    sdp: sdp.SdpSession
    streams: dict[int, Stream] = field(default_factory=dict)  # by m-line index
    decisions: list[Accept | Reject] = field(default_factory=list)  # the last answer's
    joined_at: float = field(default_factory=time.time)
    muted: bool = False  # the mixer takes none of its audio (by itself or via the focus)
    role: Role = PARTICIPANT  # set at join by control/conference/moderation.py
    awaiting_pin: bool = False  # held out of the mix and chat until it enters the room's PIN
    transfer_only: bool = False  # joined with file m-lines only: a transfer, not a person
    # a=file-transfer-id of transfers that ended: a re-offer of one is not a new transfer
    finished_transfers: set[str] = field(default_factory=set)

    def stream(self, kind: MediaKind) -> Stream | None:
        return next((s for _, s in sorted(self.streams.items()) if s.kind is kind), None)

    @property
    def kinds(self) -> set[MediaKind]:
        return {s.kind for s in self.streams.values()}

    @property
    def uri(self) -> str:
        """The participant's SIP identity (what CPIM From must name, RFC 7701 §9)."""
        return identity_uri(self.identity)

    @property
    def name(self) -> str:
        """How notices name the participant: SIP display name, else the URI's user part."""
        if self.identity.display_name:
            return self.identity.display_name
        uri = self.identity.uri
        user = uri.unescaped_user() if isinstance(uri, SipUri) else None
        return user or str(uri)
