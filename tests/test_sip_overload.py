"""Load shedding by event-loop lag (control/sip/overload.py): the guard fed lag samples and
times, no loop and no clock; then the UA's 503 with Retry-After for a new request while the
guard says overloaded, its counters on /metrics, and the two `[sip]` keys.

SIPp against a really stalled loop is tests/test_sip_overload_live.py."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from control.config import ConfigError, parse_config
from control.server import Server
from control.sip.overload import OverloadGuard, OverloadState
from tests.peers.inprocess import running_server
from tests.peers.rawsip import RawUdp, parse_response, raw_request
from tests.test_metrics import metrics_of, scrape

INTERVAL = 0.05  # the probe's period, as control/sip/lagprobe.py runs it


class Probe:
    """Feeds a guard the way LagProbe does: each probe runs ``lag`` past its deadline and the
    next one is due an interval after it ran."""

    def __init__(self, guard: OverloadGuard, now: float = 100.0) -> None:
        self.guard = guard
        self.now = now
        self.changes: list[tuple[float, OverloadState]] = []

    def run(self, seconds: float, lag: float) -> None:
        end = self.now + seconds
        while self.now < end:
            self.now += INTERVAL + lag
            change = self.guard.sample(self.now, lag)
            if change is not None:
                self.changes.append((self.now, change))


def test_a_lasting_lag_above_the_threshold_enters_overload() -> None:
    guard = OverloadGuard(0.25)
    probe = Probe(guard)
    probe.run(2.0, 0.0)
    assert not guard.overloaded and guard.admit(probe.now, "INVITE")
    probe.run(0.01, 0.3)  # one late probe: not yet
    assert not guard.overloaded
    probe.run(3.0, 0.3)
    assert guard.overloaded and guard.entered == 1
    assert [state for _, state in probe.changes] == [OverloadState.OVERLOADED]
    assert guard.lag > 0.25 and guard.last_lag == pytest.approx(0.3)
    assert not guard.admit(probe.now, "INVITE")
    assert not guard.admit(probe.now, "OPTIONS")
    assert not guard.admit(probe.now, "INVITE")
    assert guard.shed == {"INVITE": 2, "OPTIONS": 1}


@pytest.mark.parametrize("pause", [0.3, 0.5])
def test_one_transient_pause_does_not_shed(pause: float) -> None:
    # A single GC pause or disk flush twice the threshold's size is averaged away: the
    # server is not behind after it.
    guard = OverloadGuard(0.25)
    probe = Probe(guard)
    probe.run(2.0, 0.0)
    probe.run(0.01, pause)
    probe.run(5.0, 0.0)
    assert guard.entered == 0 and not probe.changes
    assert guard.admit(probe.now, "INVITE") and not guard.shed


def test_a_lag_between_half_and_the_threshold_stays_in_overload() -> None:
    guard = OverloadGuard(0.25)
    probe = Probe(guard)
    probe.run(3.0, 0.4)
    assert guard.overloaded
    probe.run(10.0, 0.2)  # below the threshold, above half of it: hysteresis
    assert guard.overloaded and guard.entered == 1
    assert len(probe.changes) == 1
    probe.run(10.0, 0.1)  # below half
    assert not guard.overloaded
    assert [state for _, state in probe.changes] == [
        OverloadState.OVERLOADED,
        OverloadState.NORMAL,
    ]
    assert guard.lag < 0.125
    assert guard.admit(probe.now, "INVITE")


def test_it_leaves_below_half_only_after_the_minimum_time() -> None:
    guard = OverloadGuard(0.25, min_overloaded=5.0)
    probe = Probe(guard)
    probe.run(3.0, 1.0)
    assert len(probe.changes) == 1
    entered_at = probe.changes[0][0]
    probe.run(entered_at + 4.9 - probe.now, 0.0)
    assert guard.lag < 0.125  # low long since, but not for the minimum time yet
    assert guard.overloaded and not guard.admit(probe.now, "SUBSCRIBE")
    probe.run(0.3, 0.0)
    assert not guard.overloaded
    left_at, state = probe.changes[1]
    assert state is OverloadState.NORMAL
    assert entered_at + 5.0 <= left_at <= entered_at + 5.0 + INTERVAL
    # In and out again: counted twice.
    probe.run(3.0, 1.0)
    assert guard.overloaded and guard.entered == 2


def test_zero_is_off() -> None:
    guard = OverloadGuard(0.0)
    assert not guard.enabled
    probe = Probe(guard)
    probe.run(10.0, 5.0)
    assert not guard.overloaded and guard.entered == 0 and not probe.changes
    assert guard.admit(probe.now, "INVITE") and not guard.shed


def test_a_guard_whose_probe_stopped_admits() -> None:
    guard = OverloadGuard(0.25, stale_after=5.0)
    probe = Probe(guard)
    probe.run(3.0, 1.0)
    assert not guard.admit(probe.now + 4.0, "INVITE")
    assert guard.admit(probe.now + 6.0, "INVITE")
    assert guard.shed == {"INVITE": 1}


def test_the_config_keys() -> None:
    assert parse_config({}).sip.overload_lag_ms == 0
    assert parse_config({}).sip.overload_retry_after == 2
    sip = parse_config({"sip": {"overload_lag_ms": 250, "overload_retry_after": 5}}).sip
    assert (sip.overload_lag_ms, sip.overload_retry_after) == (250, 5)
    for key in ("overload_lag_ms", "overload_retry_after"):
        with pytest.raises(ConfigError, match=f"sip.{key}"):
            parse_config({"sip": {key: -1}})
        with pytest.raises(ConfigError, match=f"sip.{key}"):
            parse_config({"sip": {key: "soon"}})


def test_the_server_builds_a_guard_only_when_asked() -> None:
    assert Server(parse_config({})).ua.overload is None
    guard = Server(
        parse_config({"sip": {"overload_lag_ms": 250, "overload_retry_after": 9}})
    ).ua.overload
    assert guard is not None
    assert guard.overload_lag == pytest.approx(0.25) and guard.retry_header == "9"


def _options(port: int, sends: int) -> list[tuple[int, str | None]]:
    """One OPTIONS sent ``sends`` times (the same bytes: retransmissions); the (status,
    Retry-After) of the final answer to each send."""
    answers = []
    with RawUdp() as udp:
        message = raw_request("OPTIONS", port, local_port=udp.port)
        for _ in range(sends):
            udp.send(message, port)
            while (data := udp.receive(10.0)) is not None:
                response = parse_response(data)
                if response.status >= 200:
                    answers.append((response.status, response.headers.get("Retry-After")))
                    break
    return answers


async def test_the_ua_sheds_new_requests_while_overloaded(tmp_path: Path) -> None:
    """A guard fed an overload (no real stall: the server's own probe keeps feeding the one
    it built, on a quiet loop): a new OPTIONS and its retransmission get the same 503 with
    Retry-After, counted once; /metrics shows the state and the count; out of overload the
    same request is answered 200."""
    async with running_server(tmp_path, rtp={}, sections={"sip": {"overload_lag_ms": 250}}) as (
        server,
        port,
    ):
        guard = OverloadGuard(0.25, retry_after=7, stale_after=1e9)
        server.ua.overload = guard
        metrics = metrics_of(server)
        now = asyncio.get_running_loop().time()
        for step in range(40):  # the last 4 s: every probe a second late
            guard.sample(now - 4.0 + step * 0.1, 1.0)
        assert guard.overloaded
        assert await asyncio.to_thread(_options, port, 2) == [(503, "7"), (503, "7")]
        assert guard.shed == {"OPTIONS": 1}  # the retransmission went to the transaction
        found = await scrape(metrics)
        assert found["chorus_sip_overloaded", ()] == 1
        assert found["chorus_sip_overload_shed_total", (("method", "OPTIONS"),)] == 1
        assert found["chorus_sip_overload_entered_total", ()] == 1
        assert found["chorus_event_loop_lag_seconds", ()] == pytest.approx(guard.lag)
        assert guard.lag > 0.25
        guard.overloaded = False
        assert await asyncio.to_thread(_options, port, 1) == [(200, None)]
        assert (await scrape(metrics))["chorus_sip_overloaded", ()] == 0


async def test_metrics_without_a_guard(tmp_path: Path) -> None:
    async with running_server(tmp_path, rtp={}) as (server, _):
        assert server.ua.overload is None
        found = await scrape(metrics_of(server))
    assert found["chorus_sip_overloaded", ()] == 0
    assert not any(name == "chorus_sip_overload_shed_total" for name, _ in found)
    assert not any(name == "chorus_event_loop_lag_seconds" for name, _ in found)
