"""Responses and REPORTs (RFC 4975 §7.1.2, §7.2, §7.3; RFC 7701 for the nickname codes).

A response is hop-by-hop: it goes back to the previous hop (the first URI of the request's
From-Path) from the URI it was addressed to. A REPORT is end-to-end: it goes to the whole
From-Path of the request, carries the Message-ID and the Byte-Range it is about, and is never
answered (§7.1.2).
"""

from __future__ import annotations

from collections.abc import Sequence

from .message import ByteRange, ChunkHead, FailureReport, ReportStatus, serialize_request
from .message import serialize_response as _serialize_response
from .uri import MsrpUri

__all__ = [
    "STATUS_REASONS",
    "build_report",
    "build_response",
    "response_wanted",
]

# IANA "MSRP Parameters" status codes (RFC 4975 §7.3/§15, RFC 4976, RFC 7701).
STATUS_REASONS: dict[int, str] = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    408: "Request Timeout",
    413: "Stop Sending Message",
    415: "Unsupported Media Type",
    423: "Parameter Out Of Bounds",
    424: "Malformed Nickname",
    425: "Nickname Reserved Or Already In Use",
    428: "Private Messages Not Supported",
    481: "Session Does Not Exist",
    501: "Method Not Understood",
    506: "Session Already In Use",
}


def response_wanted(failure_report: FailureReport | None, status: int) -> bool:
    """RFC 4975 §7.1.1: ``no`` suppresses every response, ``partial`` all but errors.

    An absent Failure-Report means ``yes``.
    """
    if failure_report is FailureReport.NO:
        return False
    if failure_report is FailureReport.PARTIAL:
        return status != 200
    return True


def build_response(
    request: ChunkHead | tuple[str, str, str],
    status: int,
    comment: str | None = None,
    *,
    local_uri: MsrpUri | None = None,
) -> bytes:
    """Bytes of a response to ``request`` (RFC 4975 §7.2).

    ``request`` is a parsed head, or ``(transaction_id, raw_to_uri, raw_from_uri)`` for a
    request too broken to parse. To-Path is the request's first From-Path URI; From-Path is
    ``local_uri`` or, without one, the URI the request was addressed to.
    """
    if comment is None:
        comment = STATUS_REASONS.get(status)
    if isinstance(request, ChunkHead):
        return _serialize_response(
            request.transaction_id,
            status,
            request.from_path[:1],
            [local_uri] if local_uri is not None else request.to_path[:1],
            comment,
        )
    transaction_id, raw_to, raw_from = request
    from_text = local_uri.serialize() if local_uri is not None else raw_to
    return _serialize_response(transaction_id, status, raw_from, from_text, comment)


def build_report(
    transaction_id: str,
    *,
    to_path: Sequence[MsrpUri],
    from_path: Sequence[MsrpUri],
    message_id: str,
    byte_range: ByteRange,
    status: int = 200,
    reason: str | None = None,
) -> bytes:
    """A REPORT request (RFC 4975 §7.1.2): ``Status: 000 <code> <reason>``, no body."""
    text = STATUS_REASONS.get(status) if reason is None else reason
    headers = [
        ("Message-ID", message_id),
        ("Byte-Range", str(byte_range)),
        ("Status", str(ReportStatus(status, text))),
    ]
    return serialize_request(transaction_id, "REPORT", to_path, from_path, headers)
