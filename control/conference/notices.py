"""Messages from the room itself: notices and history replay, marked with our own CPIM
namespace (RFC 3862 §3.4) so a client can tell them from what people wrote.

Every such message carries ``NS: chorus <urn:x-chorus:cpim>``; a notice adds
``chorus.Notice: <kind>`` and a replayed message ``chorus.History: yes``. The From of a notice
is the room URI with the room's user part as display name. A notice about a thing, not a
person, adds its facts as more ``chorus.`` headers a client can read without parsing the
text: a shared file (``chorus.File-Name``, ``-Size``, ``-Type``, ``-Hash`` in RFC 5547's
``sha1:XX:..`` form, ``-URL`` when the web server is on), a shared screen
(``chorus.Screen-URL``, ``chorus.Screen-Image``). Header values are single-line by
construction (:func:`header_value`, RFC 3862 §3.2 escapes: the exact value comes back to a
reader that unescapes): a sender's file name is metadata and may hold anything; the text line
shows it cleaned and cut (:func:`shown_text`).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from datetime import datetime

from control.msrp.cpim import CpimAddress, CpimHeader, CpimMessage, format_datetime

__all__ = [
    "CHORUS_NS",
    "CHORUS_PREFIX",
    "NoticeKind",
    "build_notice",
    "chorus_headers",
    "header_value",
    "notice_text",
    "shown_text",
]

CHORUS_NS = "urn:x-chorus:cpim"
CHORUS_PREFIX = "chorus"
TEXT_PLAIN = "text/plain; charset=utf-8"
HEADER_VALUE_CHARS = 512  # a notice header quotes at most this much of a sender's string


class NoticeKind(enum.Enum):
    JOINED = "joined"
    LEFT = "left"
    MEDIA_ADDED = "media-added"
    MEDIA_REMOVED = "media-removed"
    NICKNAME = "nickname"
    MUTED = "muted"
    UNMUTED = "unmuted"
    FILE = "file"  # a file was stored in the room (RFC 5547 push)
    SCREEN = "screen"  # a participant started sharing its screen: where to watch it
    SCREEN_ENDED = "screen-ended"
    AUDIO_LOST = "audio-lost"  # the media server ended a participant's audio (detail: why)
    # Moderation (control/conference/moderation.py); ``who`` is the moderator or "operator".
    KICKED = "kicked"
    LOCKED = "locked"
    UNLOCKED = "unlocked"
    PIN_SET = "pin-set"
    PIN_CLEARED = "pin-cleared"
    PRIVATE_ON = "private-messages-on"
    PRIVATE_OFF = "private-messages-off"
    ROOM_ENDED = "room-ended"
    SUBJECT = "subject"  # the room's subject was set (from MUC, XEP-0045 §8.1)


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
        case NoticeKind.FILE:
            return f"{who} shared {detail or 'a file'}"
        case NoticeKind.SCREEN:
            return f"{who} is sharing their screen" + (f": {detail}" if detail else "")
        case NoticeKind.SCREEN_ENDED:
            return f"{who} stopped sharing their screen"
        case NoticeKind.AUDIO_LOST:
            return f"{who}'s audio was lost" + (f" ({detail})" if detail else "")
        case NoticeKind.KICKED:
            return f"{who} was removed from the room" + (f" by {detail}" if detail else "")
        case NoticeKind.LOCKED:
            return f"the room was locked by {who}"
        case NoticeKind.UNLOCKED:
            return f"the room was unlocked by {who}"
        case NoticeKind.PIN_SET:
            return f"{who} set a PIN for the room"
        case NoticeKind.PIN_CLEARED:
            return f"{who} removed the room's PIN"
        case NoticeKind.PRIVATE_ON:
            return f"{who} allowed private messages"
        case NoticeKind.PRIVATE_OFF:
            return f"{who} disabled private messages"
        case NoticeKind.ROOM_ENDED:
            return f"the room was ended by {who}"
        case NoticeKind.SUBJECT:
            return f"{who} set the subject: {detail}" if detail else f"{who} cleared the subject"


_ESCAPES = {"\\": "\\\\", "\r": "\\r", "\n": "\\n", "\t": "\\t"}  # RFC 3862 §3.2
SHOWN_CHARS = 200  # how much of a sender's string a notice's text shows


def _control(char: str) -> bool:
    code = ord(char)
    return code < 0x20 or 0x7F <= code < 0xA0 or char in "\u2028\u2029"


def shown_text(text: str, limit: int = SHOWN_CHARS) -> str:
    """A sender's string fit for a notice's text line: controls (NUL, line breaks) as
    U+FFFD, cut to ``limit`` characters with an ellipsis."""
    cleaned = "".join("\ufffd" if _control(c) else c for c in text)
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "\u2026"


def header_value(text: str, limit: int = HEADER_VALUE_CHARS) -> str:
    """``text`` as one CPIM header value (RFC 3862 §3.1: one line), cut to ``limit``
    characters with an ellipsis, then escaped as §3.2 allows (``\\\\``, ``\\r``, ``\\n``,
    ``\\t``, ``\\uXXXX`` for the other C0/C1 controls and line separators): a reader that
    unescapes gets the text back exactly, NUL and line breaks included."""
    if len(text) > limit:
        text = text[: limit - 1] + "\u2026"
    out = []
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif _control(char):
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return "".join(out)


def chorus_headers(name: str, value: str, more: Sequence[tuple[str, str]] = ()) -> list[CpimHeader]:
    """The namespace declaration and ``chorus.<name>: <value>``, then any ``more`` pairs."""
    return [
        CpimHeader("NS", f"{CHORUS_PREFIX} <{CHORUS_NS}>"),
        CpimHeader(f"{CHORUS_PREFIX}.{name}", value),
        *(CpimHeader(f"{CHORUS_PREFIX}.{key}", header_value(val)) for key, val in more),
    ]


def build_notice(
    room: CpimAddress,
    kind: NoticeKind,
    text: str,
    now: datetime,
    details: Sequence[tuple[str, str]] = (),
) -> bytes:
    """The CPIM body of one notice (the same bytes for every receiver); ``details`` are
    ``(name, value)`` facts sent as ``chorus.<name>`` headers."""
    headers = [
        CpimHeader("From", str(room)),
        CpimHeader("To", str(CpimAddress(room.uri))),
        CpimHeader("DateTime", format_datetime(now)),
        *chorus_headers("Notice", kind.value, details),
    ]
    return CpimMessage(tuple(headers), (("Content-Type", TEXT_PLAIN),), text.encode()).serialize()
