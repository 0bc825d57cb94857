"""EmbeddedMixer: the in-process AudioEngine (the one-machine default).

The asyncio layer is thin: one UDP socket pair per participant feeds datagrams (with the
loop's time) into the sans-IO `ParticipantStream`, and one drift-free 20 ms timer runs
`MixRoom.tick` for every room and writes the datagrams it returns.  Offers are answered by
`answer.answer_audio`.

Ticks follow `start + k * 20 ms` on the loop's clock, so call_at's own lateness never
accumulates.  A tick that runs more than `late_after` after its due time counts as late;
when the loop stalls for longer than `max_catchup` ticks, the ticks beyond that are dropped
(each listener's RTP timestamp still moves on, RFC 3550 §5.1) and counted, so a stall
costs a gap rather than a growing delay.

With `workers=N` the same mixer runs in N worker processes (see `mixworker`) and this object
only forwards commands to the worker that owns the room and relays its events.

With `native=True` (control/media/native; the default) the legs' RTP sockets are not read
by the event loop: each tick reads every leg's waiting datagrams in one C call (recvmmsg,
the kernel's arrival times) before mixing, and writes the tick's datagrams in one call per
room; RTP is parsed, buffered (the jitter buffer), levelled and mixed-minus (with the G.711
encode) in C.  The rest (source filter, RTCP, limiter above its knee, other codecs) is the
same Python as with `native=False`, the reference the differential tests compare it with.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, cast

from control.media import native as native_media
from control.media.answer import (
    PTIME_MS,
    answer_audio,
    audio_accept,
    supported_rtpmaps,
)
from control.media.codecs import OPUS_COMPLEXITY, CodecTuning
from control.media.engine import (
    AudioAnswer,
    AudioEngine,
    AudioEngineError,
    AudioEvent,
    ParticipantId,
    RoomFailed,
    RoomId,
)
from control.media.faults import FaultLog
from control.media.mixroom import MixCounters, MixRoom, Outgoing
from control.media.ports import PortAllocator, PortsExhausted
from control.media.rtcpsession import StreamQuality
from control.media.rtp import is_rtcp
from control.media.srtp import SrtpPolicy
from control.media.stream import PYTHON_KIT, WIDEBAND_RATE, ParticipantStream, level_db
from control.sip import sdp

if TYPE_CHECKING:
    from control.media.mixworker import WorkerPool

__all__ = ["EmbeddedMixer", "MixCounters"]

log = logging.getLogger("chorus.media.mixer")

FRAME = PTIME_MS / 1000
SrtpSetting = Literal["optional", "mandatory", "disabled"]
_MAX_READ = 64  # datagrams read per leg and tick (native path); the kernel queues the rest


@dataclass(slots=True)
class _Leg:
    room: RoomId
    participant: ParticipantId
    port: int = 0
    stream: ParticipantStream | None = None
    rtp: asyncio.DatagramTransport | None = None
    rtcp: asyncio.DatagramTransport | None = None
    fd: int = -1  # the RTP socket the native path reads each tick (-1: the event loop reads)


class _LegProtocol(asyncio.DatagramProtocol):
    """One of a leg's two sockets; send errors on either are counted the same way."""

    def __init__(self, mixer: EmbeddedMixer, leg: _Leg) -> None:
        self._mixer = mixer
        self._leg = leg
        self._loop = asyncio.get_running_loop()

    def error_received(self, exc: Exception) -> None:
        """A send the socket refused (asyncio reports sendto's OSError here) or an ICMP error.

        Counted and logged (rate-limited); the peer's RTP timeout ends a leg that is gone.
        """
        self._mixer.send_failed(self._leg, exc)


class _RtpProtocol(_LegProtocol):
    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self._mixer.rtp_received(self._leg, data, (str(addr[0]), int(addr[1])), self._loop.time())


class _RtcpProtocol(_LegProtocol):
    """RTCP from the participant on port + 1 (no rtcp-mux): into its stream's RTCP session."""

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        stream = self._leg.stream
        if stream is not None:
            ok = stream.receive_rtcp(data, (str(addr[0]), int(addr[1])), self._loop.time())
            self._mixer.counted_rtcp(ok)


class EmbeddedMixer(AudioEngine):
    """Mixes every room in this process (workers=0) or in N worker processes.

    `codecs` are configuration names ("G722", "PCMU", "PCMA", "speex", "opus",
    "telephone-event", also "speex/8000" and "speex/16000"); `share_encoding=False` makes
    every listener encode its own mix (the benchmark's baseline).
    """

    def __init__(
        self,
        ports: PortAllocator,
        *,
        host: str,
        codecs: Sequence[str],
        rtp_timeout: float,
        srtp: SrtpSetting | str,
        rng: random.Random,
        workers: int = 0,
        share_encoding: bool = True,
        late_after: float = 0.01,  # half a frame: later than this, a listener hears jitter
        max_catchup: int = 3,  # ticks run back to back after a stall before dropping
        max_failing_ticks: int = 100,  # a room or listener failing this long is ended
        rtcp_interval: float = 5.0,  # RFC 3550 §6.2 minimum between our reports
        native: bool = True,  # the C media loop (control/media/native); CHORUS_NATIVE_MEDIA wins
        opus_complexity: int = OPUS_COMPLEXITY,  # libopus encoder complexity, 0-10
    ) -> None:
        self._ports = ports
        # Codecs run at the rooms' wideband mixing rate where they can (Opus at 16 kHz: no
        # 16 <-> 48 kHz resampling around it), with the operator's Opus complexity.
        self._tuning = CodecTuning(pcm_rate=WIDEBAND_RATE, opus_complexity=opus_complexity)
        self._host = host
        self._codecs = tuple(codecs)
        self._supported = supported_rtpmaps(codecs)
        self._policy = SrtpPolicy(srtp)
        self._rtp_timeout = rtp_timeout
        self._rng = rng
        self._share = share_encoding
        self._late_after = late_after
        self._max_catchup = max_catchup
        self._max_failing = max_failing_ticks
        self._rtcp_interval = rtcp_interval
        self._faults = FaultLog(log)
        self._rooms: dict[RoomId, MixRoom] = {}
        self._legs: dict[tuple[RoomId, ParticipantId], _Leg] = {}
        self._queue: asyncio.Queue[AudioEvent] = asyncio.Queue()
        self._timer: asyncio.TimerHandle | None = None
        self._start = 0.0
        self._k = 0
        self._closed = False
        self.counters = MixCounters()
        self.native = native_media.choose(native)
        self._native = native_media.load() if self.native else None
        self._kit = native_media.kit() if self.native else PYTHON_KIT
        self._native_legs: list[_Leg] | None = None  # the legs recv_batch reads, in order
        log.info(
            "embedded mixer: %s",
            "native media loop (C)" if self.native else "Python media path (native_media off)",
        )
        self._pool: WorkerPool | None = None
        if workers < 0:
            raise ValueError("workers must be 0 (in-process) or more")
        if workers:
            from control.media.mixworker import WorkerPool

            self._pool = WorkerPool(
                workers,
                ports=ports,
                host=host,
                codecs=self._codecs,
                rtp_timeout=rtp_timeout,
                srtp=self._policy.value,
                rng=rng,
                share_encoding=share_encoding,
                late_after=late_after,
                max_catchup=max_catchup,
                max_failing_ticks=max_failing_ticks,
                rtcp_interval=rtcp_interval,
                native=self.native,
                opus_complexity=opus_complexity,
                on_event=self._queue.put_nowait,
            )

    # --- AudioEngine -------------------------------------------------------------------

    async def attach(
        self,
        room: RoomId,
        participant: ParticipantId,
        offer: sdp.SessionDescription,
        media_index: int,
    ) -> AudioAnswer:
        """Answer the offer and join the mix; an already attached participant is updated."""
        if self._pool is not None:
            return cast(
                AudioAnswer,
                await self._pool.call(room, "attach", room, participant, bytes(offer), media_index),
            )
        self._check_open()
        key = (room, participant)
        if key in self._legs:
            return await self.update(room, participant, offer, media_index)
        terms = answer_audio(
            offer,
            media_index,
            supported=self._supported,
            srtp=self._policy,
            randbytes=self._rng.randbytes,
        )
        leg = _Leg(room, participant)
        self._legs[key] = leg  # reserved: a second attach while we bind becomes an update
        try:
            leg.port, leg.rtp, leg.rtcp = await self._ports.bind_pair(
                self._host, lambda: _RtpProtocol(self, leg), lambda: _RtcpProtocol(self, leg)
            )
        except PortsExhausted as exc:
            del self._legs[key]
            raise AudioEngineError(503, str(exc)) from exc
        except BaseException:
            del self._legs[key]
            raise
        loop = asyncio.get_running_loop()
        if self._legs.get(key) is not leg or self._closed:  # detached while we were binding
            self._close_leg(leg)
            raise AudioEngineError(487, "detached during attach")
        leg.stream = ParticipantStream(
            terms,
            rng=self._rng,
            now=loop.time(),
            rtcp_interval=self._rtcp_interval,
            wall_offset=time.time() - loop.time(),
            cname=f"chorus@{self._host}",
            kit=self._kit,
            tuning=self._tuning,
        )
        self._read_natively(leg)
        mix = self._rooms.get(room)
        if mix is None:
            mix = self._rooms[room] = MixRoom(
                room,
                share_encoding=self._share,
                max_failing=self._max_failing,
                level=level_db if self._native is None else self._native.level_db,
                mix_minus=None if self._native is None else self._native.mix_minus,
                tuning=self._tuning,
            )
        elif mix.ended:
            del self._legs[key]
            self._close_leg(leg)
            raise AudioEngineError(503, "room ended after mixing failures")
        mix.add(participant, leg.stream)
        self._ensure_ticking(loop)
        return AudioAnswer(audio_accept(terms, leg.port), self._host)

    async def update(
        self,
        room: RoomId,
        participant: ParticipantId,
        offer: sdp.SessionDescription,
        media_index: int,
    ) -> AudioAnswer:
        """Hold, resume, new address, codec or keys; a refused re-offer changes nothing."""
        if self._pool is not None:
            return cast(
                AudioAnswer,
                await self._pool.call(room, "update", room, participant, bytes(offer), media_index),
            )
        self._check_open()
        leg = self._legs.get((room, participant))
        if leg is None:
            return await self.attach(room, participant, offer, media_index)
        if leg.stream is None:
            raise AudioEngineError(491, "attach still in progress")  # RFC 3261 §14.2
        terms = answer_audio(
            offer,
            media_index,
            supported=self._supported,
            srtp=self._policy,
            randbytes=self._rng.randbytes,
            previous=leg.stream.terms,
        )
        leg.stream.update(terms, asyncio.get_running_loop().time())
        mix = self._rooms.get(room)
        if mix is not None:
            mix.retune()  # a new codec may change the room's mixing rate
        return AudioAnswer(audio_accept(terms, leg.port), self._host)

    async def detach(self, room: RoomId, participant: ParticipantId) -> None:
        if self._pool is not None:
            await self._pool.call(room, "detach", room, participant)
            return
        leg = self._legs.pop((room, participant), None)
        if leg is None:
            return
        mix = self._rooms.get(room)
        if mix is not None:
            for event in mix.remove(participant):
                self._queue.put_nowait(event)
            if not mix.streams:
                del self._rooms[room]
        self._close_leg(leg)
        if not self._rooms:
            self._stop_ticking()

    surfaces_dtmf = True

    async def set_deaf(self, room: RoomId, participant: ParticipantId, deaf: bool) -> None:
        if self._pool is not None:
            await self._pool.call(room, "deaf", room, participant, deaf)
            return
        mix = self._rooms.get(room)
        if mix is not None and participant in mix.streams:
            mix.streams[participant].deaf = deaf

    async def set_muted(self, room: RoomId, participant: ParticipantId, muted: bool) -> None:
        if self._pool is not None:
            await self._pool.call(room, "mute", room, participant, muted)
            return
        mix = self._rooms.get(room)
        if mix is not None and participant in mix.streams:
            for event in mix.set_muted(participant, muted):
                self._queue.put_nowait(event)

    async def events(self) -> AsyncIterator[AudioEvent]:
        while True:
            yield await self._queue.get()

    async def close(self) -> None:
        self._closed = True
        if self._pool is not None:
            await self._pool.close()
        for leg in list(self._legs.values()):
            self._close_leg(leg)
        self._legs.clear()
        self._rooms.clear()
        self._stop_ticking()

    # --- observation -------------------------------------------------------------------

    async def stats(self) -> MixCounters:
        """Counters summed over this process or every worker."""
        if self._pool is not None:
            return await self._pool.stats()
        total = MixCounters()
        total.add(self.counters)
        return total

    async def quality(self) -> dict[tuple[RoomId, ParticipantId], StreamQuality]:
        """Per-participant RTCP figures: loss, jitter, round-trip time (see StreamQuality)."""
        if self._pool is not None:
            return await self._pool.quality()
        return {
            key: leg.stream.rtcp.quality()
            for key, leg in self._legs.items()
            if leg.stream is not None
        }

    def stream(self, room: RoomId, participant: ParticipantId) -> ParticipantStream | None:
        """The in-process stream object (tests and diagnostics; None in worker mode)."""
        leg = self._legs.get((room, participant))
        return leg.stream if leg is not None else None

    # --- internals ---------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise AudioEngineError(503, "audio engine closed")

    def _read_natively(self, leg: _Leg) -> None:
        """Native path: the tick reads this leg's RTP socket, the event loop no longer does."""
        if self._native is None or leg.rtp is None:
            return
        sock = leg.rtp.get_extra_info("socket")
        # asyncio's datagram transports pause reading as its stream transports do.
        reader = cast(asyncio.ReadTransport, leg.rtp)
        try:
            reader.pause_reading()
            self._native.enable_timestamps(sock.fileno())
        except (AttributeError, NotImplementedError, OSError) as exc:
            with contextlib.suppress(AttributeError, NotImplementedError):
                reader.resume_reading()  # this leg stays on the event loop's reader
            log.warning("room %s: %s read by the event loop (%s)", leg.room, leg.participant, exc)
            return
        leg.fd = sock.fileno()
        self._native_legs = None

    def _close_leg(self, leg: _Leg) -> None:
        if leg.fd >= 0:
            leg.fd = -1
            self._native_legs = None
        for transport in (leg.rtp, leg.rtcp):
            if transport is not None:
                transport.close()
        if leg.port:
            self._ports.release(leg.port)
            leg.port = 0

    def _ensure_ticking(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._timer is None:
            self._loop = loop
            self._start = loop.time() + FRAME
            self._k = 0
            self._timer = loop.call_at(self._start, self._tick)

    def _stop_ticking(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self) -> None:
        loop = self._loop
        if self._native is not None:
            self._receive_native()
        now = loop.time()
        due = self._start + self._k * FRAME
        pending = int((now - due) / FRAME) + 1  # ticks due by now, this one included
        counters = self.counters
        if pending > 1 + self._max_catchup:
            dropped = pending - 1 - self._max_catchup
            self._k += dropped
            counters.dropped_ticks += dropped
            for mix in self._rooms.values():
                mix.skip(dropped, counters)
            pending -= dropped
        events: list[AudioEvent] = []
        out: list[Outgoing] = []
        for _ in range(pending):
            due = self._start + self._k * FRAME
            self._k += 1
            counters.ticks += 1
            if now - due > self._late_after:
                counters.late_ticks += 1
            for mix in list(self._rooms.values()):
                if mix.ended:
                    continue
                out.clear()
                try:
                    mix.tick(
                        due,
                        counters,
                        events,
                        out,
                        rtp_timeout=self._rtp_timeout,
                        faults=self._faults,
                    )
                except Exception as exc:  # this room's tick only: the others still mix
                    counters.room_errors += 1
                    mix.note_failure(exc)
                    self._faults.report(("room", mix.room), f"mixing room {mix.room}", exc, now)
                self._send(mix.room, out)
                if mix.failed:
                    self._end_room(mix, events)
        self._send_reports(now)
        for event in events:
            self._queue.put_nowait(event)
        if self._rooms:
            self._timer = loop.call_at(self._start + self._k * FRAME, self._tick)
        else:
            self._timer = None

    def _end_room(self, mix: MixRoom, events: list[AudioEvent]) -> None:
        """Stop mixing a room that keeps failing and ask its owner to end it."""
        mix.ended = True
        self.counters.rooms_failed += 1
        log.error(
            "room %s: mixing failed %d ticks in a row (last error: %s); room stopped, "
            "its %d participants are to be ended",
            mix.room,
            mix.failing,
            mix.last_error,
            len(mix.streams),
        )
        events.append(RoomFailed(mix.room, mix.last_error))

    def _send_reports(self, now: float) -> None:
        """RTCP reports that fell due (RFC 3550 §6.3), muxed on the RTP port where offered."""
        counters = self.counters
        for leg in self._legs.values():
            stream = leg.stream
            if stream is None or not stream.rtcp.due(now):
                continue
            try:
                data = stream.rtcp_report(now)
            except Exception as exc:  # an SRTCP context that refuses: this leg only
                counters.rtcp_errors += 1
                self._faults.report(
                    ("rtcp", leg.room, leg.participant),
                    f"room {leg.room}: RTCP for {leg.participant}",
                    exc,
                    now,
                )
                continue
            dest = stream.rtcp_destination
            transport = leg.rtp if stream.terms.rtcp_mux else leg.rtcp
            if dest is None or transport is None:
                continue
            try:
                transport.sendto(data, dest)
            except (OSError, ValueError, TypeError) as exc:
                self.send_failed(leg, exc)
                continue
            counters.rtcp_sent += 1

    def rtp_received(self, leg: _Leg, data: bytes, source: tuple[str, int], now: float) -> None:
        """One datagram on a leg's RTP port, from the event loop or the native batch."""
        stream = leg.stream
        if stream is None:
            return
        if stream.terms.rtcp_mux and is_rtcp(data):  # RFC 5761 §4
            self.counted_rtcp(stream.receive_rtcp(data, source, now))
            return
        self.counters.packets_in += 1
        stream.receive(data, source, now)

    def _receive_native(self) -> None:
        """Every datagram waiting on the legs' RTP sockets, each at its kernel arrival time."""
        assert self._native is not None
        legs = self._native_legs
        if legs is None:
            legs = self._native_legs = [leg for leg in self._legs.values() if leg.fd >= 0]
        packets, errors = self._native.recv_batch([leg.fd for leg in legs], _MAX_READ)
        for index, data, source, arrival in packets:
            self.rtp_received(legs[index], data, source, arrival)
        for index, errno in errors:  # an ICMP error queued on the socket, as error_received
            self.send_failed(legs[index], OSError(errno, os.strerror(errno)))

    def counted_rtcp(self, ok: bool) -> None:
        if ok:
            self.counters.rtcp_received += 1
        else:
            self.counters.rtcp_errors += 1

    def send_failed(self, leg: _Leg, exc: BaseException) -> None:
        """One datagram to `leg` not sent: counted, logged once per leg and interval."""
        self.counters.send_errors += 1
        now = asyncio.get_running_loop().time()
        self._faults.report(
            ("sendto", leg.room, leg.participant),
            f"room {leg.room}: RTP to {leg.participant} not sent",
            exc,
            now,
        )

    def _send(self, room: RoomId, out: list[Outgoing]) -> None:
        legs = self._legs
        if self._native is not None:
            out = self._send_native(room, out)
        for participant, data, dest in out:
            leg = legs.get((room, participant))
            if leg is None or leg.rtp is None:
                continue
            try:
                leg.rtp.sendto(data, dest)
            except (OSError, ValueError, TypeError) as exc:
                # An unusable SDP address (symmetric RTP fixes it on the first packet).
                self.send_failed(leg, exc)

    def _send_native(self, room: RoomId, out: list[Outgoing]) -> list[Outgoing]:
        """The room's datagrams in one C call; returns those left to the transports (a
        destination that is a name, not an IP literal, or a leg the event loop reads)."""
        assert self._native is not None
        legs = self._legs
        items: list[tuple[int, bytes, str, int]] = []
        sent: list[Outgoing] = []
        rest: list[Outgoing] = []
        for item in out:
            leg = legs.get((room, item[0]))
            if leg is None or leg.fd < 0:
                rest.append(item)
                continue
            dest = item[2]
            items.append((leg.fd, item[1], dest[0], dest[1]))
            sent.append(item)
        for index, errno in self._native.send_batch(items):
            if errno == 0:
                rest.append(sent[index])
                continue
            leg = legs.get((room, sent[index][0]))
            if leg is not None:
                self.send_failed(leg, OSError(errno, os.strerror(errno)))
        return rest
