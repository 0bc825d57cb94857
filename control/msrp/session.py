"""MSRP session state on a connection (RFC 4975 §6–7): what a session accepts, who may
send into it, the messages being reassembled and those held for the application's verdict.

:class:`~control.msrp.connection.MsrpConnection` routes every chunk to one of these; the
session itself does no I/O and makes no decision that needs the connection.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .errors import MsrpUsageError
from .message import ByteRange, ChunkHead
from .reassembly import IncomingMessage
from .uri import MsrpUri

__all__ = ["MessageValidator", "MsrpSession", "RandomSource", "SessionLookup", "make_ident"]

RandomSource = Callable[[int], bytes]
"""Like :func:`os.urandom`: n random bytes. Injected so tests can predict every byte."""

MessageValidator = Callable[[str | None, bytes], None]
"""Checks a complete message body (content type, bytes); raises :class:`MsrpError` to refuse."""

_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def make_ident(random: RandomSource, length: int = 16) -> str:
    """An unguessable ``ident`` (RFC 4975 §14.1 wants at least 64 random bits).

    16 base62 characters from 12 random bytes carry about 95 bits.
    """
    value = int.from_bytes(random(12), "big")
    out = []
    for _ in range(length):
        value, digit = divmod(value, 62)
        out.append(_BASE62[digit])
    return "".join(out)


def media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


class MsrpSession:
    """One MSRP session on a connection, keyed by the session-id of ``local_uri``.

    ``remote_path`` is the peer's a=path (RFC 4975 §8.1); ``None`` until known, and then no
    From-Path check is made. ``accept_types`` are a=accept-types patterns (``*``, ``text/*``,
    ``message/cpim``); a chunk of another type is answered 415 (§7.3.1). With
    ``deliver_chunks`` message bytes are handed out as they come and not kept (file transfer);
    ``report_per_chunk`` sends a success REPORT per chunk instead of one per message (§7.1.2);
    ``max_message_size`` overrides the connection's limit (a file session's limit is the file).
    ``validator`` looks at each complete message before its last chunk is answered, so a body
    the application cannot use (a malformed CPIM wrapper, a wrapped type outside
    a=accept-wrapped-types) gets its 400 or 415 on the wire (RFC 4975 §7.3.1) instead of a 200.
    A ``deliver_chunks`` session has no body to validate: its completed messages are held for
    :meth:`MsrpConnection.complete_message` instead (see the module doc).
    ``nicknames`` says the application answers NICKNAME requests (RFC 7701 §7.1, a chat room
    with nicknames): only then is one handed out as :class:`NicknameRequested`. Otherwise the
    core answers it 403 itself, since a session where nicknames have no meaning forbids them,
    and a request nobody answers would leave the sender's transaction to time out (RFC 4975
    §7.2 owes a response unless Failure-Report is "no").
    """

    # Message-IDs of recently finished messages, so a duplicate chunk after completion is
    # answered but not reassembled again.
    _DONE_MEMORY = 128

    def __init__(
        self,
        local_uri: MsrpUri,
        remote_path: Sequence[MsrpUri] | None = None,
        *,
        accept_types: Sequence[str] = ("*",),
        deliver_chunks: bool = False,
        report_per_chunk: bool = False,
        max_message_size: int | None = None,
        check_from_path: bool = True,
        validator: MessageValidator | None = None,
        nicknames: bool = False,
    ) -> None:
        if local_uri.session_id is None:
            raise MsrpUsageError("a session's local URI needs a session-id")
        self.local_uri = local_uri
        self.remote_path: tuple[MsrpUri, ...] | None = (
            tuple(remote_path) if remote_path is not None else None
        )
        self.accept_types = tuple(t.strip().lower() for t in accept_types)
        self.deliver_chunks = deliver_chunks
        self.report_per_chunk = report_per_chunk
        self.max_message_size = max_message_size
        self.check_from_path = check_from_path
        self.validator = validator
        self.nicknames = nicknames
        self.messages: dict[str, IncomingMessage] = {}
        self._done: OrderedDict[str, None] = OrderedDict()
        self._held: dict[str, Held] = {}

    @property
    def session_id(self) -> str:
        assert self.local_uri.session_id is not None
        return self.local_uri.session_id

    def accepts(self, content_type: str) -> bool:
        media = media_type(content_type)
        major = media.split("/", 1)[0]
        return any(p == "*" or p == media or p == f"{major}/*" for p in self.accept_types)

    def from_path_ok(self, from_path: Sequence[MsrpUri]) -> bool:
        if not self.check_from_path or not self.remote_path:
            return True
        return from_path[-1].matches(self.remote_path[-1])

    def _finished(self, message_id: str) -> None:
        self.messages.pop(message_id, None)
        self._done[message_id] = None
        while len(self._done) > self._DONE_MEMORY:
            self._done.popitem(last=False)

    def _is_finished(self, message_id: str) -> bool:
        return message_id in self._done


SessionLookup = Callable[[str], MsrpSession | None]
"""Finds a session by session-id for a request on a connection that does not carry it yet."""


@dataclass(slots=True)
class Held:
    """A completed ``deliver_chunks`` message whose last chunk awaits the application's verdict."""

    message: IncomingMessage
    heads: list[ChunkHead]  # the completing chunk, then any duplicates of it
    chunk_range: ByteRange  # what a per-chunk success REPORT for it covers
    chunk_report: bool  # that chunk asked for a per-chunk success REPORT
    deadline: float
