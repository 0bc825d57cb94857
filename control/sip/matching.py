"""Which transaction a message belongs to (RFC 3261 §17.1.3, §17.2.3).

Kept apart from the state machines: the user agent matches every incoming message before any
transaction sees it, and CANCEL matching (§9.2) reuses the server rule.
"""

from __future__ import annotations

from typing import Final

from control.sip.headers import Via
from control.sip.message import Request, Response

__all__ = ["MAGIC_COOKIE", "TransactionKey", "cancel_target_key", "client_key", "server_key"]

MAGIC_COOKIE: Final = "z9hG4bK"  # RFC 3261 §8.1.1.7: branches of RFC 3261 elements start so

TransactionKey = tuple[str, str, str]  # (branch, sent-by or "", method)


def _sent_by(via: Via) -> str:
    host = via.host.lower()
    return host if via.port is None else f"{host}:{via.port}"


def server_key(request: Request) -> TransactionKey:
    """The server transaction a request belongs to (RFC 3261 §17.2.3).

    With a magic-cookie branch: branch, top Via sent-by and method, an ACK counting as INVITE
    so it finds the INVITE's transaction, a CANCEL keeping its own. Without one (RFC 2543), the
    branch slot holds the Request-URI, From tag, Call-ID, CSeq number and whole top Via; it
    contains spaces, so it never equals a real branch (a token). The To tag is left out: the
    ACK for a non-2xx carries the tag our response added, which the INVITE did not have.
    """
    via = request.top_via
    method = "INVITE" if request.method == "ACK" else request.method
    branch = via.branch
    if branch is not None and branch.startswith(MAGIC_COOKIE):
        return (branch, _sent_by(via), method)
    legacy = " ".join(
        (
            "rfc2543",
            str(request.uri),
            request.from_.tag or "",
            request.call_id,
            str(request.cseq.number),
            str(via),
        )
    )
    return (legacy, _sent_by(via), method)


def cancel_target_key(cancel: Request) -> TransactionKey:
    """The key of the INVITE server transaction a CANCEL cancels (§9.2: same matching rules)."""
    branch, sent_by, _ = server_key(cancel)
    return (branch, sent_by, "INVITE")


def client_key(response: Response) -> TransactionKey:
    """The client transaction a response belongs to (§17.1.3): top Via branch, CSeq method."""
    return (response.top_via.branch or "", "", response.cseq.method)
