"""Files in a room: the conference's side of :mod:`control.files.rooms` (issue 9, item 1).

- **Upload.** An INVITE, or a re-INVITE of a participant, with a ``sendonly`` file-transfer
  m-line (RFC 5547 §8.2: ``a=file-selector``, ``a=file-transfer-id``) gets a
  :class:`~control.streams.MsrpFileStream` on the room's store; the sender's 200 on the last
  chunk means the file and its row are kept (the stream layer holds it until then). Once
  stored, every chat session of the room gets a ``chorus.Notice: file`` notice with the
  file's name, size, type, SHA-1 and, when the web server is on, its signed download URL —
  the sender's chat too: clients send a file in a session of its own, and the link is the
  sender's to hand on.
- **Pull.** A ``recvonly`` offer whose selector names the hash (§8.4) of a file *this* room
  holds is answered ``sendonly`` with the full selector, and the file is sent chunk by chunk
  from disk (any number of pullers at once, each with its own descriptor). A pull of a file
  not in the room is refused in place (port 0); when the INVITE offered nothing else the whole
  INVITE is refused with :meth:`RoomFiles.explain`'s status: 404 for a file not in the room,
  413 for a push over the file limit or the room's quota, 488 for an unusable m-line.
- **Ends.** A transfer's stream ends when its MSRP session does (the sender or puller hangs
  up, or the transfer failed); the application then drops the m-line's stream and ends a
  session left with nothing (as it does for a lost chat).
- **Policy.** Retention (``[files] retain_max_age``, ``retain_room_bytes``) runs every
  ``[files] retention_interval`` seconds in the disk thread, never at start-up; when the
  room's last participant leaves, after its file streams are closed and every push of the
  room has settled, :meth:`RoomFiles.room_ended` keeps or deletes the room's files
  (``[files] after_room_ends``). A shutdown ends no room: rooms live at a restart keep their
  files whatever the policy says.
- **Push to participants** (``[files] push_to_participants``, as SylkServer's
  ``push_file_transfer``): each file newly stored is offered, in a call of the room's own
  (:func:`~control.streams.fileoffer.push_file`), to every participant with a chat stream but
  the sender (any session of the sender's identity) and transfer-only sessions. At most
  ``[files] push_concurrency`` pushes of a room run at once; a refusal or failure is logged
  once and touches nothing else. Pushes are tasks of the room: its end waits for them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Protocol

from control.files.spool import StoredFile, to_disk
from control.media.engine import RoomId
from control.msrp.fileselector import selector_for
from control.msrp.transport import MsrpTransport
from control.sip.errors import SipError
from control.sip.uri import NameAddr
from control.streams import FileStore, MediaKind, MsrpFileStream, StreamRequest
from control.streams.fileoffer import PushRefused, PushTarget, push_file

from .notices import NoticeKind, shown_text
from .participant import Participant
from .room import Room

if TYPE_CHECKING:  # control.files.rooms reads control.web, which reads this package
    from control.files.rooms import RoomFiles

__all__ = ["ConferenceFiles", "FileLinks", "file_details", "size_text"]

log = logging.getLogger("chorus.conference.files")

StreamEnded = Callable[[Room, Participant, MsrpFileStream], None]


class FileLinks(Protocol):
    """Signed download URLs (control/web's WebUrls)."""

    def file_download(self, room: RoomId, sha1: str) -> str: ...


def size_text(size: int) -> str:
    if size < 1024:
        return f"{size} bytes"
    value, shown = float(size), "bytes"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value, shown = value / 1024, unit
        if value < 1024:
            break
    return f"{value:.1f} {shown}"


def file_details(stored: StoredFile, url: str | None) -> list[tuple[str, str]]:
    """The facts of a file notice, as ``chorus.File-*`` headers (the hash in RFC 5547's
    selector form, what a client puts in the selector of its pull)."""
    digest = selector_for(stored.name, stored.content_type, stored.size, stored.sha1_bytes)
    algorithm, raw = digest.hashes[0]
    details = [
        ("File-Name", stored.name),
        ("File-Type", stored.content_type),
        ("File-Size", str(stored.size)),
        ("File-Hash", f"{algorithm}:{raw.hex(':').upper()}"),
    ]
    if url is not None:
        details.append(("File-URL", url))
    return details


class ConferenceFiles:
    """Every room's file streams on this node, over the node's :class:`RoomFiles`."""

    def __init__(
        self,
        files: RoomFiles,
        msrp: MsrpTransport,
        *,
        retention_interval: float = 3600.0,
        links: FileLinks | None = None,
    ) -> None:
        self.files = files
        self.msrp = msrp
        self.retention_interval = retention_interval
        self.links = links
        self._running: dict[RoomId, set[asyncio.Task[None]]] = {}
        self._retention: asyncio.Task[None] | None = None
        self.stopping = False  # the node shuts down: rooms stop, none *ends* (files stay)
        self._ending: set[asyncio.Task[None]] = set()
        self._pushing: dict[RoomId, asyncio.Semaphore] = {}

    def store(self, room: RoomId) -> FileStore:
        return self.files.store(str(room))

    # ---- streams -------------------------------------------------------------------------

    async def open(
        self,
        room: Room,
        sender: str,
        request: StreamRequest,
        finished: Collection[str] = (),
    ) -> MsrpFileStream | None:
        """The answerer's say on one file m-line (see the module doc). SipError when the
        offer asked for nothing else and the m-line was refused. A re-offer of a transfer in
        ``finished`` (its ``a=file-transfer-id``) is refused in place: RFC 5547 §8.1 names a
        new transfer by a new id, and that one is done."""
        transfer_id = (request.media.get("file-transfer-id") or "").strip()
        if transfer_id and transfer_id in finished:
            log.info("file transfer %s in %s already ended: port 0", transfer_id, room.id)
            return None
        store = room.files if room.files is not None else self.store(room.id)
        await store.settled()  # a pull sees every file whose last chunk arrived
        stream = MsrpFileStream.open(self.msrp, store, request.offer, request.index, sender=sender)
        if stream is not None:
            return stream
        refusal = self.files.explain(str(room.id), request.offer, request.index)
        log.info(
            "file m-line %d from %s in %s refused: %d %s",
            request.index,
            sender,
            room.id,
            refusal.sip_status,
            refusal.reason,
        )
        if request.alone:
            raise SipError(refusal.sip_status, refusal.reason)
        return None

    def started(
        self,
        room: Room,
        participant: Participant,
        streams: list[MsrpFileStream],
        on_ended: StreamEnded,
    ) -> None:
        """File streams of an answer that was sent: run each transfer in a task of the room."""
        loop = asyncio.get_running_loop()
        running = self._running.setdefault(room.id, set())
        for stream in streams:
            task = loop.create_task(
                self._run(room, participant, stream, on_ended),
                name=f"file-{room.id}-{stream.channel.session_id}",
            )
            running.add(task)
            task.add_done_callback(running.discard)

    async def _run(
        self, room: Room, participant: Participant, stream: MsrpFileStream, on_ended: StreamEnded
    ) -> None:
        try:
            outcome = await stream.run()
            log.info(
                "file stream of %s in %s ended: %s (%s)",
                participant.identity.uri,
                room.id,
                stream.outcome,
                outcome,
            )
            if stream.stored is not None:
                self.announce(room, participant, stream.stored)
                if self.files.policy.push_to_participants:
                    self.push(room, participant, stream.stored)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("file stream of %s in %s failed", participant.identity.uri, room.id)
        try:
            on_ended(room, participant, stream)
        except Exception:
            log.exception("file stream end handler of %s failed", room.id)

    def announce(self, room: Room, participant: Participant, stored: StoredFile) -> None:
        """The ``file`` notice to every chat session of the room (see the module doc)."""
        url = self.links.file_download(room.id, stored.sha1) if self.links is not None else None
        detail = f"{shown_text(stored.name)} ({size_text(stored.size)})"
        room.announce(
            NoticeKind.FILE, participant, detail, details=file_details(stored, url), exclude=False
        )

    def push(self, room: Room, sender: Participant, stored: StoredFile) -> None:
        """Offer ``stored`` to every participant it is for (see the module doc), each in a
        task of the room, at most ``[files] push_concurrency`` at once."""
        limit = self._pushing.setdefault(
            room.id, asyncio.Semaphore(self.files.policy.push_concurrency)
        )
        running = self._running.setdefault(room.id, set())
        loop = asyncio.get_running_loop()
        for other in list(room.participants.values()):
            if other.uri == sender.uri or other.transfer_only:
                continue
            if other.stream(MediaKind.CHAT) is None:
                continue
            task = loop.create_task(
                self._push(room, other, stored, limit), name=f"push-{room.id}-{other.id}"
            )
            running.add(task)
            task.add_done_callback(running.discard)

    async def _push(
        self, room: Room, participant: Participant, stored: StoredFile, limit: asyncio.Semaphore
    ) -> None:
        session = participant.session
        ua = session.ua
        # Its Contact; sent where its INVITE came from, unless an outbound proxy routes.
        target = PushTarget(
            session.dialog.remote_target,
            None if ua.outbound_proxy is not None else session.source,
            participant.uri,
        )
        store = room.files if room.files is not None else self.store(room.id)
        async with limit:
            try:
                chunks = await push_file(
                    ua,
                    self.msrp,
                    store,
                    stored,
                    from_=NameAddr(room.uri),
                    target=target,
                    timeout=self.files.policy.push_timeout,
                )
            except PushRefused as exc:
                log.info("push of %s to %s in %s: %s", stored.file_id, target.name, room.id, exc)
                return
            except Exception:
                log.exception("push of %s to %s in %s failed", stored.file_id, target.name, room.id)
                return
        log.info("pushed %s (%d chunks) to %s in %s", stored.file_id, chunks, target.name, room.id)

    # ---- the room's end and retention -----------------------------------------------------

    def room_ended(self, room: Room, *, still_gone: Callable[[], bool]) -> None:
        """The room's last participant left (its streams are closed): in a task of ours
        (:meth:`close` waits for it), :meth:`_room_ended`."""
        task = asyncio.get_running_loop().create_task(
            self._room_ended(room, still_gone=still_gone), name=f"room-ended-{room.id}"
        )
        self._ending.add(task)
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._ending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("applying after_room_ends failed", exc_info=task.exception())

    async def rooms_ended(self) -> None:
        """Wait for the ``after_room_ends`` policy of every room that has ended so far: it
        runs on the spool's worker thread, in real time, after the room left the table."""
        await asyncio.gather(*self._ending, return_exceptions=True)

    async def _room_ended(self, room: Room, *, still_gone: Callable[[], bool]) -> None:
        """Wait for the room's transfers and pushes to settle, then apply ``[files]
        after_room_ends`` — unless ``still_gone()`` says a new room of the same URI has
        started meanwhile (it uses the files)."""
        tasks = self._running.pop(room.id, set())
        self._pushing.pop(room.id, None)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if room.files is not None:
            await room.files.settled()
        if self.stopping or not still_gone():
            return  # a shutdown is no room's end; a new room of the URI uses the files
        deleted = await to_disk(self.files.room_ended, str(room.id))
        if deleted:
            log.info("room %s ended: %d files deleted (after_room_ends)", room.id, deleted)

    def start(self) -> None:
        policy = self.files.policy
        if self._retention is None and (
            policy.retain_max_age is not None or policy.retain_room_bytes is not None
        ):
            self._retention = asyncio.get_running_loop().create_task(
                self._retain(), name="room-files-retention"
            )

    async def _retain(self) -> None:
        """Retention on a timer; the first run one interval after start (start-up deletes
        nothing)."""
        while True:
            await asyncio.sleep(self.retention_interval)
            try:
                deleted = await to_disk(self.files.expire)
            except Exception:
                log.exception("room files retention failed; tried again next interval")
                continue
            if deleted:
                log.info("room files retention deleted %d files", deleted)

    def stop(self) -> None:
        """The node is shutting down: rooms that close now keep their files whatever
        ``after_room_ends`` says (they did not end; they come back after the restart)."""
        self.stopping = True

    async def close(self) -> None:
        self.stopping = True
        if self._retention is not None:
            self._retention.cancel()
            self._retention = None
        tasks = [task for running in self._running.values() for task in running]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._running.clear()
        # A room that ended just before: its policy runs to the end on the open database.
        await self.rooms_ended()
        self.files.close()
