"""SDP for MSRP m-lines (RFC 4975 §8, RFC 6135 a=setup, RFC 7701 a=chatroom).

An MSRP stream is ``m=message <port> TCP/MSRP *`` (or ``TCP/TLS/MSRP`` for msrps) with
``a=path`` (the endpoint's MSRP URI, relays first), ``a=accept-types`` (required, §8.6),
``a=accept-wrapped-types`` (types allowed inside message/cpim) and ``a=max-size``. The m-line
port and ``c=`` address are informative only: the URI in ``a=path`` is where to connect (§8.1).

Who connects (RFC 6135): ``a=setup:active`` connects, ``passive`` listens, ``actpass`` lets the
answerer choose. Without ``a=setup`` RFC 4975 §5.4 applies: the offerer connects. As an
answerer Chorus picks ``passive`` for ``actpass``: the server is reachable, its callers are
the ones behind NATs that RFC 6135 was written for.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from control.sip.sdp import Accept, Attribute, Direction, MediaDescription, SdpError

from .errors import UriError
from .uri import MsrpUri, format_path, parse_path

__all__ = [
    "MSRP_PROTOS",
    "MsrpMedia",
    "Setup",
    "accept_msrp",
    "answer_setup",
    "is_msrp",
    "msrp_attributes",
    "msrp_media",
    "offer_is_active",
    "parse_msrp_media",
]

PROTO_TCP = "TCP/MSRP"
PROTO_TLS = "TCP/TLS/MSRP"
MSRP_PROTOS = (PROTO_TCP, PROTO_TLS)


class Setup(enum.StrEnum):
    """RFC 4145 §4 connection roles, as RFC 6135 uses them for MSRP."""

    ACTIVE = "active"
    PASSIVE = "passive"
    ACTPASS = "actpass"
    HOLDCONN = "holdconn"


def is_msrp(media: MediaDescription) -> bool:
    return media.media == "message" and media.proto.upper() in MSRP_PROTOS


@dataclass(frozen=True, slots=True)
class MsrpMedia:
    """What one MSRP m-line says (RFC 4975 §8).

    ``path`` is the sender's a=path: connect to its first URI, send to the whole of it.
    ``setup`` is ``None`` when a=setup is absent (RFC 4975's default applies).
    """

    path: tuple[MsrpUri, ...]
    secure: bool
    accept_types: tuple[str, ...]
    accept_wrapped_types: tuple[str, ...] = ()
    max_size: int | None = None
    setup: Setup | None = None
    chatroom: tuple[str, ...] = ()
    direction: Direction = Direction.SENDRECV
    file_selector: str | None = None

    @property
    def endpoint(self) -> MsrpUri:
        """The peer's own URI (the last of its path; relays come before it)."""
        return self.path[-1]


def parse_msrp_media(media: MediaDescription, direction: Direction | None = None) -> MsrpMedia:
    """Read an MSRP m-line; 488 when a=path or a=accept-types is missing or malformed."""
    if not is_msrp(media):
        raise SdpError(488, f"not an MSRP m-line: {media.media} {media.proto}")
    path_text = media.get("path")
    if not path_text:
        raise SdpError(488, "MSRP m-line without a=path (RFC 4975 §8.2)")
    try:
        path = parse_path(path_text)
    except UriError as exc:
        raise SdpError(488, f"bad a=path: {exc.reason}") from None
    secure = media.proto.upper() == PROTO_TLS
    if path[-1].secure != secure:
        raise SdpError(488, f"a=path scheme does not fit {media.proto}")
    accept = media.get("accept-types")
    if not accept or not accept.split():
        raise SdpError(488, "MSRP m-line without a=accept-types (RFC 4975 §8.6)")
    max_size: int | None = None
    raw_max = media.get("max-size")
    if raw_max is not None:
        text = raw_max.strip()
        if not text.isascii() or not text.isdigit() or len(text) > 19:
            raise SdpError(488, f"bad a=max-size {raw_max[:20]!r}")
        max_size = int(text)
    setup: Setup | None = None
    raw_setup = media.get("setup")
    if raw_setup is not None:
        try:
            setup = Setup(raw_setup.strip().lower())
        except ValueError:
            raise SdpError(488, f"bad a=setup {raw_setup[:20]!r}") from None
    chatroom = tuple(word for value in media.get_all("chatroom") for word in value.split() if word)
    return MsrpMedia(
        path=path,
        secure=secure,
        accept_types=tuple(accept.split()),
        accept_wrapped_types=tuple((media.get("accept-wrapped-types") or "").split()),
        max_size=max_size,
        setup=setup,
        chatroom=chatroom,
        direction=direction or media.direction,
        file_selector=media.get("file-selector"),
    )


def answer_setup(offered: Setup | None) -> tuple[Setup | None, bool]:
    """Our a=setup for an answer and whether we connect (are active).

    RFC 4145 §4.1 table: active → passive, passive → active, actpass → our pick (passive, see
    the module doc). No a=setup in the offer: RFC 4975 §5.4, the offerer connects, and the
    answer carries no a=setup either (RFC 6135 §4.2 keeps the old behaviour for old peers).
    ``holdconn`` is not answered with a connection at all: callers reject the stream.
    """
    match offered:
        case None:
            return None, False
        case Setup.PASSIVE:
            return Setup.ACTIVE, True
        case Setup.HOLDCONN:
            return Setup.HOLDCONN, False
        case _:
            return Setup.PASSIVE, False


def offer_is_active(answered: Setup | None) -> bool:
    """Whether the offerer connects, given the answer's a=setup (RFC 6135 §4.2)."""
    return answered is not Setup.ACTIVE


def msrp_attributes(
    path: Sequence[MsrpUri],
    accept_types: Sequence[str],
    *,
    accept_wrapped_types: Sequence[str] = (),
    max_size: int | None = None,
    setup: Setup | None = None,
    chatroom: Sequence[str] = (),
    extra: Sequence[Attribute] = (),
) -> list[Attribute]:
    """The a= lines of an MSRP m-line, in the order Blink and SylkServer write them."""
    if not accept_types:
        raise ValueError("a=accept-types is required (RFC 4975 §8.6)")
    attrs = [
        Attribute("path", format_path(path)),
        Attribute("accept-types", " ".join(accept_types)),
    ]
    if accept_wrapped_types:
        attrs.append(Attribute("accept-wrapped-types", " ".join(accept_wrapped_types)))
    if max_size is not None:
        attrs.append(Attribute("max-size", str(max_size)))
    if setup is not None:
        attrs.append(Attribute("setup", setup.value))
    if chatroom:
        attrs.append(Attribute("chatroom", " ".join(chatroom)))
    attrs += extra
    return attrs


def msrp_media(
    local: MsrpUri,
    accept_types: Sequence[str],
    *,
    accept_wrapped_types: Sequence[str] = (),
    max_size: int | None = None,
    setup: Setup | None = Setup.ACTPASS,
    chatroom: Sequence[str] = (),
    direction: Direction = Direction.SENDRECV,
    port: int | None = None,
    extra: Sequence[Attribute] = (),
) -> MediaDescription:
    """An MSRP m-line for an offer. ``port`` defaults to the URI's (9, "discard", when the
    URI has none: an active-only endpoint listens nowhere)."""
    attrs = msrp_attributes(
        [local],
        accept_types,
        accept_wrapped_types=accept_wrapped_types,
        max_size=max_size,
        setup=setup,
        chatroom=chatroom,
        extra=extra,
    )
    attrs.append(Attribute(direction.value))
    m_port = port if port is not None else (local.port or 9)
    proto = PROTO_TLS if local.secure else PROTO_TCP
    return MediaDescription("message", m_port, None, proto, ["*"], attributes=attrs)


def accept_msrp(
    local: MsrpUri,
    accept_types: Sequence[str],
    *,
    accept_wrapped_types: Sequence[str] = (),
    max_size: int | None = None,
    setup: Setup | None = None,
    chatroom: Sequence[str] = (),
    direction: Direction = Direction.SENDRECV,
    extra: Sequence[Attribute] = (),
) -> Accept:
    """An :class:`~control.sip.sdp.Accept` for an offered MSRP m-line (formats ``*``)."""
    attrs = msrp_attributes(
        [local],
        accept_types,
        accept_wrapped_types=accept_wrapped_types,
        max_size=max_size,
        setup=setup,
        chatroom=chatroom,
        extra=extra,
    )
    return Accept(local.port or 9, ["*"], direction, attrs)
