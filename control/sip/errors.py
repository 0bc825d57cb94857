"""The one exception family for bad SIP input: it carries the status to answer with."""

from __future__ import annotations


class SipError(Exception):
    """Bad input from a peer; ``status`` is the response a server should send (RFC 3261 §21)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class SipParseError(SipError):
    """A message that could not be parsed.

    ``raw_headers`` keeps whatever header lines were readable so that a server can still build a
    400 response (it needs Via, From, To, Call-ID and CSeq copied verbatim, RFC 3261 §8.2.6.2);
    ``is_request`` says whether the start line looked like a request at all.
    """

    def __init__(
        self,
        status: int,
        reason: str,
        *,
        is_request: bool = False,
        raw_headers: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(status, reason)
        self.is_request = is_request
        self.raw_headers = raw_headers or []
