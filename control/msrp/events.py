"""Everything the MSRP core reports, as small frozen dataclasses.

Two layers, as aioquic's QUIC and HTTP/3 events: the framing events (``Chunk*``,
``FramingLost``) come out of :class:`~control.msrp.message.ChunkParser` and are consumed by
:class:`~control.msrp.connection.MsrpConnection`; the session events below them are what the
connection hands to its owner (chat, file transfer). Consumers ``match`` on the type.
"""

from __future__ import annotations

from dataclasses import dataclass

from .message import ByteRange, ChunkHead, Flag

__all__ = [
    "ChunkData",
    "ChunkEnded",
    "ChunkRejected",
    "ChunkStarted",
    "ConnectionFailed",
    "Event",
    "FramingEvent",
    "FramingLost",
    "MessageAborted",
    "MessageChunkReceived",
    "MessageReceived",
    "NicknameRequested",
    "ProtocolError",
    "ReportReceived",
    "ResponseReceived",
    "SessionBound",
    "TransactionTimedOut",
]

Headers = tuple[tuple[str, str], ...]


# ---- framing (ChunkParser output) -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChunkStarted:
    """A chunk's start line and headers were read and are well-formed."""

    head: ChunkHead


@dataclass(frozen=True, slots=True)
class ChunkData:
    """A piece of the current chunk's body (pieces are cut at fixed sizes, not at read sizes)."""

    transaction_id: str
    data: bytes


@dataclass(frozen=True, slots=True)
class ChunkEnded:
    """The end-line of the current chunk arrived (RFC 4975 §7.1: ``-------tid`` + flag)."""

    transaction_id: str
    flag: Flag
    body_length: int


@dataclass(frozen=True, slots=True)
class ChunkRejected:
    """A chunk with a readable transaction id was malformed or over a limit.

    The parser skips to its end-line and goes on. ``to_path``/``from_path`` are the raw first
    URIs of those headers when present, so a request can still be answered (RFC 4975 §7.2).
    """

    transaction_id: str
    is_request: bool
    status: int
    reason: str
    to_path: str | None
    from_path: str | None
    failure_report: str | None


@dataclass(frozen=True, slots=True)
class FramingLost:
    """The stream cannot be framed any more (no readable transaction id): close the connection."""

    reason: str


FramingEvent = ChunkStarted | ChunkData | ChunkEnded | ChunkRejected | FramingLost


# ---- session events (MsrpConnection output) --------------------------------------------------


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """A complete message (RFC 4975 §7.3.1 reassembly done).

    ``body`` is ``None`` for a session with ``deliver_chunks=True``: its bytes were already
    handed out as :class:`MessageChunkReceived` events and the core kept none of them.
    ``headers`` are those of the chunk carrying the first byte (MIME and extension headers).
    ``awaiting_completion``: the response to the last chunk and the success REPORT are held
    until the owner calls ``MsrpConnection.complete_message`` with its verdict (a
    ``deliver_chunks`` message: only the owner can check what it wrote, RFC 5547 §8.4).
    """

    session_id: str
    message_id: str
    content_type: str | None
    body: bytes | None
    headers: Headers
    size: int
    awaiting_completion: bool = False


@dataclass(frozen=True, slots=True)
class MessageChunkReceived:
    """New bytes of a message for a ``deliver_chunks`` session.

    ``offset`` is 0-based (Byte-Range start minus one): a file receiver writes ``data`` there.
    Bytes already delivered (duplicate chunks) are not delivered again.
    """

    session_id: str
    message_id: str
    content_type: str | None
    offset: int
    data: bytes
    total: int | None


@dataclass(frozen=True, slots=True)
class MessageAborted:
    """A message will not complete: the sender sent ``#`` (RFC 4975 §7.1) or a chunk failed.

    ``status`` is the error we answered with, ``None`` when the sender aborted; 408 when a
    message awaiting completion was not completed in time (a failure REPORT told the sender).
    """

    session_id: str
    message_id: str
    reason: str
    status: int | None


@dataclass(frozen=True, slots=True)
class ReportReceived:
    """A REPORT request (RFC 4975 §7.1.2) about one of our messages."""

    session_id: str
    message_id: str
    transaction_id: str
    byte_range: ByteRange | None
    status: int
    reason: str | None


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """The response to one of our requests (a SEND chunk or a NICKNAME)."""

    session_id: str | None
    transaction_id: str
    message_id: str | None
    method: str
    status: int
    comment: str | None


@dataclass(frozen=True, slots=True)
class TransactionTimedOut:
    """No response within the transaction timeout: treated as a 408 (RFC 4975)."""

    session_id: str | None
    transaction_id: str
    message_id: str | None
    method: str
    status: int = 408


@dataclass(frozen=True, slots=True)
class NicknameRequested:
    """A NICKNAME request (RFC 7701 §6.1); the application answers with
    ``MsrpConnection.respond(transaction_id, 200 | 424 | 425, ...)``."""

    session_id: str
    transaction_id: str
    nickname: str | None


@dataclass(frozen=True, slots=True)
class ProtocolError:
    """Something from the peer was rejected; ``status`` is what we answered (or would have)."""

    transaction_id: str | None
    session_id: str | None
    status: int
    reason: str


@dataclass(frozen=True, slots=True)
class SessionBound:
    """A session found by ``session_lookup`` joined this connection: its first request came
    (RFC 4975 §5.4: the passive end binds a connection to a session by that request)."""

    session_id: str


@dataclass(frozen=True, slots=True)
class ConnectionFailed:
    """The byte stream cannot be framed any more: the caller closes the connection."""

    reason: str


Event = (
    MessageReceived
    | MessageChunkReceived
    | MessageAborted
    | ReportReceived
    | ResponseReceived
    | TransactionTimedOut
    | NicknameRequested
    | ProtocolError
    | SessionBound
    | ConnectionFailed
)
