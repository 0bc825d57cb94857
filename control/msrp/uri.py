"""MSRP URIs and paths (RFC 4975 §6 and §9).

``msrp://host:port/session-id;tcp`` names one end of a session; the session-id part is what lets
several sessions share one connection (§6, §7.3). Paths (To-Path, From-Path) are lists of such
URIs separated by spaces, nearest hop first.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from .errors import UriError

__all__ = ["DEFAULT_PORT", "MsrpUri", "format_path", "parse_path", "parse_uri"]

# RFC 4975 §15.5: 2855 is the registered port; §6.1 compares an absent port as this default.
DEFAULT_PORT = 2855

# RFC 4975 §9: MSRP-URI = msrp-scheme "://" authority ["/" session-id] ";" transport
#                          *( ";" URI-parameter )
# authority (RFC 3986) = [ userinfo "@" ] host [ ":" port ]
_URI_RE = re.compile(
    r"""
    (?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://
    (?:(?P<user>[A-Za-z0-9\-._~!$&'()*+,=:%]*)@)?
    (?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%!$&'()*+,=]+)
    (?::(?P<port>[0-9]{1,5}))?
    (?:/(?P<session>[A-Za-z0-9\-._~+=/%]+))?
    ;(?P<params>.+)
    """,
    re.VERBOSE,
)
_TOKEN_RE = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,:%]+")
_PARAM_VALUE_RE = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,:%=\[\]/]*")


@dataclass(frozen=True, slots=True)
class MsrpUri:
    """One parsed MSRP URI.

    ``host`` is stored without IPv6 brackets; ``port`` is ``None`` when the URI had none.
    ``params`` are the URI parameters after the transport, in order.
    """

    host: str
    port: int | None = None
    session_id: str | None = None
    transport: str = "tcp"
    secure: bool = False
    user: str | None = None
    params: tuple[tuple[str, str | None], ...] = field(default=())

    @property
    def scheme(self) -> str:
        """``msrps`` when TLS is required (RFC 4975 §6), else ``msrp``."""
        return "msrps" if self.secure else "msrp"

    @property
    def effective_port(self) -> int:
        return DEFAULT_PORT if self.port is None else self.port

    def __str__(self) -> str:
        return self.serialize()

    def serialize(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        out = [self.scheme, "://"]
        if self.user is not None:
            out += [self.user, "@"]
        out.append(host)
        if self.port is not None:
            out += [":", str(self.port)]
        if self.session_id is not None:
            out += ["/", self.session_id]
        out += [";", self.transport]
        for name, value in self.params:
            out += [";", name] if value is None else [";", name, "=", value]
        return "".join(out)

    def matches(self, other: MsrpUri) -> bool:
        """RFC 4975 §6.1 comparison.

        Scheme, host (case-insensitive; IPv6 by address), port (absent means 2855) and transport
        (case-insensitive) must agree and the session-id must be identical (case-sensitive).
        Userinfo and other URI parameters are not part of the comparison.
        """
        return (
            self.secure == other.secure
            and _host_key(self.host) == _host_key(other.host)
            and self.effective_port == other.effective_port
            and self.session_id == other.session_id
            and self.transport.lower() == other.transport.lower()
        )


def _host_key(host: str) -> str:
    if ":" in host:
        try:
            return str(ipaddress.IPv6Address(host))
        except ValueError:
            return host.lower()
    return host.lower()


def parse_uri(text: str) -> MsrpUri:
    """Parse one MSRP URI; raise :class:`UriError` (400) when it is not RFC 4975 §9 syntax."""
    match = _URI_RE.fullmatch(text)
    if match is None:
        raise UriError(f"not an MSRP URI: {text[:80]!r}")
    scheme = match["scheme"].lower()
    if scheme not in ("msrp", "msrps"):
        raise UriError(f"unknown MSRP URI scheme {match['scheme']!r}")
    host = match["host"]
    if host.startswith("["):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise UriError(f"bad IPv6 reference in {text[:80]!r}") from None
    port: int | None = None
    if match["port"] is not None:
        port = int(match["port"])
        if port > 65535:
            raise UriError(f"port out of range in {text[:80]!r}")
    pieces = match["params"].split(";")
    transport = pieces[0]
    if not transport or not transport.isalnum() or not transport.isascii():
        raise UriError(f"bad transport in {text[:80]!r}")
    params: list[tuple[str, str | None]] = []
    for piece in pieces[1:]:
        name, eq, value = piece.partition("=")
        if not _TOKEN_RE.fullmatch(name) or (eq and not _PARAM_VALUE_RE.fullmatch(value)):
            raise UriError(f"bad URI parameter in {text[:80]!r}")
        params.append((name, value if eq else None))
    return MsrpUri(
        host=host,
        port=port,
        session_id=match["session"],
        transport=transport,
        secure=scheme == "msrps",
        user=match["user"],
        params=tuple(params),
    )


def parse_path(text: str) -> tuple[MsrpUri, ...]:
    """Parse a To-Path/From-Path value: one or more URIs separated by spaces (RFC 4975 §9)."""
    parts = text.split()
    if not parts:
        raise UriError("empty MSRP path")
    return tuple(parse_uri(part) for part in parts)


def format_path(path: Sequence[MsrpUri]) -> str:
    return " ".join(uri.serialize() for uri in path)
