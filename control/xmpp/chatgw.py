"""The asyncio glue of one-to-one chat sessions (RFC 7573) over the sans-IO table of
control/xmpp/chatsession.py: INVITEs and MSRP through the stream layer, chat messages through
the component.

- A SIP INVITE to an XMPP address with an MSRP chat m-line is answered at once through the
  stream layer (control/xmpp/chatleg.py; every MSRP message checked before its 200 — 415/413/
  400 for what XMPP cannot carry, 403 while the XMPP server is away); 488 without a usable
  chat m-line, 486 at ``max_chat_sessions``, 503 while the XMPP server is away. Its
  re-INVITEs (session refreshes) keep the MSRP session.
- An XMPP chat message that starts a session (``[xmpp] chat_sessions``) sends an INVITE with
  one MSRP chat m-line (chatleg.call_chat) under ``send_timeout``.
- MSRP messages become chat messages (control/xmpp/messages.chat_from_sip); XMPP messages go
  over MSRP as the peer's accept-types allow (chatsession.msrp_content). An MSRP SEND the SIP
  side refuses (a non-200 or no answer) is answered to the XMPP sender as an error stanza.
- Receipts: an XMPP message that asks for one (XEP-0184) gets it once the SIP user's MSRP
  endpoint has answered 200 to its last chunk; a SIP user's CPIM message asking for delivery
  notifications (RFC 5438) goes with a receipt request, and the XMPP receipt (or error) comes
  back over the session's MSRP as the *delivered* (or *failed*) IMDN.
- The end, whoever caused it: the MSRP session closed, the dialog BYEd toward SIP when it is
  still up, ``gone`` sent to XMPP unless XMPP left (gone / unavailable) or the XMPP server
  connection was lost (every session ends then). One ``call_at`` timer
  at the table's next idle deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

from control.app import IncomingCall, ReOffer, on_reoffer
from control.msrp.cpim import CpimAddress
from control.msrp.errors import MsrpError
from control.msrp.events import (
    ConnectionFailed,
    MessageReceived,
    ResponseReceived,
    TransactionTimedOut,
)
from control.msrp.transport import MsrpConnectError, MsrpTransport
from control.sip.errors import SipError
from control.sip.session import Session
from control.sip.uri import SipUri
from control.sip.useragent import UserAgent
from control.xmpp.addressing import Addressing, AddressRefused, Jid
from control.xmpp.chatleg import CHUNK_SIZE, ChatLeg, answer_chat, call_chat, reanswer
from control.xmpp.chatsession import (
    ChatSession,
    ChatSessions,
    Origin,
    Routed,
    SessionKey,
    SessionsFull,
    SessionState,
    msrp_content,
)
from control.xmpp.component import Component, XmppMessage
from control.xmpp.errors import StanzaRefused
from control.xmpp.messages import Chat, MessageRefused, chat_from_sip
from control.xmpp.receipts import (
    ImdnRequest,
    ReceiptBook,
    delivery_notification,
    imdn_request_of,
)

__all__ = ["ChatSessionGateway"]

log = logging.getLogger("chorus.xmpp.chat")

RETRY_AFTER = ("Retry-After", "5")  # while the XMPP server is away (as control/xmpp/app.py's)
_MSRP_STATUS = {400: 400, 413: 413, 415: 415}  # MessageRefused's SIP status -> MSRP status


@dataclass(slots=True)
class _Sent:
    """An XMPP message sent over a session's MSRP: who to tell when it is answered, and how
    many of its chunks still wait for their 200."""

    sender: Jid
    id: str
    receipt: bool
    chunks: int


@dataclass(slots=True)
class _Link:
    """The I/O of one session: the SIP dialog, the MSRP channel, what was sent over it."""

    core: ChatSession
    sip_user: SipUri  # the SIP user (the To of our INVITE, the From of theirs)
    xmpp_user: SipUri  # the XMPP user as a SIP URI
    leg: ChatLeg = field(default_factory=ChatLeg)  # the dialog, the MSRP channel
    sent: dict[str, _Sent] = field(default_factory=dict)  # MSRP Message-ID -> the stanza
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    cancel: asyncio.Future[object] | None = None  # done: CANCEL our INVITE (place_call)


def _plain(uri: SipUri) -> SipUri:
    """The address without parameters (a GRUU's ``gr`` stays in the JID resource)."""
    return SipUri(host=uri.host, user=uri.user, port=uri.port, scheme=uri.scheme)


class ChatSessionGateway:
    """The sessions of one gateway (module doc)."""

    def __init__(
        self,
        ua: UserAgent,
        component: Component,
        addressing: Addressing,
        msrp: MsrpTransport,
        *,
        chat_sessions: bool,
        idle: float,
        limit: int,
        max_message_bytes: int,
        invite_timeout: float,
    ) -> None:
        self.ua = ua
        self.component = component
        self.addressing = addressing
        self.msrp = msrp
        self.chat_sessions = chat_sessions
        self.max_message_bytes = max_message_bytes
        self.invite_timeout = invite_timeout
        self.table = ChatSessions(limit=limit, idle=idle)
        self._links: dict[SessionKey, _Link] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._inviting: set[asyncio.Task[None]] = set()
        # stanza id of a SIP user's message sent to XMPP -> its session and IMDN request
        self._imdn: ReceiptBook[tuple[SessionKey, ImdnRequest | None]] = ReceiptBook(limit * 10)
        self._closing = False

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    # SIP → XMPP: an INVITE -------------------------------------------------------------

    async def incoming_invite(self, call: IncomingCall) -> None:
        caller = call.remote_identity.uri
        try:
            xmpp_user, sip_user = self.addressing.call_parties(call.request_uri, caller)
        except AddressRefused as exc:
            log.info("chat INVITE to %s refused: %s", call.request_uri, exc.reason)
            call.reject(exc.sip_status, exc.reason[:80])
            return
        if not self.component.connected:
            # Retry-After as for MESSAGE and SUBSCRIBE (RFC 3261 §21.5.4): it is reconnecting
            call.reject(503, "XMPP server unavailable", headers=[RETRY_AFTER])
            return
        key = SessionKey.of(xmpp_user, sip_user)
        if (old := self._links.get(key)) is not None:
            await self._end(old, "replaced by a new INVITE")  # one session per pair
        try:
            core = self.table.open(
                key, Origin.SIP, xmpp_peer=xmpp_user, sip_user=sip_user, now=self._now()
            )
        except SessionsFull as exc:
            call.reject(486, str(exc))
            return
        assert isinstance(caller, SipUri)  # call_parties refused any other
        link = _Link(core, sip_user=_plain(caller), xmpp_user=_plain(call.request_uri))
        self._links[key] = link
        try:
            answer, stream, link.leg = await answer_chat(
                self.msrp, call.offer, rng=self.ua.rng, check=self._check
            )
        except SipError as exc:
            self._forget(link)
            call.reject(exc.status, exc.reason)
            return
        if call.cancelled:
            await stream.close()
            self._forget(link)
            return
        link.leg.dialog = call.accept(answer, user=xmpp_user.local)
        on_reoffer(link.leg.dialog, lambda reoffer: self._reoffer(link, reoffer))
        core.established(now=self._now())
        log.info("chat session %s <-> %s from SIP", caller, xmpp_user)
        self._run(link)

    async def _reoffer(self, link: _Link, reoffer: ReOffer) -> None:
        if await reanswer(link.leg, reoffer):
            link.core.touch(self._now())

    def _check(self, content_type: str | None, body: bytes, cpim: object) -> None:
        """Before an MSRP message is answered 200: XMPP can carry it, and is there."""
        try:
            chat_from_sip(content_type or "text/plain", body, max_bytes=self.max_message_bytes)
        except MessageRefused as exc:
            raise MsrpError(_MSRP_STATUS.get(exc.sip_status, 415), exc.reason[:80]) from None
        if not self.component.connected:
            raise MsrpError(403, "XMPP server unavailable")

    # XMPP → SIP ---------------------------------------------------------------------------

    async def route(self, message: XmppMessage, sender: SipUri, recipient: SipUri) -> bool:
        """Take an XMPP chat message that belongs to a session (an open one, or a new one
        when ``chat_sessions`` is on and it has a body); False leaves it to pager mode."""
        key = SessionKey.of(message.sender, message.recipient)
        link = self._links.get(key)
        if link is not None and link.core.state is SessionState.ENDED:
            link = None  # ending right now (idle): this message is the start of another
            self._links.pop(key, None)
        if link is None:
            if not self.chat_sessions or message.chat.body is None or self._closing:
                return False
            link = self._start(message, key, sender, recipient)
        core = link.core
        receipt = message.receipt_request
        routed = core.from_xmpp(
            message.sender, message.id, message.chat, now=self._now(), receipt=receipt
        )
        if routed is Routed.SEND:
            self._send(link, message.sender, message.id, message.chat, receipt=receipt)
        if message.chat.state == "gone":  # XEP-0085: the XMPP user left the chat
            await self._end(link, "XMPP user gone", tell_xmpp=False)
        self._arm()
        return True

    def _start(
        self, message: XmppMessage, key: SessionKey, sender: SipUri, recipient: SipUri
    ) -> _Link:
        try:
            core = self.table.open(
                key,
                Origin.XMPP,
                xmpp_peer=message.sender,
                sip_user=message.recipient,
                now=self._now(),
            )
        except SessionsFull as exc:
            raise StanzaRefused("resource-constraint", str(exc)) from None
        link = _Link(core, sip_user=recipient, xmpp_user=_plain(sender))
        self._links[key] = link
        link.cancel = asyncio.get_running_loop().create_future()
        task = asyncio.get_running_loop().create_task(self._invite(link))
        self._inviting.add(task)  # not in link.tasks: an end CANCELs it instead
        task.add_done_callback(self._inviting.discard)
        return link

    async def _invite(self, link: _Link) -> None:
        """Our INVITE with one MSRP chat m-line; then what waited goes, or is refused."""
        failure = await call_chat(
            self.ua,
            self.msrp,
            link.leg,
            link.sip_user,
            link.xmpp_user,
            timeout=self.invite_timeout,
            cancel=link.cancel,
            on_dialog=lambda dialog: self._dialog_up(link, dialog),
        )
        if failure is None and link.core.end_reason is not None:
            failure = (487, "the chat ended while ringing")
        if failure is not None:
            status, reason = failure
            for item, refusal in link.core.failed(status, reason):
                self._refuse(link.core.xmpp_peer, link.core.sip_user, item.id, refusal)
            log.info("chat session to %s not set up: %d %s", link.sip_user, status, reason)
            await self._end(link, f"{status} {reason}", tell_xmpp=False)
            if link.leg.dialog is not None:  # a 2xx that crossed our CANCEL
                await link.leg.dialog.bye(reason="chat ended")
            return
        log.info("chat session %s <-> %s from XMPP", link.xmpp_user, link.sip_user)
        for item in link.core.established(now=self._now()):
            self._send(link, link.core.xmpp_peer, item.id, item.chat, receipt=item.receipt)
        self._reader(link)

    def _send(
        self, link: _Link, sender: Jid, id: str, chat: Chat, *, receipt: bool = False
    ) -> None:
        channel = link.leg.channel
        assert channel is not None
        try:
            content = msrp_content(
                chat,
                accept_types=link.leg.accept_types,
                accept_wrapped_types=link.leg.accept_wrapped_types,
                sender=CpimAddress(str(link.xmpp_user)),
                recipient=CpimAddress(str(link.sip_user)),
                now=datetime.now(UTC),
            )
            if content is None:
                return
            content_type, body = content
            message_id = channel.send_message(content_type, body, chunk_size=CHUNK_SIZE)
        except StanzaRefused as refused:
            self._refuse(sender, link.core.sip_user, id, refused)
            return
        except MsrpConnectError:
            refusal = StanzaRefused("recipient-unavailable", "the chat session's MSRP is down")
            self._refuse(sender, link.core.sip_user, id, refusal)
            return
        if id and chat.body is not None:
            chunks = max(1, -(-len(body) // CHUNK_SIZE))
            link.sent[message_id] = _Sent(sender, id, receipt, chunks)

    def xmpp_unavailable(self, sender: Jid) -> None:
        """The XMPP user went offline: its sessions end (RFC 7573)."""
        for core in self.table.of_xmpp_user(sender):
            link = self._links.get(core.key)
            if link is not None:
                self._spawn(link, self._end(link, "XMPP user unavailable", tell_xmpp=False))

    def xmpp_lost(self) -> None:
        """The XMPP server connection is gone: every session ends (BYE toward SIP; no XMPP
        user can be told, or write, until it is back)."""
        for link in list(self._links.values()):
            self._spawn(link, self._end(link, "XMPP server lost", tell_xmpp=False))

    # Both ways: the session's life ------------------------------------------------------

    def _run(self, link: _Link) -> None:
        assert link.leg.dialog is not None
        self._watch(link, link.leg.dialog)
        self._reader(link)
        self._arm()

    def _dialog_up(self, link: _Link, dialog: Session) -> None:
        """Our INVITE's dialog: watched for BYE, its re-INVITEs answered (refreshes)."""
        self._watch(link, dialog)
        on_reoffer(dialog, lambda reoffer: self._reoffer(link, reoffer))

    def _watch(self, link: _Link, dialog: Session) -> None:
        def ended(_: object) -> None:
            if link.core.end_reason is None:
                self._spawn(link, self._end(link, "SIP BYE"))

        dialog.terminated.add_done_callback(ended)

    def _reader(self, link: _Link) -> None:
        self._spawn(link, self._read(link))

    async def _read(self, link: _Link) -> None:
        channel = link.leg.channel
        assert channel is not None
        try:
            await channel.wait_connected()
        except (MsrpConnectError, TimeoutError) as exc:
            await self._end(link, f"MSRP not connected: {exc}")
            return
        while True:
            event = await channel.next_event()
            match event:
                case MessageReceived(content_type=content_type, body=body) if body:
                    self._to_xmpp(link, content_type or "text/plain", body)
                case ResponseReceived(message_id=mid, status=status) if mid and status != 200:
                    self._refused_by_sip(link, mid, status)
                case TransactionTimedOut(message_id=mid) if mid:
                    self._refused_by_sip(link, mid, 408)
                case ResponseReceived(message_id=mid) if mid:
                    self._delivered(link, mid)
                case ConnectionFailed(reason=reason):
                    await self._end(link, f"MSRP: {reason}")
                    return

    def _to_xmpp(self, link: _Link, content_type: str, body: bytes) -> None:
        try:
            chat = chat_from_sip(content_type, body, max_bytes=self.max_message_bytes)
        except MessageRefused as exc:  # the offering side has no validator: said once here
            log.info("chat session %s: MSRP message not carried: %s", link.sip_user, exc)
            return
        to = link.core.from_sip(now=self._now())
        self._arm()
        if not self.component.connected:
            log.info("chat session %s: XMPP server away, message not carried", link.sip_user)
            return
        stanza_id = self.ua.token(16)
        imdn = imdn_request_of(content_type, body) if chat.body is not None else None
        if chat.body is not None:  # for an XMPP receipt (RFC 5438 over MSRP) or error
            self._imdn.add(stanza_id, (link.core.key, imdn))
        wanted = imdn is not None and imdn.positive
        self.component.send_chat(to, link.core.sip_user, chat, id=stanza_id, request_receipt=wanted)

    def xmpp_report(self, message: XmppMessage) -> bool:
        """An XMPP receipt (XEP-0184) or error for a message a SIP user sent in a session:
        the IMDN *delivered* or *failed* over the session's MSRP when it asked for one (RFC
        5438 §7.1.1), else for an error a notice in the chat, as pager mode sends a MESSAGE
        (nothing lost silently). False when it is for no such message."""
        of = message.receipt_of if message.type != "error" else message.id
        found = self._imdn.pop(of) if of else None
        if found is None:
            return False
        key, imdn = found
        status = "failed" if message.type == "error" else "delivered"
        link = self._links.get(key)
        if link is None or link.leg.channel is None:
            return True  # the session is over: nowhere to say it
        if imdn is None or not (imdn.negative if status == "failed" else imdn.positive):
            if status == "failed":
                text = f"Message to {link.xmpp_user} not delivered: {message.error_condition}"
                self._write(link, "text/plain; charset=utf-8", text.encode())
            return True
        content_type, body = delivery_notification(
            imdn.message_id,
            status=status,
            sender=link.xmpp_user,
            recipient=link.sip_user,
            notification_id=self.ua.token(16),
            now=datetime.now(UTC),
        )
        self._write(link, content_type, body)
        return True

    def _write(self, link: _Link, content_type: str, body: bytes) -> None:
        """A message of the gateway's own (an IMDN, a notice) over the session's MSRP."""
        assert link.leg.channel is not None
        try:
            link.leg.channel.send_message(content_type, body, chunk_size=CHUNK_SIZE)
        except MsrpConnectError as exc:
            log.info("chat session %s: not sent: %s", link.sip_user, exc)

    def _refused_by_sip(self, link: _Link, message_id: str, status: int) -> None:
        origin = link.sent.pop(message_id, None)
        if origin is not None:
            refusal = StanzaRefused("recipient-unavailable", f"the SIP side answered {status}")
            self._refuse(origin.sender, link.core.sip_user, origin.id, refusal)

    def _delivered(self, link: _Link, message_id: str) -> None:
        """The SIP user's MSRP endpoint answered 200 to the last chunk: it has the message
        (RFC 4975 §7.1.1; a direct session has no relay to answer for it). A receipt, when
        the XMPP sender asked for one (XEP-0184)."""
        origin = link.sent.get(message_id)
        if origin is None:
            return
        origin.chunks -= 1
        if origin.chunks > 0:
            return  # the last chunk's 200 says the whole message is there
        del link.sent[message_id]
        if origin.receipt and self.component.connected:
            to, of = origin.sender, origin.id
            self.component.send_receipt(to, link.core.sip_user, id=self.ua.token(16), of=of)

    def _refuse(self, to: Jid, from_: Jid, id: str, refused: StanzaRefused) -> None:
        log.info("XMPP message from %s refused: %s", to, refused)
        if self.component.connected:
            condition, text = refused.condition, refused.text
            self.component.send_error(to, from_, id=id, condition=condition, text=text)

    async def _end(self, link: _Link, reason: str, *, tell_xmpp: bool = True) -> None:
        """End the session: BYE toward SIP while the dialog is up, ``gone`` toward XMPP
        (unless XMPP left), the MSRP session closed."""
        core = link.core
        first = core.end(reason)
        self._forget(link)
        if not first:
            return
        log.info("chat session %s <-> %s ended: %s", core.sip_user, core.xmpp_peer, reason)
        if link.cancel is not None and not link.cancel.done():
            link.cancel.set_result(None)  # an INVITE still ringing is CANCELled
        if link.leg.channel is not None:
            link.leg.channel.close()
        if tell_xmpp and self.component.connected:
            gone = Chat(state="gone")
            self.component.send_chat(core.xmpp_peer, core.sip_user, gone, id=self.ua.token(16))
        if link.leg.dialog is not None:
            with contextlib.suppress(Exception):
                await link.leg.dialog.bye(reason=reason)
        current = asyncio.current_task()
        for task in list(link.tasks):
            if task is not current:
                task.cancel()

    def _forget(self, link: _Link) -> None:
        self.table.discard(link.core)
        if self._links.get(link.core.key) is link:
            del self._links[link.core.key]
        self._arm()

    def _spawn(self, link: _Link, coro: object) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        link.tasks.add(task)
        task.add_done_callback(link.tasks.discard)

    def _arm(self) -> None:
        """One timer, at the earliest idle deadline of the table."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self.table.next_deadline()
        if deadline is not None and not self._closing:
            self._timer = asyncio.get_running_loop().call_at(deadline, self._idle)

    def _idle(self) -> None:
        self._timer = None
        for core in self.table.expired(self._now()):
            self.table.discard(core)  # now: the next deadline is another session's
            link = self._links.get(core.key)
            if link is not None:
                self._spawn(link, self._end(link, f"idle {self.table.idle:g} s"))
        self._arm()

    async def shutdown(self) -> None:
        self._closing = True
        links = list(self._links.values())
        await asyncio.gather(
            *(self._end(link, "shutdown") for link in links), return_exceptions=True
        )
        if self._inviting:  # CANCELled by the ends above: let them finish, briefly
            await asyncio.wait(set(self._inviting), timeout=2.0)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
