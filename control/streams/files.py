"""RFC 5547 file transfer as the answering side holds it: one stream per file m-line.

- **Push** (``sendonly`` offer with ``a=file-selector``, RFC 5547 §8, §9.1): we answer
  ``recvonly``, receive the file as one MSRP message whose chunks go straight to a temporary
  file in the store's spool, check its size and SHA-1 against the selector when the last chunk
  arrives (§8.4), and only then move it into place under a name we choose. The MSRP core holds
  the response to that last chunk (and the success REPORT) until we have checked and stored
  the file: the sender's 200 means the file is in the spool, and a short file or a hash
  mismatch is answered 400 on the wire instead (RFC 4975 §7.1.1, §7.1.2). A transfer that is
  aborted (``#``, RFC 4975 §7.1), cut off, over the size cap or whose hash does not match
  leaves nothing behind, and :meth:`MsrpFileStream.run` returns: the application ends the
  session (echo sends BYE when nothing else is live), so the sender learns the transfer failed.
- **Pull** (``recvonly`` offer whose selector names the hash, §8.4, §9.2): when the store
  holds a file with that SHA-1 (and any other part of the selector fits) we answer
  ``sendonly`` with the file's full selector and send it; otherwise the stream is refused
  (port 0, §8.2).

The store (:class:`~control.streams.filestore.FileStore`) is a parameter: echo has one, rooms
get their own. The MSRP session is an :class:`~control.streams.msrp.MsrpLeg`, as a chat
stream's is. Disk work goes through :func:`~control.files.spool.to_disk`.
"""

from __future__ import annotations

import asyncio
import functools
import logging

from control.files.spool import FileMeta, SpoolError, StoredFile, Upload, to_disk
from control.msrp.events import (
    ConnectionFailed,
    MessageAborted,
    MessageChunkReceived,
    MessageReceived,
    ProtocolError,
    ResponseReceived,
    TransactionTimedOut,
)
from control.msrp.fileselector import (
    FileSelectorError,
    FileTransferOffer,
    file_transfer_attributes,
    parse_file_transfer,
    selector_for,
)
from control.msrp.filetransfer import FileReceiver, FileTransferError
from control.msrp.sdp import MsrpMedia, Setup, accept_msrp
from control.msrp.transport import MsrpChannel, MsrpConnectError, MsrpTransport
from control.sip import sdp
from control.sip.sdp import Direction

from .base import MediaKind
from .fileoffer import SendFailed, send_stored
from .filestore import FileStore, finish_and_commit
from .msrp import MsrpLeg, read_msrp_offer

__all__ = ["MsrpFileStream"]

log = logging.getLogger("chorus.streams.files")

WRITE_BATCH = 1024 * 1024
"""Contiguous received bytes gathered before one trip to the disk thread."""


class MsrpFileStream:
    """One file-transfer m-line: a push we receive into ``store`` or a pull we serve from it.

    ``await stream.run()`` does the transfer and returns why it ended; ``outcome`` says how:
    ``stored``, ``sent``, or ``failed: <why>``. ``transfers`` counts files stored or sent.
    """

    kind = MediaKind.FILE

    def __init__(
        self,
        index: int,
        store: FileStore,
        leg: MsrpLeg,
        transfer: FileTransferOffer,
        *,
        sender: str,
        serve: StoredFile | None,
    ) -> None:
        self.index = index
        self.files = store
        self._leg = leg
        self.transfer = transfer
        self.sender = sender
        self.serve = serve
        self.transfers = 0
        self.accept = _answer(self)
        self.outcome: str | None = None
        self.stored: StoredFile | None = None
        self._upload: Upload | None = None

    @property
    def channel(self) -> MsrpChannel:
        return self._leg.channel

    @property
    def offered(self) -> MsrpMedia:
        return self._leg.offered

    @property
    def setup(self) -> Setup | None:
        return self._leg.setup

    def fits(self, offer: sdp.SessionDescription, index: int) -> bool:
        """A re-offer of the same transfer (RFC 5547 §8.1: same a=file-transfer-id and
        selector, same direction, same MSRP session)."""
        theirs = read_msrp_offer(offer, index)
        try:
            transfer = parse_file_transfer(offer.media[index])
        except FileSelectorError:
            return False
        return (
            theirs is not None
            and transfer is not None
            and self._leg.fits(theirs)
            and theirs.offered.direction == self.offered.direction
            and transfer.transfer_id == self.transfer.transfer_id
            and transfer.selector == self.transfer.selector
        )

    async def update(self, offer: sdp.SessionDescription, index: int) -> sdp.Accept | None:
        return self.accept

    async def run(self) -> str:
        try:
            await self.channel.wait_connected()
        except MsrpConnectError as exc:
            log.info("file stream %s did not connect: %s", self.channel.session_id, exc)
            return "not connected"
        try:
            if self.serve is not None:
                return await self._send(self.serve)
            return await self._receive()
        finally:
            self._discard()

    # ---- push: we receive --------------------------------------------------------------

    async def _receive(self) -> str:
        """Receive one file; return (ending the stream) on failure, idle on success."""
        selector = self.transfer.selector
        spool = self.files.spool
        beginning = asyncio.ensure_future(to_disk(spool.begin))
        try:
            self._upload = await asyncio.shield(beginning)
        except (OSError, SpoolError) as exc:
            return self._failed(f"spool: {exc}")
        except asyncio.CancelledError:  # a BYE while the file is created: delete it after
            beginning.add_done_callback(_discard_begun)
            raise
        receiver = FileReceiver(
            self._upload,
            size=selector.size,
            sha1=selector.sha1,
            max_size=spool.max_file_bytes,
        )
        message_id: str | None = None
        content_type: str | None = None
        batch = bytearray()
        batch_at = 0
        while True:
            event = await self.channel.next_event()
            try:
                match event:
                    case MessageChunkReceived(message_id=mid, offset=offset, data=data):
                        if message_id is None:
                            message_id, content_type = mid, event.content_type
                        elif mid != message_id:
                            continue  # one file per session (RFC 5547 §8.4)
                        if batch and (offset != batch_at + len(batch) or len(batch) >= WRITE_BATCH):
                            await to_disk(receiver.receive, batch_at, bytes(batch), event.total)
                            batch.clear()
                        if not batch:
                            batch_at = offset
                        batch += data
                    case MessageReceived(message_id=mid, size=size) if message_id in (None, mid):
                        message_id = mid
                        upload, self._upload = self._upload, None
                        if upload is None:  # already settled: a second file (RFC 5547 §8.4)
                            self._complete(event, 413, "one file per session")
                            continue
                        # From here the store runs to its end even if a BYE cancels us: a
                        # file whose last chunk arrived is kept and indexed, never half.
                        commit = functools.partial(
                            finish_and_commit,
                            receiver,
                            upload,
                            (batch_at, bytes(batch)),
                            size,
                            self._meta(content_type),
                        )
                        settling = self.files.settle(commit, upload)
                        batch.clear()
                        try:
                            verdict = await asyncio.shield(settling)
                        except Exception:  # noqa: BLE001 - our bug, logged by FileStore.settle
                            self._complete(event, 500, "internal error")
                            return self._failed("internal error while storing")
                        self._complete(event, verdict.status, verdict.comment)
                        if verdict.stored is None:
                            return self._failed(verdict.comment or str(verdict.status))
                        self.stored = verdict.stored
                        self.transfers += 1
                        self.outcome = "stored"
                    case MessageAborted(message_id=mid, reason=reason) if message_id in (None, mid):
                        if self.outcome == "stored":
                            continue  # a hold that expired while storing: the file is kept
                        return self._failed(f"aborted: {reason}")
                    case MessageReceived(awaiting_completion=True):
                        self._complete(event, 413, "one file per session")  # RFC 5547 §8.4
                    case ProtocolError(status=status, reason=reason):
                        # A chunk we refused (413 past the cap, before any byte was taken):
                        # the core answered it; the transfer cannot complete.
                        return self._failed(f"refused {status}: {reason}")
                    case ConnectionFailed(reason=reason):
                        if self.outcome == "stored":
                            return reason
                        return self._failed(f"connection ended: {reason}")
                    case _:
                        pass
            except (FileTransferError, SpoolError, OSError) as exc:
                return self._failed(str(exc))

    def _complete(self, event: MessageReceived, status: int, comment: str | None = None) -> None:
        """Answer the held last chunk now that the file is checked (and stored, for 200)."""
        if event.awaiting_completion:
            self.channel.complete_message(event.message_id, status, comment)

    def _meta(self, content_type: str | None) -> FileMeta:
        selector = self.transfer.selector
        return FileMeta(
            name=selector.name or "file",
            content_type=selector.type or content_type or "application/octet-stream",
            sender=self.sender,
            date=self.files.clock().isoformat(),
        )

    def _failed(self, reason: str) -> str:
        self.outcome = f"failed: {reason}"
        log.info("file transfer %s failed: %s", self.channel.session_id, reason)
        self._discard()
        return self.outcome

    def _discard(self) -> None:
        # Deleting one temporary file; also reached from close() while the task is being
        # cancelled, where awaiting the disk thread is no longer possible.
        upload, self._upload = self._upload, None
        if upload is not None and not upload.done:
            upload.discard()

    # ---- pull: we send -----------------------------------------------------------------

    async def _send(self, stored: StoredFile) -> str:
        """Send the stored file (or the requested range) as one message, chunk by chunk."""

        def check(event: object) -> None:
            failure = self._send_failure(event)
            if failure:
                raise SendFailed(failure)

        try:
            chunks = await send_stored(
                self.channel, self.files, stored, check=check, file_range=self.transfer.range
            )
        except SendFailed as exc:
            return self._failed(exc.reason)
        self.transfers += 1
        self.outcome = "sent"
        log.info("sent %s (%d chunks) to %s", stored.file_id, chunks, self.sender)
        while True:  # the receiver ends the session (BYE) when it has the file
            failure = self._send_failure(await self.channel.next_event())
            if failure:
                return failure

    @staticmethod
    def _send_failure(event: object) -> str | None:
        match event:
            case ResponseReceived(status=status, comment=comment) if status != 200:
                return f"chunk answered {status} {comment or ''}".strip()
            case TransactionTimedOut():
                return "chunk not answered"
            case ConnectionFailed(reason=reason):
                return reason
        return None

    def close_now(self) -> None:
        """Close at once (also from a task being cancelled): no half-received file stays."""
        self._discard()
        self._leg.close()

    async def close(self) -> None:
        self.close_now()

    @classmethod
    def open(
        cls,
        transport: MsrpTransport,
        store: FileStore,
        offer: sdp.SessionDescription,
        index: int,
        *,
        sender: str,
    ) -> MsrpFileStream | None:
        """Answer one m-line carrying a=file-selector (RFC 5547 §8.2, §8.3); ``None`` refuses
        it (port 0): a malformed file attribute, a direction that is neither push nor pull, a
        pull of a file ``store`` does not have, a push over its size cap. ``sender`` (the
        caller's URI) is recorded with a pushed file. Call :meth:`FileStore.settled` first, so
        a pull sees every file whose last chunk arrived."""
        media = offer.media[index]
        try:
            transfer = parse_file_transfer(media)
        except FileSelectorError as exc:
            log.info("unusable file-transfer m-line: %s", exc.reason)
            return None
        opened = read_msrp_offer(offer, index)
        if transfer is None or opened is None:
            return None
        theirs = opened.offered
        serve: StoredFile | None = None
        selector = transfer.selector
        if theirs.direction is Direction.SENDONLY:
            refused = None if selector.size is None else store.refusal(selector.size)
            if refused is not None:
                log.info("file push refused: %s", refused)
                return None
            if transfer.range is not None and (
                transfer.range.start != 1
                or (transfer.range.stop is not None and transfer.range.stop != selector.size)
            ):
                log.info("partial file push refused")  # a part is no file to store
                return None
        elif theirs.direction is Direction.RECVONLY:
            serve = store.find(selector.sha1_hex) if selector.sha1_hex else None
            if serve is None or not selector.matches(
                serve.name, serve.content_type, serve.size, serve.sha1_bytes
            ):
                log.info("file pull of %s: no such file", selector.sha1_hex)
                return None
            if transfer.range is not None and transfer.range.offset > serve.size:
                return None
        else:
            return None
        leg = MsrpLeg.open(
            transport,
            opened,
            accept_types=("*",),
            deliver_chunks=serve is None,
            max_message_size=store.spool.max_file_bytes,
        )
        if leg is None:
            return None
        return cls(index, store, leg, transfer, sender=sender, serve=serve)


def _discard_begun(begun: asyncio.Future[Upload]) -> None:
    if not begun.cancelled() and begun.exception() is None:
        begun.result().discard()


def _answer(stream: MsrpFileStream) -> sdp.Accept:
    """Our m-line: the selector of the file we serve (pull) or the one offered (push)."""
    transfer = stream.transfer
    if stream.serve is not None:
        served = stream.serve
        selector = selector_for(served.name, served.content_type, served.size, served.sha1_bytes)
        direction = Direction.SENDONLY
    else:
        selector = transfer.selector
        direction = Direction.RECVONLY
    extra = file_transfer_attributes(
        selector,
        transfer_id=transfer.transfer_id,
        disposition=transfer.disposition,
        date=transfer.date,
        file_range=transfer.range,
    )
    return accept_msrp(
        stream.channel.local_uri,
        ("*",),
        max_size=stream.files.spool.max_file_bytes if stream.serve is None else None,
        setup=stream.setup,
        direction=direction,
        extra=extra,
    )
