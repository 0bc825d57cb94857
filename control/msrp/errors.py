"""One exception family for MSRP, CPIM and the chat XML bodies.

Bad input from a peer raises :class:`MsrpError` carrying the MSRP status code the core answers
with (RFC 4975 §7.3 and the IANA MSRP status registry), as h11 attaches the HTTP status to its
protocol error. The core catches it once at its boundary and turns it into a response plus an
event; nothing else escapes ``MsrpConnection.receive_data``. Our own misuse of the API is
:class:`MsrpUsageError`: a bug, not input, and never caught by the core.
"""

from __future__ import annotations

__all__ = [
    "CpimError",
    "ImdnError",
    "IsComposingError",
    "MsrpError",
    "MsrpUsageError",
    "UriError",
]


class MsrpError(Exception):
    """Peer input we reject; ``status`` is the MSRP response code to answer with.

    ``reason`` is for our log; ``comment``, when given, is the response's comment on the wire
    (RFC 4975 §7.2), so a client learns why without our log's detail reaching it."""

    def __init__(self, status: int, reason: str, *, comment: str | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.comment = comment

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.status}, {self.reason!r})"


class UriError(MsrpError):
    """An MSRP URI that does not follow RFC 4975 §9 (answered with 400)."""

    def __init__(self, reason: str) -> None:
        super().__init__(400, reason)


class CpimError(MsrpError):
    """A Message/CPIM body we cannot use (RFC 3862).

    400 for a malformed wrapper, 415 when the wrapper or the inner content type is one we do not
    accept (RFC 4975 §7.3.1: the receiver answers 415 for a media type it does not understand).
    """


class IsComposingError(MsrpError):
    """A malformed or hostile application/im-iscomposing+xml body (RFC 3994), answered with 400."""

    def __init__(self, reason: str) -> None:
        super().__init__(400, reason)


class ImdnError(MsrpError):
    """A malformed or hostile message/imdn+xml body (RFC 5438), answered with 400."""

    def __init__(self, reason: str) -> None:
        super().__init__(400, reason)


class MsrpUsageError(Exception):
    """The application misused the core (a bug in our code, not peer input)."""
