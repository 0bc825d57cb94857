"""RFC 5547 file transfer as the offering side holds it: a room pushes a stored file to one
participant in a call of its own (``[files] push_to_participants``, as SylkServer's
``push_file_transfer``).

- **Offer** (§8.2, §9.1): one ``m=message … TCP/TLS/MSRP *`` line (``TCP/MSRP`` when only the
  msrp listener is configured), ``sendonly``, with ``a=file-selector`` (name, type, size,
  ``hash:sha-1``), a new ``a=file-transfer-id``, ``a=path`` and ``a=accept-types:*``.
  ``a=setup:actpass`` (RFC 6135 §4.2: the offerer lets the answerer choose) when we listen;
  the session is registered passive *before* the INVITE goes out, so an answerer that picks
  ``active`` may connect before its 200 reaches us. An answer of ``passive`` (or none, RFC
  4975 §5.4) makes us connect to its a=path instead. With no listener at all we offer
  ``active`` and always connect.
- **Answer**: a refusal is the INVITE's final status (4xx–6xx), port 0 on the m-line (§8.2),
  or an answer that is not ``recvonly`` or not usable MSRP: logged once by the caller,
  nothing else is touched.
- **Send**: the file goes as one MSRP message, chunk by chunk from disk (one ``pread`` of
  ``chunk_size`` at a time in the disk thread, the transport drained between chunks), never
  the whole file in memory. The transfer is done when every chunk has been answered 200 (the
  last one's 200 means the receiver has the whole message, RFC 4975 §7.1.1); then we send BYE.
- One push runs under ``timeout`` seconds from INVITE to the last 200 (``[files]
  push_timeout``); past it the call is ended.

Pure parts (:func:`push_offer`, :func:`read_push_answer`) are plain functions of SDP; the
asyncio part (:func:`push_file`) is thin over :func:`~control.sip.session.place_call` and
:class:`~control.msrp.transport.MsrpTransport`.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

from control.files.spool import StoredFile, to_disk
from control.msrp.errors import MsrpError, MsrpUsageError
from control.msrp.events import ConnectionFailed, ResponseReceived, TransactionTimedOut
from control.msrp.fileselector import FileRange, file_transfer_attributes, selector_for
from control.msrp.filetransfer import FileSender
from control.msrp.message import Flag
from control.msrp.sdp import MsrpMedia, Setup, msrp_media, offer_is_active, parse_msrp_media
from control.msrp.session import make_ident
from control.msrp.transport import MsrpChannel, MsrpConnectError, MsrpTransport
from control.msrp.uri import MsrpUri
from control.sip import sdp
from control.sip.errors import SipError
from control.sip.sdp import Direction
from control.sip.session import Session, place_call
from control.sip.transport import Peer
from control.sip.uri import NameAddr, Uri
from control.sip.useragent import UserAgent

from .filestore import FileStore

__all__ = [
    "PushRefused",
    "PushTarget",
    "SendFailed",
    "push_file",
    "push_offer",
    "read_push_answer",
    "send_stored",
]

log = logging.getLogger("chorus.streams.fileoffer")


class PushRefused(Exception):
    """The participant did not take the file (or the push could not be made): why, once."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class PushTarget:
    """Where the push goes: the participant's Contact, and the address its INVITE came from
    (``None``: resolve the Contact, through ``[sip] outbound_proxy`` when one is set)."""

    uri: Uri
    peer: Peer | None
    name: str  # for logs: the participant's SIP identity


def push_offer(
    stored: StoredFile,
    local: MsrpUri,
    transfer_id: str,
    state: sdp.SdpSession,
    *,
    setup: Setup = Setup.ACTPASS,
) -> sdp.SessionDescription:
    """The offer of one push (see the module doc): a single sendonly file m-line."""
    selector = selector_for(stored.name, stored.content_type, stored.size, stored.sha1_bytes)
    media = msrp_media(
        local,
        ("*",),
        setup=setup,
        direction=Direction.SENDONLY,
        extra=file_transfer_attributes(selector, transfer_id=transfer_id),
    )
    return state.offer([media])


def read_push_answer(answer: sdp.SessionDescription) -> MsrpMedia:
    """The answerer's m-line of a push; :class:`PushRefused` when it refused or cannot be
    used (port 0, no m-line, not recvonly, not MSRP, no a=path)."""
    if len(answer.media) != 1:
        raise PushRefused(f"answer has {len(answer.media)} m-lines, offer had 1")
    media = answer.media[0]
    if media.rejected:
        raise PushRefused("file m-line refused (port 0)")
    direction = answer.direction_of(media)
    if direction is not Direction.RECVONLY:
        raise PushRefused(f"answer is {direction.value}, not recvonly")
    try:
        return parse_msrp_media(media, direction)
    except SipError as exc:
        raise PushRefused(f"unusable answer: {exc.reason}") from None


def _read_at(handle: BinaryIO, offset: int, size: int) -> bytes:
    return os.pread(handle.fileno(), size, offset)


def _open_channel(
    transport: MsrpTransport, local: MsrpUri, path: tuple[MsrpUri, ...] | None, *, active: bool
) -> MsrpChannel:
    try:
        return transport.open(local, path, active=active, accept_types=("*",))
    except (MsrpError, MsrpUsageError) as exc:
        raise PushRefused(f"cannot open an MSRP session: {exc}") from None


async def push_file(
    ua: UserAgent,
    transport: MsrpTransport,
    store: FileStore,
    stored: StoredFile,
    *,
    from_: NameAddr,
    target: PushTarget,
    timeout: float,
) -> int:
    """Offer ``stored`` to ``target`` and send it; returns the chunks sent. Raises
    :class:`PushRefused` (with why) when it was refused, failed or took over ``timeout``."""
    secure = transport.listener(True) is not None or transport.listener(False) is None
    listening = transport.listener(secure) is not None
    local = transport.local_uri(secure)
    channel: MsrpChannel | None = None
    session: Session | None = None
    try:
        async with asyncio.timeout(timeout):
            if listening:  # an active answerer may connect before its 200 reaches us
                channel = _open_channel(transport, local, None, active=False)
            state = sdp.SdpSession(
                sess_id=ua.rng.randrange(1, 2**31), address=local.host, username="chorus"
            )
            offer = push_offer(
                stored,
                local,
                make_ident(store.random),
                state,
                setup=Setup.ACTPASS if listening else Setup.ACTIVE,
            )
            try:
                session, response = await place_call(
                    ua,
                    target.uri,
                    from_=from_,
                    offer=sdp.serialize(offer),
                    peer=target.peer,
                    timeout=timeout,
                )
            except (OSError, ValueError) as exc:
                raise PushRefused(f"cannot reach {target.uri}: {exc}") from None
            if session is None:
                raise PushRefused(f"INVITE answered {response.status} {response.reason}")
            try:
                theirs = read_push_answer(sdp.parse(response.body))
            except sdp.SdpError as exc:
                raise PushRefused(f"unusable answer: {exc}") from None
            if theirs.secure != secure:
                raise PushRefused("answer changed the MSRP transport")
            we_connect = not listening or offer_is_active(theirs.setup)
            if channel is not None and (we_connect or channel.closed):
                channel.close()  # we connect after all, or it timed out while ringing
                channel = None
            if channel is None:
                channel = _open_channel(transport, local, theirs.path, active=we_connect)
            else:
                channel.set_remote_path(theirs.path)
            try:
                await channel.wait_connected()
            except MsrpConnectError as exc:
                raise PushRefused(f"MSRP not connected: {exc}") from None
            chunks = await _send(channel, store, stored)
        return chunks
    except TimeoutError:
        raise PushRefused(f"not done in {timeout:g} s") from None
    finally:
        if channel is not None:
            channel.close()
        if session is not None:
            await session.bye(reason="file pushed")


class SendFailed(Exception):
    """Sending a stored file stopped: why (a chunk refused, the connection gone, the disk)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def send_stored(
    channel: MsrpChannel,
    store: FileStore,
    stored: StoredFile,
    *,
    check: Callable[[object], None],
    file_range: FileRange | None = None,
) -> int:
    """Send ``stored`` (or ``file_range`` of it) as one MSRP message, chunk by chunk from disk
    (never the whole file in memory), draining between chunks; ``check`` sees every event that
    came meanwhile and raises :class:`SendFailed` to stop. Returns the chunks sent. Shared by a
    pull (:class:`~control.streams.files.MsrpFileStream`) and a push."""
    sender = FileSender(stored.size, chunk_size=store.chunk_size, file_range=file_range)
    message_id = make_ident(store.random)
    try:
        handle = await to_disk(store.spool.open_read, stored)
    except OSError as exc:
        raise SendFailed(f"cannot read {stored.file_id}: {exc}") from None
    chunks = 0
    try:
        for piece in sender.pieces():
            data = await to_disk(_read_at, handle, piece.offset, piece.length)
            if len(data) != piece.length:
                raise SendFailed(f"{stored.file_id} shrank on disk")
            channel.send_chunk(
                message_id,
                stored.content_type,
                data,
                offset=piece.offset,
                total=stored.size,
                flag=Flag.END if piece.last else Flag.CONTINUE,
            )
            chunks += 1
            await channel.drain()
            for event in channel.events():
                check(event)
    except MsrpConnectError as exc:
        raise SendFailed(str(exc)) from None
    finally:
        handle.close()
    return chunks


async def _send(channel: MsrpChannel, store: FileStore, stored: StoredFile) -> int:
    """The file from disk; returns once every chunk was answered 200 (the last one's 200:
    the receiver has it all)."""
    answered = 0

    def check(event: object) -> None:
        nonlocal answered
        answered += _answered(event)

    try:
        sent = await send_stored(channel, store, stored, check=check)
        while answered < sent:
            check(await channel.next_event())
    except SendFailed as exc:
        raise PushRefused(exc.reason) from None
    return sent


def _answered(event: object) -> int:
    """1 for a 200 to a chunk (the session carries only our message); :class:`SendFailed`
    for anything that ends the push."""
    match event:
        case ResponseReceived(method="SEND", status=200):
            return 1
        case ResponseReceived(status=status, comment=comment) if status != 200:
            raise SendFailed(f"chunk answered {status} {comment or ''}".strip())
        case TransactionTimedOut():
            raise SendFailed("chunk not answered")
        case ConnectionFailed(reason=reason):
            raise SendFailed(f"MSRP connection ended: {reason}")
    return 0
