"""Echo's file transfer (RFC 5547): a pushed file is stored in the spool, a pulled one served.

- **Push** (``sendonly`` offer with ``a=file-selector``, RFC 5547 §8, §9.1): we answer
  ``recvonly``, receive the file as one MSRP message whose chunks go straight to a temporary
  file in the spool, check its size and SHA-1 against the selector when the last chunk arrives
  (§8.4), and only then move it into place under a name we choose. The MSRP core holds the
  response to that last chunk (and the success REPORT) until we have checked and stored the
  file: the sender's 200 means the file is in the spool, and a short file or a hash mismatch is
  answered 400 on the wire instead (RFC 4975 §7.1.1, §7.1.2). A transfer that is aborted
  (``#``, RFC 4975 §7.1), cut off, over the size cap or whose hash does not match leaves
  nothing behind, and we end the session (the MSRP session closes and, when nothing else is
  live in the call, a BYE follows): the sender learns the transfer failed.
- **Pull** (``recvonly`` offer whose selector names the hash, §8.4, §9.2): when the spool holds
  a file with that SHA-1 (and any other part of the selector fits) we answer ``sendonly`` with
  the file's full selector and send it; otherwise the stream is rejected (port 0, §8.2).

A transfer runs in the place of a chat stream of :class:`~control.echo.app.EchoCall`, so
re-INVITEs, BYE and the call's limit treat both alike. The files index lives in memory (loaded
at start-up); disk work during a call goes through :func:`~control.files.spool.to_disk`.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import functools
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

from control.files.spool import FileMeta, FileSpool, SpoolError, StoredFile, Upload, to_disk
from control.msrp.cpim import CpimAddress
from control.msrp.errors import MsrpError
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
from control.msrp.filetransfer import FileReceiver, FileSender, FileTransferError
from control.msrp.message import Flag
from control.msrp.sdp import MsrpMedia, Setup, accept_msrp, answer_setup, parse_msrp_media
from control.msrp.session import RandomSource, make_ident
from control.msrp.transport import MsrpChannel, MsrpConnectError, MsrpTransport
from control.sip import sdp
from control.sip.errors import SipError
from control.sip.sdp import Direction

from .chat import EchoChat

__all__ = ["EchoFileTransfer", "EchoFiles"]

log = logging.getLogger("chorus.echo.files")

Clock = Callable[[], _dt.datetime]

WRITE_BATCH = 1024 * 1024
"""Contiguous received bytes gathered before one trip to the disk thread."""


def _utc_now() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


def _read_at(handle: BinaryIO, offset: int, size: int) -> bytes:
    return os.pread(handle.fileno(), size, offset)


class EchoFileTransfer(EchoChat):
    """One file-transfer stream of an echo call: a push we receive or a pull we serve.

    It stands where a chat stream stands (same ``channel``, ``run``, ``fits``, ``close``), so
    the call's stream handling needs nothing new. ``outcome`` says how it ended: ``stored``,
    ``sent``, or ``failed: <why>``.
    """

    def __init__(
        self,
        files: EchoFiles,
        channel: MsrpChannel,
        offered: MsrpMedia,
        setup: Setup | None,
        transfer: FileTransferOffer,
        *,
        service: CpimAddress,
        caller: CpimAddress,
        serve: StoredFile | None,
    ) -> None:
        super().__init__(channel, offered, setup, service=service, caller=caller)
        self.files = files
        self.transfer = transfer
        self.serve = serve
        self.outcome: str | None = None
        self.stored: StoredFile | None = None
        self._upload: Upload | None = None

    def fits(self, offered: MsrpMedia, setup: Setup | None) -> bool:
        """A re-offer of the same transfer (RFC 5547 §8.1: same a=file-transfer-id)."""
        return super().fits(offered, setup) and offered.direction == self.offered.direction

    def same_transfer(self, transfer: FileTransferOffer) -> bool:
        return (
            transfer.transfer_id == self.transfer.transfer_id
            and transfer.selector == self.transfer.selector
        )

    async def run(self) -> str:
        try:
            await self.channel.wait_connected()
        except MsrpConnectError as exc:
            log.info("echo file %s did not connect: %s", self.channel.session_id, exc)
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
                        except Exception:  # noqa: BLE001 - our bug, logged by EchoFiles.settle
                            self._complete(event, 500, "internal error")
                            return self._failed("internal error while storing")
                        self._complete(event, verdict.status, verdict.comment)
                        if verdict.stored is None:
                            return self._failed(verdict.comment or str(verdict.status))
                        self.stored = verdict.stored
                        self.echoed += 1
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
            sender=self.caller.uri,
            date=self.files.clock().isoformat(),
        )

    def _failed(self, reason: str) -> str:
        self.outcome = f"failed: {reason}"
        log.info("echo file transfer %s failed: %s", self.channel.session_id, reason)
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
        sender = FileSender(
            stored.size, chunk_size=self.files.chunk_size, file_range=self.transfer.range
        )
        message_id = make_ident(self.files.random)
        try:
            handle = await to_disk(self.files.spool.open_read, stored)
        except OSError as exc:
            return self._failed(f"cannot read {stored.file_id}: {exc}")
        chunks = 0
        try:
            for piece in sender.pieces():
                data = await to_disk(_read_at, handle, piece.offset, piece.length)
                if len(data) != piece.length:
                    return self._failed(f"{stored.file_id} shrank on disk")
                self.channel.send_chunk(
                    message_id,
                    stored.content_type,
                    data,
                    offset=piece.offset,
                    total=stored.size,
                    flag=Flag.END if piece.last else Flag.CONTINUE,
                )
                chunks += 1
                await self.channel.drain()
                for event in self.channel.events():
                    failure = self._send_failure(event)
                    if failure:
                        return self._failed(failure)
        except MsrpConnectError as exc:
            return self._failed(str(exc))
        finally:
            handle.close()
        self.echoed += 1
        self.outcome = "sent"
        log.info("echo sent %s (%d chunks) to %s", stored.file_id, chunks, self.caller.uri)
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

    def close(self) -> None:
        self._discard()
        super().close()


def _discard_begun(begun: asyncio.Future[Upload]) -> None:
    if not begun.cancelled() and begun.exception() is None:
        begun.result().discard()


@dataclass(frozen=True, slots=True)
class Verdict:
    """How a completed push ended: the status for its held last chunk, and the file if kept."""

    status: int
    comment: str | None = None
    stored: StoredFile | None = None


def finish_and_commit(
    receiver: FileReceiver,
    upload: Upload,
    batch: tuple[int, bytes],
    size: int,
    meta: FileMeta,
) -> StoredFile:
    """The last bytes, the size and SHA-1 check, and the commit, in one trip to the disk
    thread (fsync, sidecar, rename: :meth:`~control.files.spool.Upload.commit`)."""
    offset, data = batch
    if data:
        receiver.receive(offset, data, size)
    result = receiver.finish(size)
    return upload.commit(meta, result.sha1_hex)


class EchoFiles:
    """Echo's side of RFC 5547: the spool, the index of stored files, the offer decisions.

    Constructing it prepares the spool (removing what a crash left) and loads the index: both
    are start-up work, done once before the server takes calls.
    """

    def __init__(
        self,
        spool: FileSpool,
        *,
        chunk_size: int = 256 * 1024,
        clock: Clock = _utc_now,
        random: RandomSource = os.urandom,
    ) -> None:
        self.spool = spool
        self.chunk_size = chunk_size
        self.clock = clock
        self.random = random
        spool.prepare()
        self._by_sha1: dict[str, StoredFile] = {}
        self._settling: set[asyncio.Task[Verdict]] = set()
        for stored in spool.files():  # the index is rebuilt from the sidecars on every start
            self.add(stored)

    def add(self, stored: StoredFile) -> None:
        self._by_sha1[stored.sha1] = stored

    def settle(self, commit: Callable[[], StoredFile], upload: Upload) -> asyncio.Task[Verdict]:
        """Check, store and index a completed push (``commit``, blocking: it runs in the disk
        thread) as one task that nothing cancels.

        The transfer awaits it through :func:`asyncio.shield`: a BYE that cancels the transfer
        while the disk thread commits the file no longer stops between the rename and the
        index update (the file would be on disk and unknown until a restart). The task is kept
        here until done, so it is neither collected nor forgotten; :meth:`settled` waits for
        such tasks (a pull that arrives meanwhile, shutdown).
        """
        task = asyncio.create_task(self._settle(commit, upload))
        self._settling.add(task)
        task.add_done_callback(self._settled)
        return task

    def _settled(self, task: asyncio.Task[Verdict]) -> None:
        self._settling.discard(task)
        error = None if task.cancelled() else task.exception()
        if error is not None:  # a bug (expected failures are verdicts): once, whoever waits
            log.error("echo file store failed: %r", error, exc_info=error)

    async def _settle(self, commit: Callable[[], StoredFile], upload: Upload) -> Verdict:
        try:
            stored = await to_disk(commit)
        except FileTransferError as exc:
            # 400 "truncated" / hash mismatch, 413 past the cap: answered on the wire.
            return Verdict(exc.status, exc.reason)
        except (SpoolError, OSError) as exc:
            # The file was fine; we could not keep it. 413: "stop sending" (RFC 4975 §7.3) is
            # the refusal that does not blame the sender.
            log.warning("echo could not store a file: %s", exc)
            return Verdict(413, "cannot store the file")
        finally:
            if not upload.done:  # anything else (a bug, logged in _settled) leaves no file
                upload.discard()
        self.add(stored)
        log.info(
            "echo stored %s (%d bytes, sha1 %s) from %s",
            stored.file_id,
            stored.size,
            stored.sha1,
            stored.sender,
        )
        return Verdict(200, None, stored)

    async def settled(self) -> None:
        """Wait until every push that completed has been stored and indexed (or refused)."""
        while self._settling:
            await asyncio.wait(set(self._settling))

    def find(self, sha1_hex: str) -> StoredFile | None:
        return self._by_sha1.get(sha1_hex.lower())

    def negotiate(
        self,
        transport: MsrpTransport,
        offer: sdp.SessionDescription,
        stream: sdp.MediaDescription,
        existing: EchoChat | None,
        *,
        service: CpimAddress,
        caller: CpimAddress,
    ) -> tuple[sdp.Accept | sdp.Reject, EchoChat | None]:
        """Accept or reject one m-line carrying a=file-selector (RFC 5547 §8.2, §8.3).

        A malformed file attribute, a direction that is neither push nor pull, a pull of a
        file we do not have or a push over the size cap rejects the stream (port 0); the call
        gets 488 from echo when nothing else in it is usable.
        """
        try:
            theirs = parse_msrp_media(stream, offer.direction_of(stream))
            transfer = parse_file_transfer(stream)
        except (SipError, FileSelectorError) as exc:
            log.info("unusable file-transfer m-line: %s", exc.reason)
            return sdp.Reject(), None
        if transfer is None or theirs.setup is Setup.HOLDCONN:
            return sdp.Reject(), None
        setup, active = answer_setup(theirs.setup)
        if (
            isinstance(existing, EchoFileTransfer)
            and existing.fits(theirs, setup)
            and existing.same_transfer(transfer)
        ):
            return self._accept(existing, theirs, setup), existing
        serve: StoredFile | None = None
        selector = transfer.selector
        if theirs.direction is Direction.SENDONLY:
            if selector.size is not None and selector.size > self.spool.max_file_bytes:
                log.info("file push of %d bytes over the cap", selector.size)
                return sdp.Reject(), None
            if transfer.range is not None and (
                transfer.range.start != 1
                or (transfer.range.stop is not None and transfer.range.stop != selector.size)
            ):
                log.info("partial file push refused")  # a part is no file to store
                return sdp.Reject(), None
        elif theirs.direction is Direction.RECVONLY:
            serve = self.find(selector.sha1_hex) if selector.sha1_hex else None
            if serve is None or not selector.matches(
                serve.name, serve.content_type, serve.size, serve.sha1_bytes
            ):
                log.info("file pull of %s: no such file", selector.sha1_hex)
                return sdp.Reject(), None
            if transfer.range is not None and transfer.range.offset > serve.size:
                return sdp.Reject(), None
        else:
            return sdp.Reject(), None
        if not active and transport.listener(theirs.secure) is None:
            return sdp.Reject(), None
        try:
            channel = transport.open(
                transport.local_uri(theirs.secure),
                theirs.path,
                active=active,
                accept_types=("*",),
                deliver_chunks=serve is None,
                max_message_size=self.spool.max_file_bytes,
            )
        except MsrpError as exc:
            log.info("cannot open a file-transfer session: %s", exc)
            return sdp.Reject(), None
        transfer_stream = EchoFileTransfer(
            self,
            channel,
            theirs,
            setup,
            transfer,
            service=service,
            caller=caller,
            serve=serve,
        )
        return self._accept(transfer_stream, theirs, setup), transfer_stream

    def _accept(
        self, stream: EchoFileTransfer, theirs: MsrpMedia, setup: Setup | None
    ) -> sdp.Accept:
        transfer = stream.transfer
        if stream.serve is not None:
            served = stream.serve
            selector = selector_for(
                served.name, served.content_type, served.size, served.sha1_bytes
            )
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
            max_size=self.spool.max_file_bytes if stream.serve is None else None,
            setup=setup,
            direction=direction,
            extra=extra,
        )
