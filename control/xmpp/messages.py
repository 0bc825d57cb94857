"""SIP MESSAGE ↔ XMPP ``<message type="chat">`` (RFC 7572), sans-IO: content and errors.

A SIP body becomes a :class:`Chat` (plain text, optional XHTML-IM markup, optional chat state)
and back. text/plain is the body; text/html keeps its markup for XHTML-IM (XEP-0071) and its
text as the body every client shows; message/cpim is unwrapped (RFC 3862) to the type it
carries; application/im-iscomposing+xml (RFC 3994) is the chat state (XEP-0085) ``composing``
or ``active``. Anything else is refused 415 with the types taken, never dropped.

Errors cross both ways (RFC 7572 §5.2, RFC 6120 §8.3.3): :func:`condition_for_status` and
:func:`status_for_condition`.
"""

from __future__ import annotations

from dataclasses import dataclass

from lxml import etree, html

from control.msrp.cpim import CpimError, parse_cpim
from control.msrp.iscomposing import (
    ISCOMPOSING_CONTENT_TYPE,
    ComposingState,
    IsComposing,
    IsComposingError,
    parse_iscomposing,
)

__all__ = [
    "ACCEPTED_TYPES",
    "Chat",
    "MessageRefused",
    "chat_from_sip",
    "condition_for_status",
    "sip_from_chat",
    "status_for_condition",
]

ACCEPTED_TYPES = ("text/plain", "text/html", "message/cpim", ISCOMPOSING_CONTENT_TYPE)
XHTML_NS = "http://www.w3.org/1999/xhtml"


class MessageRefused(Exception):
    """A message the gateway cannot carry: ``sip_status`` for SIP, ``condition`` for XMPP."""

    def __init__(self, reason: str, *, sip_status: int, condition: str = "not-acceptable"):
        super().__init__(reason)
        self.reason = reason
        self.sip_status = sip_status
        self.condition = condition


@dataclass(frozen=True, slots=True)
class Chat:
    """What one XMPP chat message carries that SIP can too."""

    body: str | None = None
    xhtml: str | None = None  # the inner markup of the XHTML-IM <body>, when there is markup
    state: str | None = None  # XEP-0085: active, composing, paused, inactive, gone


def _mime(content_type: str) -> tuple[str, str]:
    mime, _, params = content_type.partition(";")
    charset = "utf-8"
    for param in params.split(";"):
        name, _, value = param.strip().partition("=")
        if name.lower() == "charset" and value:
            charset = value.strip('"')
    return mime.strip().lower(), charset


def _text(body: bytes, charset: str) -> str:
    try:
        return body.decode(charset)
    except (LookupError, UnicodeDecodeError) as exc:
        raise MessageRefused(f"body is not {charset}", sip_status=400) from exc


def chat_from_sip(content_type: str, body: bytes, *, max_bytes: int) -> Chat:
    """The chat message for a SIP MESSAGE's body (:class:`MessageRefused` when it cannot be)."""
    if len(body) > max_bytes:
        raise MessageRefused(f"body over {max_bytes} bytes", sip_status=413)
    mime, charset = _mime(content_type)
    if mime == "message/cpim":
        try:
            cpim = parse_cpim(body)
        except CpimError as exc:
            raise MessageRefused(str(exc), sip_status=400) from exc
        inner = cpim.content_type or "text/plain"
        if _mime(inner)[0] == "message/cpim":
            raise MessageRefused("CPIM inside CPIM", sip_status=415)
        return chat_from_sip(inner, cpim.body, max_bytes=max_bytes)
    if mime == "text/plain":
        return Chat(body=_text(body, charset))
    if mime == "text/html":
        markup = _text(body, charset)
        try:
            document = html.fragment_fromstring(markup, create_parent="div")
        except etree.ParserError as exc:
            raise MessageRefused("unreadable HTML", sip_status=400) from exc
        return Chat(body=document.text_content(), xhtml=markup)
    if mime == ISCOMPOSING_CONTENT_TYPE:
        try:
            indication = parse_iscomposing(body)
        except IsComposingError as exc:
            raise MessageRefused(str(exc), sip_status=400) from exc
        return Chat(state="composing" if indication.state is ComposingState.ACTIVE else "active")
    raise MessageRefused(f"{mime} is not carried to XMPP", sip_status=415)


def sip_from_chat(chat: Chat) -> tuple[str, bytes] | None:
    """The SIP MESSAGE content for a chat message: its body (as text/html when it has
    XHTML-IM markup), else its chat state as is-composing; None when it carries neither."""
    if chat.body is not None:
        if chat.xhtml is not None:
            return "text/html; charset=utf-8", chat.xhtml.encode()
        return "text/plain; charset=utf-8", chat.body.encode()
    if chat.state is not None:
        state = ComposingState.ACTIVE if chat.state == "composing" else ComposingState.IDLE
        return ISCOMPOSING_CONTENT_TYPE, IsComposing(state, refresh=None).serialize()
    return None


# RFC 7572 §5.2 and RFC 6120 §8.3.3: the nearest condition for each final status.
_CONDITIONS = {
    400: "bad-request",
    403: "forbidden",
    404: "item-not-found",
    408: "remote-server-timeout",
    410: "gone",
    413: "not-acceptable",
    415: "not-acceptable",
    480: "recipient-unavailable",
    484: "jid-malformed",
    486: "recipient-unavailable",
    488: "not-acceptable",
    503: "service-unavailable",
    504: "remote-server-timeout",
    603: "forbidden",
    604: "item-not-found",
    606: "not-acceptable",
}
_STATUSES = {
    "bad-request": 400,
    "forbidden": 403,
    "not-allowed": 403,
    "not-authorized": 403,
    "item-not-found": 404,
    "gone": 410,
    "jid-malformed": 484,
    "recipient-unavailable": 480,
    "service-unavailable": 480,
    "not-acceptable": 488,
    "policy-violation": 488,
    "remote-server-not-found": 404,
    "remote-server-timeout": 504,
    "resource-constraint": 503,
}


def condition_for_status(status: int) -> str:
    """The XMPP stanza error condition for a SIP failure status."""
    if status in _CONDITIONS:
        return _CONDITIONS[status]
    if status >= 500:
        return "service-unavailable" if status < 600 else "not-acceptable"
    return "undefined-condition"


def status_for_condition(condition: str) -> int:
    """The SIP status for an XMPP stanza error condition (500 for those SIP has no word for)."""
    return _STATUSES.get(condition, 500)
