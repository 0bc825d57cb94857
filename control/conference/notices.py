"""Messages from the room itself: notices and history replay, marked with our own CPIM
namespace (RFC 3862 §3.4) so a client can tell them from what people wrote.

Every such message carries ``NS: chorus <urn:x-chorus:cpim>``; a notice adds
``chorus.Notice: <kind>`` and a replayed message ``chorus.History: yes``. The From of a notice
is the room URI with the room's user part as display name.
"""

from __future__ import annotations

import enum
from datetime import datetime

from control.msrp.cpim import CpimAddress, CpimHeader, CpimMessage, format_datetime

__all__ = [
    "CHORUS_NS",
    "CHORUS_PREFIX",
    "NoticeKind",
    "build_notice",
    "chorus_headers",
    "notice_text",
]

CHORUS_NS = "urn:x-chorus:cpim"
CHORUS_PREFIX = "chorus"
TEXT_PLAIN = "text/plain; charset=utf-8"


class NoticeKind(enum.Enum):
    JOINED = "joined"
    LEFT = "left"
    MEDIA_ADDED = "media-added"
    MEDIA_REMOVED = "media-removed"
    NICKNAME = "nickname"
    MUTED = "muted"
    UNMUTED = "unmuted"


def notice_text(kind: NoticeKind, who: str, detail: str | None = None) -> str:
    """The English line a notice carries ("alice joined", "alice added chat")."""
    match kind:
        case NoticeKind.JOINED:
            return f"{who} joined"
        case NoticeKind.LEFT:
            return f"{who} left"
        case NoticeKind.MEDIA_ADDED:
            return f"{who} added {detail or 'media'}"
        case NoticeKind.MEDIA_REMOVED:
            return f"{who} removed {detail or 'media'}"
        case NoticeKind.NICKNAME:
            return f"{who} is now known as {detail}"
        case NoticeKind.MUTED:
            return f"{who} was muted" if detail == "operator" else f"{who} muted"
        case NoticeKind.UNMUTED:
            return f"{who} was unmuted" if detail == "operator" else f"{who} unmuted"


def chorus_headers(name: str, value: str) -> list[CpimHeader]:
    return [
        CpimHeader("NS", f"{CHORUS_PREFIX} <{CHORUS_NS}>"),
        CpimHeader(f"{CHORUS_PREFIX}.{name}", value),
    ]


def build_notice(room: CpimAddress, kind: NoticeKind, text: str, now: datetime) -> bytes:
    """The CPIM body of one notice (the same bytes for every receiver)."""
    headers = [
        CpimHeader("From", str(room)),
        CpimHeader("To", str(CpimAddress(room.uri))),
        CpimHeader("DateTime", format_datetime(now)),
        *chorus_headers("Notice", kind.value),
    ]
    return CpimMessage(tuple(headers), (("Content-Type", TEXT_PLAIN),), text.encode()).serialize()
