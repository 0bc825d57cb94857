"""A Jingle audio peer on an independent media stack, for live tests: an XMPP user whose phone
is slixmpp (signalling over a real Prosody) plus aiortc (``RTCPeerConnection``: ICE by
aioice, DTLS-SRTP, Opus / G.722 / PCMU), playing a tone and keeping what it hears.

Signalling goes through Chorus' own sans-IO Jingle layers, so a live call exercises them:
aiortc's SDP becomes Jingle contents with control/xmpp/jinglesdp.py, stanzas are built and
parsed with jinglebuild.py / jingle.py, the session's states and errors are
control/xmpp/jinglesession.py's. What aiortc does not do is not faked: its offer and answer
carry every candidate (aiortc gathers before it returns a description), so there is no
trickle here, and it speaks WebRTC only (ICE + DTLS-SRTP, rtcp-mux, BUNDLE), never plain RTP.

Loopback: aioice leaves 127.0.0.1 out of its host candidates, and the tests run on loopback
only, so while aiortc gathers (inside ``setLocalDescription``) the peer makes aioice gather on
127.0.0.1 alone (:func:`loopback_only`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import ssl
from collections.abc import Iterator, Sequence
from typing import Any
from unittest import mock
from xml.etree import ElementTree as ET

import av
import numpy as np
import numpy.typing as npt
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError
from slixmpp import ClientXMPP
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from control.media.tone import sine
from control.sip import sdp
from control.xmpp.errors import STANZAS_NS
from control.xmpp.jingle import (
    JINGLE_ERRORS_NS,
    JINGLE_NS,
    Content,
    Jingle,
    JingleError,
    parse_jingle,
)
from control.xmpp.jinglebuild import build_jingle, error_element
from control.xmpp.jinglemedia import FRAME_SAMPLES, PacedTrack
from control.xmpp.jinglemessage import (
    JMI_KINDS,
    JMI_NS,
    JingleMessage,
    jingle_message,
    read_jingle_message,
)
from control.xmpp.jinglesdp import jingle_to_sdp, sdp_to_jingle
from control.xmpp.jinglesession import (
    Accepted,
    Event,
    Initiated,
    JingleSession,
    JingleSessions,
    Terminated,
)

__all__ = [
    "CODECS",
    "RATE",
    "JinglePeer",
    "Recorder",
    "ToneTrack",
    "iq_error",
    "loopback_only",
    "send_raw",
]

log = logging.getLogger(__name__)

RATE = 48000  # what the peer keeps of what it hears: mono int16 at 48 kHz
CODECS = ("opus", "G722", "PCMU")  # issue 12's three, in the order the peer prefers them
Groups = tuple[tuple[str, tuple[str, ...]], ...]


class ToneTrack(PacedTrack):
    """An endless sine at ``freq`` Hz."""

    def __init__(self, freq: float, *, amplitude: float = 0.3) -> None:
        super().__init__()
        # A whole number of periods per second keeps the phase continuous frame to frame.
        self._second = sine(freq, 1.0, RATE, amplitude)

    def next_pcm(self, pts: int) -> npt.NDArray[np.int16]:
        offset = pts % RATE
        return np.take(self._second, range(offset, offset + FRAME_SAMPLES), mode="wrap")


@contextlib.contextmanager
def loopback_only() -> Iterator[None]:
    with mock.patch("aioice.ice.get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"]):
        yield


class Recorder:
    """What a remote aiortc track plays, kept as mono int16 PCM at :data:`RATE`."""

    def __init__(self) -> None:
        self._pcm: list[npt.NDArray[np.int16]] = []

    async def listen(self, track: MediaStreamTrack) -> None:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            assert isinstance(frame, av.AudioFrame)
            for out in resampler.resample(frame):
                self._pcm.append(out.to_ndarray().reshape(-1).astype(np.int16))

    def pcm(self) -> npt.NDArray[np.int16]:
        return np.concatenate(self._pcm) if self._pcm else np.zeros(0, dtype=np.int16)

    def seconds(self) -> float:
        return sum(len(p) for p in self._pcm) / RATE


def _codec_preferences(names: Sequence[str]) -> list[Any]:
    capabilities = RTCRtpSender.getCapabilities("audio").codecs
    wanted = [n.lower() for n in names]
    chosen = [c for c in capabilities if c.mimeType.split("/")[1].lower() in wanted]
    return sorted(chosen, key=lambda c: wanted.index(c.mimeType.split("/")[1].lower()))


class JinglePeer:
    """One XMPP user (``jid`` with a resource) that calls and answers Jingle audio.

    ``events`` gets every Jingle event of its sessions (control/xmpp/jinglesession.py's:
    Initiated, Accepted, Informed, TransportInfo, Terminated); ``errors`` the iq errors its
    own requests got back, as (action, condition, Jingle condition). ``heard()`` is the PCM
    received so far, mono at :data:`RATE`.
    """

    def __init__(
        self,
        jid: str,
        password: str,
        *,
        freq: float,
        ssl_context: ssl.SSLContext,
        codecs: Sequence[str] = CODECS,
    ) -> None:
        self.jid = jid
        self.freq = freq
        self.codecs = tuple(codecs)
        self.xmpp = ClientXMPP(jid, password)
        self.xmpp.ssl_context = ssl_context
        counter = itertools.count(1)
        self.sessions = JingleSessions(new_sid=lambda: f"{secrets.token_hex(6)}{next(counter)}")
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self.errors: list[tuple[str, str, str | None]] = []
        self.session: JingleSession | None = None
        self.pc: RTCPeerConnection | None = None
        self.answer_sdp: sdp.SessionDescription | None = None
        self.recorder = Recorder()
        self._tasks: set[asyncio.Task[None]] = set()
        self._up = asyncio.Event()
        # XEP-0353: (sender, payload) as they come; the ids we proposed, by callee
        self.messages: asyncio.Queue[tuple[str, JingleMessage]] = asyncio.Queue()
        self._proposed: dict[str, str] = {}
        for kind in sorted(JMI_KINDS):
            self.xmpp.register_handler(
                Callback(
                    f"jmi-{kind}",
                    MatchXPath(f"{{jabber:client}}message/{{{JMI_NS}}}{kind}"),
                    self._on_message,
                )
            )
        self.xmpp.add_event_handler("session_start", self._online)
        self.xmpp.register_handler(
            Callback(
                "jingle",
                MatchXPath(f"{{jabber:client}}iq/{{{JINGLE_NS}}}jingle"),
                self._on_iq,
            )
        )

    def _online(self, _: object) -> None:
        self.xmpp.send_presence()
        self._up.set()

    async def connect(self, host: str, port: int, *, timeout: float = 30.0) -> None:
        self.xmpp.connect(host, port)
        await asyncio.wait_for(self._up.wait(), timeout)

    @property
    def full_jid(self) -> str:
        return str(self.xmpp.boundjid.full)

    # -------------------------------------------------------------- media

    def _new_pc(self) -> RTCPeerConnection:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))

        @pc.on("track")
        def _track(track: MediaStreamTrack) -> None:
            self._spawn(self._listen(track))

        self.pc = pc
        return pc

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _listen(self, track: MediaStreamTrack) -> None:
        await self.recorder.listen(track)

    def heard(self) -> npt.NDArray[np.int16]:
        return self.recorder.pcm()

    def heard_seconds(self) -> float:
        return self.recorder.seconds()

    def _add_tone(self, pc: RTCPeerConnection) -> None:
        transceiver = next((t for t in pc.getTransceivers() if t.kind == "audio"), None)
        tone = ToneTrack(self.freq)
        if transceiver is None:
            transceiver = pc.addTransceiver(tone, direction="sendrecv")
        else:
            transceiver.sender.replaceTrack(tone)
            transceiver.direction = "sendrecv"
        transceiver.setCodecPreferences(_codec_preferences(self.codecs))

    async def _local_contents(
        self, pc: RTCPeerConnection, kind: str, author: str
    ) -> tuple[tuple[Content, ...], Groups]:
        description = await (pc.createOffer() if kind == "offer" else pc.createAnswer())
        with loopback_only():
            await pc.setLocalDescription(description)
        local = sdp.parse(pc.localDescription.sdp)
        return sdp_to_jingle(local, author=author)

    async def _remote(
        self, contents: Sequence[Content], groups: Groups, kind: str, author: str
    ) -> None:
        assert self.pc is not None
        origin = sdp.Origin("-", "1", 1, "IN", "IP4", "127.0.0.1")
        remote = jingle_to_sdp(contents, author=author, origin=origin, groups=groups)
        if kind == "answer":
            self.answer_sdp = remote
        await self.pc.setRemoteDescription(
            RTCSessionDescription(sdp=bytes(remote).decode(), type=kind)
        )

    def negotiated_codec(self) -> str | None:
        """The codec of the call: the first of the answer's m-line (RFC 3264 §6.1)."""
        if self.answer_sdp is None or not self.answer_sdp.media:
            return None
        rtpmaps = self.answer_sdp.media[0].rtpmaps()
        return rtpmaps[0].encoding if rtpmaps else None

    # ------------------------------------------------------------ signalling

    async def _send(self, to: str, j: Jingle) -> bool:
        iq = self.xmpp.make_iq_set(ito=to)
        iq.append(build_jingle(j))
        try:
            await iq.send(timeout=15)
        except IqError as exc:
            self.errors.append((j.action.value, *iq_error(exc.iq.xml)))
            return False
        except IqTimeout:
            self.errors.append((j.action.value, "timeout", None))
            return False
        return True

    async def call(self, callee: str, *, sid: str | None = None) -> JingleSession:
        """Offer audio to ``callee`` (a full JID): aiortc's offer as a session-initiate
        (``sid``: the id of the propose it follows)."""
        pc = self._new_pc()
        self._add_tone(pc)
        contents, groups = await self._local_contents(pc, "offer", "initiator")
        session, initiate = self.sessions.initiate(self.full_jid, callee, contents, groups, sid=sid)
        self.session = session
        await self._send(callee, initiate)
        return session

    async def ring(self) -> None:
        assert self.session is not None
        await self._send(self.session.peer, self.session.info("ringing"))

    async def answer(self, initiated: Initiated) -> None:
        """Accept the session: the offer to aiortc, its answer as the session-accept."""
        session = initiated.session
        self.session = session
        self._new_pc()
        await self._remote(initiated.contents, initiated.groups, "offer", "initiator")
        assert self.pc is not None
        self._add_tone(self.pc)
        contents, groups = await self._local_contents(self.pc, "answer", "responder")
        self.answer_sdp = sdp.parse(self.pc.localDescription.sdp)
        await self._send(session.peer, session.accept(contents, groups))

    async def hold(self, kind: str = "hold") -> None:
        assert self.session is not None
        await self._send(self.session.peer, self.session.info(kind))

    async def hangup(self, condition: str = "success") -> None:
        if self.session is not None and self.session.state != "ended":
            await self._send(self.session.peer, self.session.terminate(condition))
        await self._close_media()

    async def _close_media(self) -> None:
        if self.pc is not None:
            pc, self.pc = self.pc, None
            await pc.close()

    async def _on_jingle(self, iq: Any, j: Jingle) -> None:
        sender = str(iq["from"])
        try:
            event = self.sessions.receive(sender, str(iq["to"]), j)
        except JingleError as exc:
            log.info("jingle peer %s refuses %s: %s", self.jid, j.action.value, exc)
            reply = iq.reply(clear=True)
            reply["type"] = "error"
            reply.append(error_element(exc))
            reply.send()
            return
        iq.reply(clear=True).send()
        if isinstance(event, Accepted):
            await self._remote(event.contents, event.groups, "answer", "responder")
        elif isinstance(event, Initiated):
            self.session = event.session  # the call to ring for, answer or refuse
        elif isinstance(event, Terminated):
            await self._close_media()
        if event is not None:
            self.events.put_nowait(event)

    def _on_iq(self, iq: Any) -> None:
        if iq["type"] != "set":
            return
        element = iq.xml.find(f"{{{JINGLE_NS}}}jingle")
        try:
            j = parse_jingle(element)
        except JingleError as exc:
            reply = iq.reply(clear=True)
            reply["type"] = "error"
            reply.append(error_element(exc))
            reply.send()
            return
        self._spawn(self._on_jingle(iq, j))

    # ------------------------------------------------- XEP-0353 message initiation

    def send_message(self, to: str, m: JingleMessage) -> None:
        message = self.xmpp.make_message(mto=to, mtype="chat")
        for child in jingle_message(m):
            message.append(child)
        message.send()

    def propose(self, callee: str) -> str:
        """Propose an audio call to ``callee`` (a bare JID, as Conversations does); the
        session-initiate goes to the full JID that proceeds. Returns the id (the sid)."""
        sid = self.sessions.new_sid(callee)
        self._proposed[sid] = callee
        self.send_message(callee, JingleMessage("propose", sid, ("audio",)))
        return sid

    def _on_message(self, message: Any) -> None:
        try:
            m = read_jingle_message(message.xml)
        except JingleError as exc:
            log.info("jingle peer %s ignores a bad XEP-0353 payload: %s", self.jid, exc)
            return
        if m is None:
            return
        sender = str(message["from"])
        if m.kind == "proceed" and self._proposed.pop(m.id, None) is not None:
            self._spawn(self._proceeded(sender, m.id))
        self.messages.put_nowait((sender, m))

    async def _proceeded(self, callee: str, sid: str) -> None:
        await self.call(callee, sid=sid)

    async def next_message(self, kind: str, *, timeout: float = 30.0) -> tuple[str, JingleMessage]:
        """The next XEP-0353 payload of ``kind`` (sender, payload), skipping others."""
        return await _next(self.messages, lambda item: item[1].kind == kind, timeout)

    async def next_event(self, kind: type, *, timeout: float = 30.0) -> Any:
        """The next event of type ``kind``, skipping others (ringing before an accept …)."""
        return await _next(self.events, lambda event: isinstance(event, kind), timeout)

    async def close(self) -> None:
        await self._close_media()
        for task in list(self._tasks):
            task.cancel()
        self.xmpp.disconnect()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.xmpp.disconnected, 5)


async def _next(queue: asyncio.Queue[Any], wanted: Any, timeout: float) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        item = await asyncio.wait_for(queue.get(), max(0.01, deadline - loop.time()))
        if wanted(item):
            return item


def iq_error(iq: ET.Element) -> tuple[str, str | None]:
    """The RFC 6120 condition and the XEP-0166 §8 one (or None) of an iq error."""
    error = iq.find("{jabber:client}error")
    tags = [c.tag for c in error] if error is not None else []
    stanzas = f"{{{STANZAS_NS}}}"
    condition = next(
        (t[len(stanzas) :] for t in tags if t.startswith(stanzas) and t != f"{stanzas}text"), ""
    )
    jingle = next((t.split("}")[1] for t in tags if t.startswith(f"{{{JINGLE_ERRORS_NS}}}")), None)
    return condition, jingle


def send_raw(peer: JinglePeer, to: str, element: ET.Element) -> Any:
    """An iq set with ``element`` (any XML) from ``peer``: for tests of the errors a Jingle
    endpoint answers with."""
    iq = peer.xmpp.make_iq_set(ito=to)
    iq.append(element)
    return iq.send(timeout=15)
