"""Composing what the UA sends out of dialog: requests (RFC 3261 §8.1.1), and the identity
every message of ours carries (Allow, User-Agent / Server).

Kept apart from the user agent: applications, the session layer and tests build requests
without needing the UA's transaction machinery.
"""

from __future__ import annotations

from control.sip.headers import Headers
from control.sip.message import Request
from control.sip.uri import NameAddr, Uri

__all__ = ["ALLOWED_METHODS", "USER_AGENT", "build_request"]

ALLOWED_METHODS = "INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE, SUBSCRIBE, NOTIFY, REFER, INFO"
USER_AGENT = "Chorus/0.1"


def build_request(
    method: str,
    uri: Uri,
    *,
    from_: NameAddr,
    to: NameAddr,
    call_id: str,
    cseq: int = 1,
    contact: NameAddr | None = None,
    body: bytes = b"",
    content_type: str | None = None,
    extra_headers: list[tuple[str, str]] | None = None,
) -> Request:
    """An out-of-dialog request (RFC 3261 §8.1.1); the UA adds Via and Max-Forwards."""
    headers = Headers()
    if from_.tag is None:
        raise ValueError("From needs a tag")
    headers.add("From", str(from_))
    headers.add("To", str(to))
    headers.add("Call-ID", call_id)
    headers.add("CSeq", f"{cseq} {method}")
    if contact is not None:
        headers.add("Contact", str(contact))
    for name, value in extra_headers or []:
        headers.add(name, value)
    if content_type is not None:
        headers.add("Content-Type", content_type)
    return Request(headers=headers, body=body, method=method, uri=uri)
