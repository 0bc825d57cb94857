"""The conference application: ad-hoc rooms reached by INVITE (RFC 4353 focus, RFC 4579).

An INVITE to any URI the application map sends here creates that room or joins it. Each
accepted m-line is a stream of :mod:`control.streams` — audio mixed by the AudioEngine, MSRP
chat in the room's chat, MSRP file transfers into and out of the room's files
(:mod:`control.conference.files`) — negotiated by the one routine every application uses, for
the INVITE and every re-INVITE (add or remove chat, audio and files, together or apart).
Screen-sharing frames on a chat stream go to the node's screen board
(:mod:`control.conference.sharing`), never to the chat. SIP MESSAGE to the room (RFC 3428),
in or out of a dialog, is relayed to the chat as a public message. The room ends with its last
participant. An audio-only participant whose RTP stops is ended with BYE; so is one whose only
stream, chat or a file transfer, has ended.

The application is also the web's ``RoomDirectory`` (:meth:`ConferenceApp.room_view`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from control.app import (
    IncomingCall,
    IncomingMessage,
    Referral,
    ReOffer,
    Subscription,
    on_reoffer,
)
from control.media.engine import (
    AudioEngine,
    ParticipantId,
    RoomId,
)
from control.msrp.cpim import CpimMessage
from control.msrp.errors import MsrpError
from control.msrp.transport import MsrpTransport
from control.sip import sdp
from control.sip.errors import SipError
from control.sip.session import Session
from control.sip.uri import SipUri
from control.sip.useragent import UserAgent
from control.store import HistoryStore
from control.streams import (
    Answerer,
    AudioStream,
    ChatOptions,
    MediaKind,
    MsrpChatStream,
    MsrpFileStream,
    Negotiation,
    Stream,
    StreamRequest,
    negotiate,
)

from .chat import ChatCore, ChatLimits, ChatMember, ChatSessionId
from .engineevents import EngineEvents
from .files import ConferenceFiles, FileLinks
from .info import CONFERENCE_INFO_TYPE
from .infonotify import ConferenceInfo
from .infosubs import RoomFileRecord
from .moderation import Moderation, ModerationPolicy
from .participant import Participant, identity_uri
from .refer import ReferPolicy, Referrals
from .room import Room, RoomObserver, room_id_for, room_uri_for
from .roomchat import HistoryPolicy, RoomChat
from .sharing import ConferenceScreens, ScreenLinks
from .view import ConferenceRoomView

log = logging.getLogger("chorus.conference")


class WebLinks(FileLinks, ScreenLinks, Protocol):
    """Every signed URL a room announces (control/web's WebUrls)."""


CHATROOM = ("nickname", "private-messages", "com.ag-projects.screen-sharing")  # RFC 7701 §4
PAGER_TYPES = "message/cpim, text/plain, text/html"
CHAT_LOST_GRACE = 5.0  # seconds a participant whose only stream, chat, was lost may re-offer
CPIM_ENVELOPE = 16 * 1024  # room for a frame's CPIM headers on top of its (base64) JPEG


@dataclass(frozen=True, slots=True)
class ConferenceLimits:
    max_rooms: int = 1000
    max_participants: int = 100
    info_interval: float = 1.0  # seconds between two conference-info NOTIFYs of a subscription
    info_max_subscriptions: int = 100  # conference-info subscriptions per room (503 beyond)


class _ChatCheck:
    """The chat stream's MessageCheck, bound to its session once the stream is open."""

    def __init__(self, room: Room) -> None:
        self.room = room
        self.session: ChatSessionId | None = None

    def __call__(self, content_type: str | None, body: bytes, cpim: object) -> None:
        if self.session is None or self.room.chat is None:
            return
        try:
            self.room.chat.validate(self.session, content_type, body)
        except MsrpError:
            raise
        except Exception as exc:
            # Our bug, not the peer's input: logged once, this message refused, the
            # connection and the room go on.
            log.exception("checking a chat message in %s failed", self.room.id)
            raise MsrpError(400, "message could not be handled") from exc


class ConferenceApp:
    def __init__(
        self,
        ua: UserAgent,
        engine: AudioEngine,
        *,
        address: str,
        limits: ConferenceLimits = ConferenceLimits(),
        room_observer: RoomObserver | None = None,
        msrp: MsrpTransport | None = None,
        store: HistoryStore | None = None,
        chat: ChatLimits = ChatLimits(),
        history: HistoryPolicy = HistoryPolicy(),
        files: ConferenceFiles | None = None,
        screens: ConferenceScreens | None = None,
        moderation: ModerationPolicy = ModerationPolicy(),
        refer: ReferPolicy = ReferPolicy(),
    ) -> None:
        self.ua = ua
        self.engine = engine
        self.address = address
        self.limits = limits
        self.room_observer = room_observer
        self.msrp = msrp
        self.store = store
        self.chat_limits = chat
        self.history = history
        self.files = files
        self.screens = screens
        self.chat_max_size = chat.max_message_bytes
        if screens is not None:  # a frame may be larger than a chat message
            frame = screens.board.limits.max_frame_bytes
            self.chat_max_size = max(self.chat_max_size, (frame + 2) // 3 * 4 + CPIM_ENVELOPE)
        self.rooms: dict[RoomId, Room] = {}
        self.info = ConferenceInfo(
            min_interval=limits.info_interval,
            max_subscriptions=limits.info_max_subscriptions,
            files=self._room_files,
        )
        self.moderation = Moderation(moderation, self)
        self.referrals = Referrals(refer, self)  # REFER to a room (control/conference/refer.py)
        self._events_task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._events_task = asyncio.get_running_loop().create_task(EngineEvents(self).consume())
        if self.screens is not None:
            self.screens.start(self.rooms)
        if self.files is not None:
            self.files.start()

    def publish(self, links: WebLinks) -> None:
        """Announce files and screens with these signed URLs (the web server's, known once
        it is built, which needs this application as its room directory)."""
        if self.files is not None:
            self.files.links = links
        if self.screens is not None:
            self.screens.links = links

    def room_view(self, room: RoomId) -> ConferenceRoomView | None:
        """The live room for the web's room page (control/web/views.py RoomDirectory)."""
        live = self.rooms.get(room)
        return ConferenceRoomView(live) if live is not None else None

    # --- rooms -----------------------------------------------------------------------------

    def _room(self, uri: SipUri) -> Room | None:
        """The room of this URI, created when new; ``None`` when there may be no more rooms."""
        room_id = room_id_for(uri)
        room = self.rooms.get(room_id)
        if room is not None:
            return room
        if len(self.rooms) >= self.limits.max_rooms:
            return None
        room = Room(room_id, uri, max_participants=self.limits.max_participants)
        if self.files is not None:
            room.files = self.files.store(room_id)
        core = ChatCore(room_id, room_uri_for(room_id), room_id.partition("@")[0], self.chat_limits)
        room.chat = RoomChat(
            core,
            store=self.store,
            history=self.history,
            token=lambda: self.ua.token(16),
            on_closed=lambda session: self._chat_closed(room, session),
            screens=lambda member, message: self._screen_frame(room, member, message),
            on_change=room.changed,  # a nickname is the display-text conference-info shows
        )
        self.rooms[room_id] = room
        self.moderation.room_opened(room)
        self._notify_observer(room_id, opened=True)
        return room

    def _drop_if_empty(self, room: Room) -> None:
        if room.empty and self.rooms.get(room.id) is room:
            del self.rooms[room.id]
            if self.screens is not None:
                self.screens.stop_room(room.id)
            room.close()
            self.info.room_ended(room)  # terminated NOTIFYs (RFC 4575 §3: the room is gone)
            self.referrals.room_ended(room)  # its ringing REFER dial-outs are cancelled
            log.info("room %s ended", room.id, extra={"room": room.id})
            self._notify_observer(room.id, opened=False)
            if self.files is not None:
                self.files.room_ended(room, still_gone=lambda: room.id not in self.rooms)

    def _notify_observer(self, room_id: RoomId, *, opened: bool) -> None:
        """An observer's bug is logged and costs nothing: the room goes on either way."""
        if self.room_observer is None:
            return
        try:
            if opened:
                self.room_observer.room_opened(room_id)
            else:
                self.room_observer.room_closed(room_id)
        except Exception:
            action = "open" if opened else "close"
            log.exception("room observer failed on %s of %s", action, room_id)

    def participant(self, room_id: RoomId, participant_id: ParticipantId) -> Participant | None:
        room = self.rooms.get(room_id)
        return room.participants.get(participant_id) if room else None

    # --- joining ---------------------------------------------------------------------------

    async def incoming_invite(self, call: IncomingCall) -> None:
        if self._events_task is None:
            self.start()  # the engine's events are read from the first call on
        uri = call.request_uri
        offer = call.offer
        room = self._room(uri)
        if room is None:
            call.reject(503, "Too many rooms")
            return
        if room.full:
            call.reject(486, "Room is full")
            self._drop_if_empty(room)
            return
        try:  # lock and PIN (control/conference/moderation.py): 403 with the reason
            admission = self.moderation.admit(
                room,
                uri,
                identity_uri(call.remote_identity),
                keypad=self.engine.surfaces_dtmf
                and any(m.media == "audio" and m.port for m in offer.media),
                pin=call.request.headers.get("Pin"),
            )
        except SipError as exc:
            call.reject(exc.status, exc.reason)
            self._drop_if_empty(room)
            return
        participant_id = ParticipantId(self.ua.token(16))
        state = sdp.SdpSession(
            sess_id=self.ua.rng.randrange(1, 2**31), address=self.address, username="chorus"
        )
        sender = identity_uri(call.remote_identity)
        try:
            result = await negotiate(offer, {}, self._answerer(room, participant_id, sender))
        except SipError as exc:
            call.reject(exc.status, exc.reason)
            self._drop_if_empty(room)
            return
        if not result.accepted:
            call.reject(488, "no acceptable stream")
            self._drop_if_empty(room)
            return
        answer = state.answer_body(offer, result.decisions)
        if call.cancelled or call.answered:
            await result.abort()
            self._drop_if_empty(room)
            return
        if admission.awaiting_pin and any(
            s.kind is MediaKind.AUDIO for s in result.streams.values()
        ):  # held before the answer: none of its RTP is mixed, none of the room's sent
            await self.engine.set_muted(room.id, participant_id, True)
            await self.engine.set_deaf(room.id, participant_id, True)
        session = call.accept(answer, user=uri.user)
        participant = Participant(
            participant_id, call.remote_identity, session, state, result.streams, result.decisions
        )
        participant.role = admission.role
        participant.awaiting_pin = admission.awaiting_pin
        await self.attend(room, participant, result)

    async def attend(self, room: Room, participant: Participant, result: Negotiation) -> None:
        """A participant whose answer was sent (in our 200, or in the ACK of a REFER's
        dial-out): in the room until its session ends."""
        await result.commit()
        room.add(participant)
        await self.moderation.joined(room, participant)
        self._files_started(room, participant, result.created)
        on_reoffer(participant.session, lambda reoffer: self._reinvite(room, participant, reoffer))
        try:
            reason = await participant.session.terminated
            log.info(
                "%s left %s: %s",
                participant.identity.uri,
                room.id,
                reason,
                extra={"room": room.id, "call_id": participant.session.dialog.call_id},
            )
        finally:
            await self._leave(room, participant)

    def answerer(self, room: Room, participant_id: ParticipantId, sender: str) -> Answerer:
        """What a new participant's offer is answered with (a REFER's dial-out too)."""
        return self._answerer(room, participant_id, sender)

    def _answerer(
        self,
        room: Room,
        participant_id: ParticipantId,
        sender: str,
        finished: Collection[str] = (),
    ) -> Answerer:
        """What the room takes per new m-line: one audio stream, one chat stream, file
        transfers (``sender`` is the caller's identity, recorded with a pushed file)."""

        async def answer(request: StreamRequest) -> Stream | None:
            match request.kind:
                case MediaKind.AUDIO:
                    return await AudioStream.open(self.engine, room.id, participant_id, request)
                case MediaKind.CHAT if self.msrp is not None and not request.has_other(
                    MediaKind.CHAT
                ):
                    check = _ChatCheck(room)
                    options = ChatOptions(
                        accept_types=("message/cpim",),
                        accept_wrapped_types=("*",),
                        chatroom=CHATROOM,
                        max_size=self.chat_max_size,
                        nicknames=True,
                        check=check,
                    )
                    stream = MsrpChatStream.open(self.msrp, request.offer, request.index, options)
                    if stream is not None:
                        check.session = ChatSessionId(stream.channel.session_id)
                    return stream
                case MediaKind.FILE if self.files is not None and self.msrp is not None:
                    return await self.files.open(room, sender, request, finished)
            return None

        return answer

    def _files_started(self, room: Room, participant: Participant, created: list[Stream]) -> None:
        files = [stream for stream in created if isinstance(stream, MsrpFileStream)]
        if files and self.files is not None:
            self.files.started(room, participant, files, self._file_ended)

    def _file_ended(self, room: Room, participant: Participant, stream: MsrpFileStream) -> None:
        """A transfer's MSRP session ended: its m-line is dead. A participant left with no
        stream at all is ended with BYE (after the grace a re-INVITE has, as for chat)."""
        if participant.streams.get(stream.index) is not stream:
            return  # removed by a re-INVITE or the participant's end
        participant.streams.pop(stream.index)
        if stream.transfer.transfer_id is not None:
            participant.finished_transfers.add(stream.transfer.transfer_id)
        self.ua.spawn(stream.close())
        if not participant.streams and room.participants.get(participant.id) is participant:
            self.ua.spawn(self._end_if_still_empty(room, participant))

    def _screen_frame(self, room: Room, member: ChatMember, message: CpimMessage) -> None:
        if self.screens is not None:
            self.screens.frame(room, member, message)

    async def _reinvite(self, room: Room, participant: Participant, reoffer: ReOffer) -> None:
        description = reoffer.offer
        try:
            result = await negotiate(
                description,
                participant.streams,
                self._answerer(
                    room, participant.id, participant.uri, participant.finished_transfers
                ),
            )
        except SipError as exc:
            reoffer.reject(exc.status, exc.reason)
            return
        # A re-offer may leave the session with no stream at all (audio removed, nothing
        # else): the participant stays in the room, and a later re-INVITE adds media again.
        try:
            answer = participant.sdp.answer_body(description, result.decisions)
        except SipError as exc:
            await result.abort()
            reoffer.reject(exc.status, exc.reason)
            return
        reoffer.answer(answer)
        gone = [*result.removed, *result.replaced]
        participant.finished_transfers.update(
            s.transfer.transfer_id
            for s in gone
            if isinstance(s, MsrpFileStream) and s.transfer.transfer_id is not None
        )
        participant.streams = result.streams
        participant.decisions = result.decisions
        room.streams_stopped(participant, gone)
        if self.screens is not None and any(s.kind is MediaKind.CHAT for s in gone):
            self.screens.stop(room.id, participant.id)  # its chat stream carried the frames
        await result.commit()
        await self.moderation.streams_added(room, participant, result.created)
        room.streams_started(participant, result.created)
        self._files_started(room, participant, result.created)

    # --- leaving ---------------------------------------------------------------------------

    async def _release_streams(self, room: Room, participant: Participant) -> None:
        """Close every stream; the participant leaves whatever the engine says (a worker that
        died already freed its ports), logged so a leak is never silent."""
        streams, participant.streams = list(participant.streams.values()), {}
        for stream in streams:
            try:
                await stream.close()
            except Exception:
                log.exception(
                    "closing the %s stream of %s in %s failed",
                    stream.kind.value,
                    participant.id,
                    room.id,
                )

    async def _leave(self, room: Room, participant: Participant) -> None:
        room.remove(participant.id)
        self.moderation.left(participant)
        if self.screens is not None:
            self.screens.stop(room.id, participant.id)
        await self._release_streams(room, participant)
        self._drop_if_empty(room)

    def _chat_closed(self, room: Room, session: ChatSessionId) -> None:
        """A chat session ended on its own (peer gone, dropped for not keeping up): the m-line
        is dead. A participant left with no stream at all is ended with BYE unless a re-INVITE
        brings media back within :data:`CHAT_LOST_GRACE` seconds (a client may close its MSRP
        session just before the re-offer that removes it)."""
        owner = room.chat_owner(session)
        if owner is None:
            return  # removed by a re-INVITE or the participant's end
        participant, index = owner
        participant.streams.pop(index, None)
        if self.screens is not None:
            self.screens.stop(room.id, participant.id)
        if not participant.streams:
            self.ua.spawn(self._end_if_still_empty(room, participant))

    async def _end_if_still_empty(self, room: Room, participant: Participant) -> None:
        await asyncio.sleep(CHAT_LOST_GRACE)
        if room.participants.get(participant.id) is participant and not participant.streams:
            log.info("chat of %s in %s ended, nothing else: BYE", participant.identity.uri, room.id)
            await self._end(participant.session, "chat ended")

    async def _end(self, session: Session, reason: str) -> None:
        await session.bye(reason=reason)

    # --- moderation's host (control/conference/moderation.py ModerationHost) ----------------

    async def mute_audio(self, room: Room, participant: Participant, muted: bool) -> None:
        if participant.stream(MediaKind.AUDIO) is not None:
            await self.engine.set_muted(room.id, participant.id, muted)

    async def hold_audio(self, room: Room, participant: Participant, held: bool) -> None:
        if participant.stream(MediaKind.AUDIO) is not None:
            await self.engine.set_deaf(room.id, participant.id, held)
            await self.engine.set_muted(room.id, participant.id, held or participant.muted)

    async def end_participant(self, participant: Participant, reason: str) -> None:
        await self._end(participant.session, reason)

    def subscription_count(self, room: Room) -> int:
        """Conference-info subscriptions to this room (the admin API shows it)."""
        return self.info.count(room)

    def room_changed(self, room: Room) -> None:
        """A moderation change (lock, PIN, roles, mute, a caller let in): conference-info
        sends its partial documents (most also announce, which tells it; this one is sure)."""
        room.changed()

    # --- SIP MESSAGE (RFC 3428) ------------------------------------------------------------

    async def incoming_message(self, message: IncomingMessage) -> None:
        """To the room of the participant's dialog (RFC 3428 §4: MESSAGE inside a dialog), or
        out of dialog to the room of the Request-URI (only an INVITE opens a room)."""
        room = self._room_of(message.session, message.recipient)
        if room is None or room.chat is None:
            message.reject(404, "No such room")
            return
        sender = message.sender
        uri = sender.uri
        if isinstance(uri, SipUri):  # the identity: no port, parameters or headers
            uri = replace(uri, password=None, port=None, params={}, headers={})
        try:
            status = room.chat.pager(
                str(uri), sender.display_name, message.content_type, message.body
            )
        except SipError as exc:
            headers = []
            if exc.status == 415:
                headers = [("Accept", PAGER_TYPES)]
            elif exc.status == 503:
                headers = [("Retry-After", "1")]  # the sender's rate (RFC 3261 §21.5.4)
            message.reject(exc.status, exc.reason, headers=headers)
            return
        message.accept(status)  # 200 relayed, 202 when no chat session was there (§7)

    # --- other entry points ----------------------------------------------------------------

    async def incoming_subscribe(self, subscription: Subscription) -> None:
        """``Event: conference`` (RFC 4575) on a live room's URI, or inside a participant's
        dialog (RFC 4579 §5.2). A room nobody is in is 404: rooms are ad hoc, made by the
        INVITE that joins them (RFC 4579 §5.1) and gone with their last participant, so a
        watcher neither creates one nor keeps one open (anyone could make rooms at will)."""
        if subscription.package != "conference":
            subscription.bad_event("conference")
            return
        types = subscription.accept_types
        if types and not any(t in (CONFERENCE_INFO_TYPE, "application/*", "*/*") for t in types):
            subscription.reject(406)  # RFC 6665 §4.2.1.1: a body we cannot send
            return
        room = self._room_of(subscription.session, subscription.request_uri)
        if room is None:
            subscription.reject(404, "No such room")
            return
        if self.info.full(room):
            subscription.respond(503, headers=[("Retry-After", "10")])
            log.info("conference-info subscriptions of %s at the limit", room.id)
            return
        notifier = subscription.accept()
        if notifier.fetch:
            notifier.notify(self.info.fetch(room), CONFERENCE_INFO_TYPE)
            return
        self.info.subscribe(room, notifier, notifier)
        notifier.on_refresh = lambda: self.info.refreshed(room, notifier)
        notifier.ended.add_done_callback(lambda _: self.info.unsubscribe(room.id, notifier))

    def _room_files(self, room: Room) -> Sequence[RoomFileRecord]:
        return self.files.files.list(room.id) if self.files is not None else ()

    def _room_of(self, session: Session | None, uri: object) -> Room | None:
        """The room of a participant's dialog (an in-dialog request), else of the URI."""
        if session is not None:
            return next(
                (
                    r
                    for r in self.rooms.values()
                    if any(p.session is session for p in r.participants.values())
                ),
                None,
            )
        if isinstance(uri, SipUri):
            return self.rooms.get(room_id_for(uri))
        return None

    def room_of(self, session: Session | None, uri: object) -> Room | None:
        return self._room_of(session, uri)

    async def incoming_refer(self, referral: Referral) -> None:
        """RFC 4579 §5.5 and §5.11: add (INVITE) or remove (BYE) a participant."""
        await self.referrals.incoming(referral)

    async def shutdown(self) -> None:
        self.info.close()
        self.referrals.close()
        if self.files is not None:
            self.files.stop()
        sessions = [p.session for room in self.rooms.values() for p in room.participants.values()]
        await asyncio.gather(
            *(session.bye(reason="shutdown") for session in sessions), return_exceptions=True
        )
        if self._events_task is not None:
            self._events_task.cancel()
        for room in list(self.rooms.values()):
            room.close()
            if room.files is not None:
                await room.files.settled()  # a push whose last chunk came is kept and indexed
        if self.screens is not None:
            await self.screens.close()
        if self.files is not None:
            await self.files.close()
        await self.engine.close()
        if self.store is not None:
            self.store.close()
