"""Load shedding against SIPp (control/sip/overload.py): an in-process server whose event
loop is really stalled, 0.5 s at a time, five times its `[sip] overload_lag_ms` of 100.

While stalled: a new INVITE gets 503 with Retry-After, and the BYE of a call set up before
the stall is answered 200 (SIPp counts the call successful only then). When the stalls stop
and the lag has fallen, a new INVITE is answered 200 again. With the default (off) nothing
is shed however the loop stalls. Nothing here times the server: only the stall's size
against the configured lag, by a wide margin, and conditions awaited with `wait_until`."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from control.server import Server
from tests.peers.inprocess import running_server
from tests.peers.sipp import run_sipp_async
from tests.peers.wait import wait_until
from tests.test_metrics import metrics_of, scrape

pytestmark = pytest.mark.peer("sipp")

OVERLOAD_LAG_MS = 100
STALL = 0.5  # s the loop is blocked each time: five times the configured lag
GAP = 0.05  # s of running loop between stalls (the probe and the sockets get their turn)
RETRY_AFTER = 7


class LoopStaller:
    """Blocks the event loop ``STALL`` s at a time, ``GAP`` apart, until stopped: what a long
    GC pause or a CPU-starved process does to the server, on purpose."""

    def __init__(self) -> None:
        self.stalls = 0
        self._handle: asyncio.Handle | None = None
        self._stopped = False

    def start(self) -> None:
        self._handle = asyncio.get_running_loop().call_soon(self._stall)

    def _stall(self) -> None:
        if self._stopped:
            return
        time.sleep(STALL)  # noqa: ASYNC251 - blocking the loop is the point
        self.stalls += 1
        self._handle = asyncio.get_running_loop().call_later(GAP, self._stall)

    def stop(self) -> None:
        self._stopped = True
        if self._handle is not None:
            self._handle.cancel()


def _invites_answered(server: Server, klass: int) -> int:
    return server.ua.counters.final_responses.get(("INVITE", klass), 0)


async def test_stalled_server_sheds_new_calls_and_finishes_old_ones(tmp_path: Path) -> None:
    sections = {"sip": {"overload_lag_ms": OVERLOAD_LAG_MS, "overload_retry_after": RETRY_AFTER}}
    async with running_server(tmp_path, rtp={}, transports=("udp",), sections=sections) as (
        server,
        port,
    ):
        guard = server.ua.overload
        assert guard is not None and not guard.overloaded
        target = f"127.0.0.1:{port}"
        # A call set up before the stall, hung up (BYE) 8 s after its ACK.
        established = asyncio.create_task(
            run_sipp_async("uac_echo", target, service="echo", pause_ms=8000, timeout=60)
        )
        staller = LoopStaller()
        try:
            assert await wait_until(lambda: len(server.ua.dialogs) == 1, timeout=30)
            staller.start()
            assert await wait_until(lambda: guard.overloaded, timeout=30), guard.lag
            assert len(server.ua.dialogs) == 1  # its BYE is still to come
            refused = await run_sipp_async(
                "uac_overloaded", target, service="echo", trace_messages=True, timeout=60
            )
            assert refused.ok, refused.describe()
            assert f"Retry-After: {RETRY_AFTER}" in refused.messages, refused.messages[-3000:]
            # The BYE came while overloaded and got its 200: SIPp's call succeeded.
            first = await established
            assert first.ok, first.describe()
            assert guard.overloaded and guard.entered == 1  # never left in between
            assert not server.ua.dialogs
        finally:
            staller.stop()
            if not established.done():
                established.cancel()
        assert staller.stalls >= 2
        assert guard.shed["INVITE"] >= 1
        assert _invites_answered(server, 5) == 1  # one call refused, its retransmissions too
        found = await scrape(metrics_of(server))
        assert found["chorus_sip_overload_shed_total", (("method", "INVITE"),)] >= 1
        # The stalls over, the lag falls below half the limit and new calls are taken again.
        assert await wait_until(lambda: not guard.overloaded, timeout=60), guard.lag
        shed = sum(guard.shed.values())
        after = await run_sipp_async("uac_echo", target, service="echo", pause_ms=0, timeout=60)
        assert after.ok, after.describe()
        assert sum(guard.shed.values()) == shed
        assert _invites_answered(server, 2) == 2
        assert (await scrape(metrics_of(server)))["chorus_sip_overloaded", ()] == 0


async def test_off_by_default_nothing_is_shed_however_the_loop_stalls(tmp_path: Path) -> None:
    async with running_server(tmp_path, rtp={}, transports=("udp",)) as (server, port):
        assert server.ua.overload is None
        staller = LoopStaller()
        staller.start()
        try:
            assert await wait_until(lambda: staller.stalls >= 2, timeout=30)
            before = staller.stalls
            result = await run_sipp_async(
                "uac_echo", f"127.0.0.1:{port}", service="echo", pause_ms=1000, timeout=60
            )
            during = staller.stalls - before
        finally:
            staller.stop()
        assert result.ok, result.describe()
        assert during >= 2  # the call was made while the loop kept stalling
        assert _invites_answered(server, 5) == 0 and _invites_answered(server, 2) == 1
        found = await scrape(metrics_of(server))
        assert found["chorus_sip_overloaded", ()] == 0
