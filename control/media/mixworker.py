"""Sharding rooms across mixer worker processes.

One event loop carries about 14,000 RTP packets a second per core here, so a busy node
runs the same in-process `EmbeddedMixer` in N worker processes, each with its own loop,
its own slice of the RTP port range and its own sockets.  A room lives in exactly one
worker, so every command for it lands in the same place: a new room goes to the worker
mixing the fewest participants (ties: the stable hash of its id, `shard_of`), and stays
there while it has participants.  A hash alone put both rooms of 50 of the mixer
benchmark on one worker (bench/RESULTS.md): with few, large rooms it spreads badly.
The parent sends commands over a pipe and gets answers and events back.

Wire format over `multiprocessing.Pipe` (pickled tuples):

* parent → worker: ``(op, request_id, args)`` with op attach / update / detach / mute /
  stats / quality / close; offers travel as SDP bytes;
* worker → parent: ``("ready",)`` once, ``("reply", request_id, ok, value)`` where value is
  the result or ``(status, reason)`` of an AudioEngineError, and ``("event", AudioEvent)``.

Workers use the 'spawn' context: no state of the parent (its loop, sockets, threads) leaks
into a child.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import multiprocessing
import random
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from control.media.codecs import OPUS_COMPLEXITY
from control.media.engine import AudioEngineError, AudioEvent, ParticipantId, RoomId
from control.media.mixroom import MixCounters
from control.media.ports import PortAllocator
from control.media.rtcpsession import StreamQuality
from control.sip import sdp

__all__ = ["WorkerPool", "WorkerSpec", "shard_of", "worker_main"]

log = logging.getLogger("chorus.media.mixworker")


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """Everything a worker needs to build its mixer (picklable)."""

    index: int
    host: str
    port_low: int
    port_high: int
    codecs: tuple[str, ...]
    rtp_timeout: float
    srtp: str
    seed: int | None  # None: the worker draws keys and SSRCs from the OS (SystemRandom)
    share_encoding: bool
    late_after: float
    max_catchup: int
    max_failing_ticks: int = 100
    rtcp_interval: float = 5.0
    native: bool = True  # the C media loop (control/media/native)
    opus_complexity: int = OPUS_COMPLEXITY


def shard_of(room: RoomId, workers: int) -> int:
    """A stable worker index for a room (CRC-32: the same in every process and run)."""
    return zlib.crc32(room.encode("utf-8")) % workers


def split_range(low: int, high: int, parts: int) -> list[tuple[int, int]]:
    """Cut an RTP port range into `parts` disjoint slices that start on even ports."""
    low += low % 2
    pairs = (high - low + 1) // 2
    if pairs < parts:
        raise ValueError(f"port range {low}-{high} too small for {parts} workers")
    share = pairs // parts
    slices = []
    for i in range(parts):
        start = low + 2 * share * i
        end = low + 2 * share * (i + 1) - 1 if i < parts - 1 else high
        slices.append((start, end))
    return slices


# --- worker side -------------------------------------------------------------------------


def worker_main(conn: Connection, spec: WorkerSpec) -> None:
    """Process entry point: serve commands until told to close or the parent goes away."""
    try:
        asyncio.run(_serve(conn, spec))
    except KeyboardInterrupt:
        pass


async def _serve(conn: Connection, spec: WorkerSpec) -> None:
    from control.media.mixer import EmbeddedMixer

    rng: random.Random = random.SystemRandom() if spec.seed is None else random.Random(spec.seed)
    mixer = EmbeddedMixer(
        PortAllocator(spec.port_low, spec.port_high),
        host=spec.host,
        codecs=spec.codecs,
        rtp_timeout=spec.rtp_timeout,
        srtp=spec.srtp,
        rng=rng,
        share_encoding=spec.share_encoding,
        late_after=spec.late_after,
        max_catchup=spec.max_catchup,
        max_failing_ticks=spec.max_failing_ticks,
        rtcp_interval=spec.rtcp_interval,
        native=spec.native,
        opus_complexity=spec.opus_complexity,
    )
    loop = asyncio.get_running_loop()
    commands: asyncio.Queue[tuple[str, int, tuple[Any, ...]] | None] = asyncio.Queue()

    def readable() -> None:
        try:
            while conn.poll():
                commands.put_nowait(conn.recv())
        except (EOFError, OSError):
            loop.remove_reader(conn.fileno())
            commands.put_nowait(None)

    async def relay_events() -> None:
        async for event in mixer.events():
            conn.send(("event", event))

    loop.add_reader(conn.fileno(), readable)
    relay = asyncio.create_task(relay_events())
    conn.send(("ready",))
    try:
        while (command := await commands.get()) is not None:
            op, request, args = command
            try:
                value = await _dispatch(mixer, op, args)
            except AudioEngineError as exc:
                conn.send(("reply", request, False, (exc.status, exc.reason)))
            except Exception as exc:  # a bug must not take the other rooms down
                log.exception("mixer worker %d: %s %r failed", spec.index, op, args[:2])
                conn.send(("reply", request, False, (500, f"mixer worker: {exc!r}")))
            else:
                conn.send(("reply", request, True, value))
            if op == "close":
                break
    finally:
        relay.cancel()
        loop.remove_reader(conn.fileno())
        await mixer.close()


async def _dispatch(mixer: Any, op: str, args: tuple[Any, ...]) -> Any:
    if op in ("attach", "update"):
        room, participant, offer, media_index = args
        method = mixer.attach if op == "attach" else mixer.update
        return await method(RoomId(room), ParticipantId(participant), sdp.parse(offer), media_index)
    if op == "detach":
        return await mixer.detach(*args)
    if op == "mute":
        return await mixer.set_muted(*args)
    if op == "deaf":
        return await mixer.set_deaf(*args)
    if op == "stats":
        return await mixer.stats()
    if op == "quality":
        return await mixer.quality()
    if op == "close":
        return None
    raise AudioEngineError(500, f"unknown mixer command {op!r}")


# --- parent side -------------------------------------------------------------------------


class _Worker:
    def __init__(self, conn: Connection, process: Any) -> None:
        self.conn = conn
        self.process = process
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self.alive = True


class WorkerPool:
    """The parent's handle on N mixer worker processes (started on first use)."""

    def __init__(
        self,
        count: int,
        *,
        ports: PortAllocator,
        host: str,
        codecs: tuple[str, ...],
        rtp_timeout: float,
        srtp: str,
        rng: random.Random,
        share_encoding: bool,
        late_after: float,
        max_catchup: int,
        on_event: Callable[[AudioEvent], None],
        max_failing_ticks: int = 100,
        rtcp_interval: float = 5.0,
        native: bool = True,
        opus_complexity: int = OPUS_COMPLEXITY,
    ) -> None:
        secure = isinstance(rng, random.SystemRandom)
        self._specs = [
            WorkerSpec(
                index=i,
                host=host,
                port_low=low,
                port_high=high,
                codecs=codecs,
                rtp_timeout=rtp_timeout,
                srtp=srtp,
                seed=None if secure else rng.getrandbits(64),
                share_encoding=share_encoding,
                late_after=late_after,
                max_catchup=max_catchup,
                max_failing_ticks=max_failing_ticks,
                rtcp_interval=rtcp_interval,
                native=native,
                opus_complexity=opus_complexity,
            )
            for i, (low, high) in enumerate(split_range(ports.low, ports.high, count))
        ]
        self._on_event = on_event
        self._workers: list[_Worker] = []
        self._ids = itertools.count(1)
        self._starting: asyncio.Task[None] | None = None
        self._placed: dict[RoomId, int] = {}  # live rooms -> their worker's index
        self._members: dict[RoomId, set[Any]] = {}  # participants per live room

    @property
    def count(self) -> int:
        return len(self._specs)

    async def start(self) -> None:
        if self._starting is None:
            self._starting = asyncio.ensure_future(self._start())
        await asyncio.shield(self._starting)

    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        ctx = multiprocessing.get_context("spawn")
        for spec in self._specs:
            parent, child = ctx.Pipe()
            process = ctx.Process(
                target=worker_main, args=(child, spec), name=f"chorus-mixer-{spec.index}"
            )
            process.daemon = True
            process.start()
            child.close()
            worker = _Worker(parent, process)
            self._workers.append(worker)
            loop.add_reader(parent.fileno(), self._readable, worker)
        await asyncio.gather(*(w.ready for w in self._workers))

    def _readable(self, worker: _Worker) -> None:
        try:
            while worker.conn.poll():
                message = worker.conn.recv()
                kind = message[0]
                if kind == "event":
                    self._on_event(message[1])
                elif kind == "reply":
                    _, request, ok, value = message
                    future = worker.pending.pop(request, None)
                    if future is None or future.done():
                        continue
                    if ok:
                        future.set_result(value)
                    else:
                        future.set_exception(AudioEngineError(*value))
                elif kind == "ready" and not worker.ready.done():
                    worker.ready.set_result(None)
        except (EOFError, OSError):
            self._lost(worker)

    def _lost(self, worker: _Worker) -> None:
        """A worker died: its rooms' calls fail with 503 rather than hang."""
        worker.alive = False
        asyncio.get_running_loop().remove_reader(worker.conn.fileno())
        error = AudioEngineError(503, "mixer worker exited")
        if not worker.ready.done():
            worker.ready.set_exception(error)
        for future in worker.pending.values():
            if not future.done():
                future.set_exception(AudioEngineError(503, "mixer worker exited"))
        worker.pending.clear()

    async def _request(self, worker: _Worker, op: str, *args: Any) -> Any:
        if not worker.alive:
            raise AudioEngineError(503, "mixer worker exited")
        request = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        worker.pending[request] = future
        worker.conn.send((op, request, args))
        return await future

    def place(self, room: RoomId) -> int:
        """The worker of `room`: where it lives, or (a new room) the least-loaded one."""
        index = self._placed.get(room)
        if index is None:
            load = [0] * self.count
            for other, worker in self._placed.items():
                load[worker] += len(self._members.get(other, ()))
            least = min(load)
            preferred = shard_of(room, self.count)
            index = preferred if load[preferred] == least else load.index(least)
            self._placed[room] = index
        return index

    async def call(self, room: RoomId, op: str, *args: Any) -> Any:
        await self.start()
        worker = self._workers[self.place(room)]
        # attach and detach carry (room, participant, ...): the room's members are counted
        # from the start of a join, so a concurrent join finds the room placed.
        member = args[1] if op in ("attach", "detach") else None
        if op == "attach":
            self._members.setdefault(room, set()).add(member)
        try:
            value = await self._request(worker, op, *args)
        except BaseException:
            if op == "attach":
                self._leave(room, member)
            raise
        if op == "detach":
            self._leave(room, member)
        return value

    def _leave(self, room: RoomId, member: Any) -> None:
        """A participant gone (or a join that failed); an empty room is forgotten."""
        members = self._members.get(room)
        if members is not None:
            members.discard(member)
        if not members:
            self._members.pop(room, None)
            self._placed.pop(room, None)

    async def stats(self) -> MixCounters:
        await self.start()
        total = MixCounters()
        for counters in await asyncio.gather(
            *(self._request(w, "stats") for w in self._workers if w.alive)
        ):
            total.add(counters)
        return total

    async def quality(self) -> dict[tuple[RoomId, ParticipantId], StreamQuality]:
        await self.start()
        merged: dict[tuple[RoomId, ParticipantId], StreamQuality] = {}
        for part in await asyncio.gather(
            *(self._request(w, "quality") for w in self._workers if w.alive)
        ):
            merged.update(part)
        return merged

    async def close(self) -> None:
        if self._starting is None:
            return
        try:
            await self._starting
        except AudioEngineError as exc:  # a worker died while starting: close the others
            log.warning("mixer workers did not all start: %s", exc.reason)
        for worker in self._workers:
            if worker.alive:
                try:
                    await asyncio.wait_for(self._request(worker, "close"), timeout=5.0)
                except (AudioEngineError, TimeoutError, OSError) as exc:
                    log.warning(
                        "mixer worker %s did not close cleanly: %r", worker.process.name, exc
                    )
            if worker.alive:
                asyncio.get_running_loop().remove_reader(worker.conn.fileno())
                worker.alive = False
            worker.conn.close()
        for worker in self._workers:
            await asyncio.to_thread(worker.process.join, 5.0)
            if worker.process.is_alive():
                log.warning("mixer worker %s still running: terminated", worker.process.name)
                worker.process.terminate()
        self._workers.clear()
