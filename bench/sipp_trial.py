"""One trial of the SIPp load-test suite (bench/sipp_suite.py): the scenarios, what each
needs around it, one rate offered for one duration, and the verdict.

A trial offers ``rate`` calls/s of a scenario (bench/sipp/) for ``duration`` seconds with the
helpers the scenario needs: anchors (one ``join`` call held in each room for the whole
trial) for the scenarios that need live rooms, a SIPp UAS the rooms dial for ``refer``, a
trickle of participants joining and leaving for ``subscribe``. `judge` applies the pass
criterion the suite's docstring defines (RFC 7502's "zero failures", made concrete).
"""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.procstat import load_average
from tests.peers.ports import LOOPBACK, free_port
from tests.peers.sipp import SippResult, SippUas, parse_stat_csv, run_sipp

__all__ = [
    "OPERATOR",
    "SCENARIOS",
    "SIPP_DIR",
    "Scenario",
    "Trial",
    "TrialSettings",
    "achieved_rate",
    "judge",
    "rooms_file",
    "run_trial",
    "server_settings",
]

SIPP_DIR = Path(__file__).resolve().parent / "sipp"
ROOM_PREFIX = "load"
OPERATOR = f"sip:operator@{LOOPBACK}"  # uac_refer_add_remove.xml's From


@dataclass(frozen=True, slots=True)
class Scenario:
    """One SIPp scenario of the suite and what it needs around it."""

    name: str
    file: str
    what: str
    live_rooms: bool = False  # anchors keep every room open
    refer_target: bool = False  # a SIPp UAS the rooms dial
    trickle: bool = False  # participants joining and leaving during the trial


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("join", "uac_room_join.xml", "join a room, pcap audio, hold, BYE"),
        Scenario(
            "subscribe",
            "uac_subscribe_conference.xml",
            "SUBSCRIBE conference, NOTIFY versions checked, hold, unsubscribe",
            live_rooms=True,
            trickle=True,
        ),
        Scenario(
            "refer",
            "uac_refer_add_remove.xml",
            "REFER method=INVITE (SIPp target joins), hold, REFER method=BYE",
            live_rooms=True,
            refer_target=True,
        ),
        Scenario("message", "uac_room_message.xml", "MESSAGE into a live room", live_rooms=True),
        Scenario("echo", "uac_echo.xml", "INVITE(SDP)-200-ACK-hold-BYE to echo"),
    )
}

# Counters of SIPp's -trace_stat that fail a trial besides FailedCall(C).
UNEXPECTED = ("OutOfCallMsgs(C)", "DeadCallMsgs(C)")
# Reported, not failed: in-dialog NOTIFYs SIPp answered itself (-aa), see sipp_suite.py.
AUTO_ANSWERED = "AutoAnswered(C)"


def server_settings(call_hold: float, trial_seconds: float) -> dict[str, dict[str, Any]]:
    """The configuration of the server the runner starts: quiet; the refer scenario's
    operator a moderator and its target's host allowed; RTP timeout above any anchor's
    silence (the pcap speaks 7 s, then an anchor is silent to the end); room limits well
    above what a trial offers, so a limit is not mistaken for capacity."""
    return {
        "server": {"log_level": "WARNING", "trace_sip": False},
        "rtp": {"timeout": max(60.0, trial_seconds + call_hold + 120.0)},
        "conference": {
            "moderators": [OPERATOR],
            "refer_allow": [LOOPBACK],
            "refer_max_pending": 1000,
            "max_participants": 10000,
            "max_rooms": 10000,
            "info_max_subscriptions": 10000,
            "chat_burst": 100000,
        },
    }


def rooms_file(path: Path, rooms: int) -> Path:
    """A SIPp injection file naming ``rooms`` rooms in turn (SEQUENTIAL, field0)."""
    lines = ["SEQUENTIAL", *(f"{ROOM_PREFIX}-{n};" for n in range(rooms))]
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass(slots=True)
class Trial:
    """One rate offered for one duration, and the verdict."""

    scenario: str
    rate: float
    duration: float
    offered: int
    created: int = 0
    successful: int = 0
    failed: int = 0
    retransmissions: int = 0
    unexpected: int = 0
    auto_answered: int = 0
    achieved_rate: float = 0.0
    reasons: list[str] = field(default_factory=list)
    load_average: list[float] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.reasons


def _count(raw: dict[str, str], key: str) -> int:
    try:
        return int(raw.get(key, "0") or 0)
    except ValueError:
        return 0


def _epoch(stamp: str) -> float:
    """SIPp writes times as 'date<TAB>time<TAB>epoch'."""
    try:
        return float(stamp.split("\t")[-1])
    except ValueError:
        return 0.0


def _seconds(hms: str) -> float:
    """'HH:MM:SS:micro' (SIPp's durations) -> seconds."""
    parts = hms.split(":")
    try:
        h, m, s = (int(p) for p in parts[:3])
        micro = int(parts[3]) if len(parts) > 3 else 0
    except ValueError:
        return 0.0
    return h * 3600 + m * 60 + s + micro / 1e6


def achieved_rate(raw: dict[str, str]) -> float:
    """Calls per second SIPp created: the calls over the span in which it created them
    (the run's length less the mean call length, as the last call created ran that long;
    SIPp paces call n at n / rate, so n calls span n / rate seconds)."""
    created = _count(raw, "OutgoingCall(C)")
    span = _epoch(raw.get("CurrentTime", "")) - _epoch(raw.get("StartTime", ""))
    span -= _seconds(raw.get("CallLength(C)", ""))
    return created / span if span > 0 else float(created)


def judge(
    result: SippResult,
    offered: int,
    rate: float,
    *,
    min_rate_ratio: float,
    helpers: Sequence[str] = (),
) -> tuple[dict[str, Any], list[str]]:
    """The trial's counts and every reason it fails (none: it passed); see the module
    docstring for the criterion. ``helpers`` are failures already found in the helpers."""
    reasons = list(helpers)
    stats = result.stats
    if stats is None:
        return {}, [*reasons, f"no statistics from SIPp (exit {result.returncode})"]
    raw = stats.raw
    counts = {
        "created": stats.created,
        "successful": stats.successful,
        "failed": stats.failed,
        "retransmissions": stats.retransmissions,
        "unexpected": sum(_count(raw, key) for key in UNEXPECTED),
        "auto_answered": _count(raw, AUTO_ANSWERED),
        "achieved_rate": round(achieved_rate(raw), 2) if raw else 0.0,
    }
    if stats.successful == 0:
        reasons.append("no call completed (no input)")
    if result.timed_out or result.returncode != 0:
        reasons.append(f"sipp exit {result.returncode}{' (timed out)' if result.timed_out else ''}")
    if stats.failed:
        kinds = [
            f"{key[6:-3]} {raw[key]}"
            for key in raw
            if key.startswith("Failed") and key.endswith("(C)") and key != "FailedCall(C)"
            if _count(raw, key)
        ]
        reasons.append(f"{stats.failed} failed calls ({', '.join(kinds) or 'no detail'})")
    if stats.created < offered or stats.successful < offered:
        reasons.append(f"{stats.successful} of {offered} calls completed")
    if stats.retransmissions:
        reasons.append(f"{stats.retransmissions} retransmissions")
    if counts["unexpected"]:
        detail = ", ".join(f"{key[:-3]} {raw[key]}" for key in UNEXPECTED if _count(raw, key))
        reasons.append(f"unexpected messages ({detail})")
    if raw and counts["achieved_rate"] < rate * min_rate_ratio:
        reasons.append(f"offered {counts['achieved_rate']} calls/s of {rate}")
    return counts, reasons


class _Background:
    """A SIPp UAC running beside a trial (anchors, trickle) until it ends by itself."""

    def __init__(self, argv: list[str], workdir: Path, name: str) -> None:
        self.name = name
        self.stat_file = workdir / f"{name}-stat.csv"
        self.log = (workdir / f"{name}-out.txt").open("wb")
        self.proc = subprocess.Popen(
            [*argv, "-trace_stat", "-stf", str(self.stat_file), "-fd", "1"],
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )

    def created(self) -> int:
        stats = parse_stat_csv(self.stat_file.read_text()) if self.stat_file.exists() else None
        return stats.created if stats else 0

    def finish(self, timeout: float, expected: int) -> list[str]:
        """Wait for the end; what went wrong, if anything."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        stats = parse_stat_csv(self.stat_file.read_text()) if self.stat_file.exists() else None
        if self.proc.returncode != 0 or stats is None or stats.successful < expected:
            got = f"{stats.successful} of {expected} calls" if stats else "no statistics"
            return [f"{self.name}: sipp exit {self.proc.returncode}, {got}"]
        return []


def _sipp_argv(scenario: str, target: str, *args: str) -> list[str]:
    port = free_port("udp")
    return [
        "sipp", "-nostdin", "-i", LOOPBACK, "-p", str(port), "-sf", scenario, *args, target
    ]  # fmt: skip


@dataclass(frozen=True, slots=True)
class TrialSettings:
    """What every trial of a run shares."""

    rooms: int
    call_hold: float  # seconds a call holds (-d, or subscribe's -set hold)
    min_rate_ratio: float = 0.9
    trickle_rate: float = 2.0  # joins per second while subscribe runs


def run_trial(
    scenario: Scenario,
    address: str,
    rate: float,
    duration: float,
    settings: TrialSettings,
) -> Trial:
    """Offer ``rate`` calls/s of ``scenario`` for ``duration`` s at ``address``, with the
    helpers the scenario needs, and judge it."""
    offered = max(1, round(rate * duration))
    hold_ms = int(settings.call_hold * 1000)
    trial = Trial(scenario.name, rate, duration, offered)
    with tempfile.TemporaryDirectory(prefix="sipp-suite-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        csv = rooms_file(work / "rooms.csv", settings.rooms)
        join = str(SIPP_DIR / "uac_room_join.xml")
        helpers: list[tuple[_Background, int]] = []
        # every helper outlives the trial: creation, the last call's hold, slack
        span = duration / max(settings.min_rate_ratio, 0.1) + settings.call_hold + 3.0
        if scenario.live_rooms:
            anchors = _Background(
                _sipp_argv(join, address, "-inf", str(csv), "-m", str(settings.rooms),
                           "-r", str(settings.rooms), "-d", str(int((span + 2) * 1000))),
                work, "anchors",
            )  # fmt: skip
            helpers.append((anchors, settings.rooms))
            deadline = time.monotonic() + 20
            while anchors.created() < settings.rooms and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(1.0)  # the last anchors' INVITE-200-ACK
        if scenario.trickle:
            count = max(1, round(settings.trickle_rate * span))
            helpers.append((
                _Background(
                    _sipp_argv(join, address, "-inf", str(csv), "-m", str(count),
                               "-r", f"{settings.trickle_rate:g}", "-d", "1000"),
                    work, "trickle",
                ),
                count,
            ))  # fmt: skip
        extra = ["-inf", str(csv)]
        keys: dict[str, str] = {}
        if scenario.name == "subscribe":
            extra += ["-set", "hold", f"{settings.call_hold:g}", "-aa"]
        if scenario.refer_target:
            uas = stack.enter_context(
                SippUas(SIPP_DIR / "uas_refer_target.xml", extra_args=["-mp", str(free_port())])
            )
            keys["target"] = uas.address
        result = run_sipp(
            SIPP_DIR / scenario.file,
            address,
            calls=offered,
            rate=rate,
            service="echo",
            pause_ms=hold_ms,
            max_concurrent=int(rate * (settings.call_hold + 10)) + 100,
            keys=keys,
            extra_args=extra,
            timeout=duration * 3 + settings.call_hold + 40,
        )
        trial.load_average = load_average()
        failures: list[str] = []
        if scenario.refer_target:
            answered = uas.stop()
            if answered.stats is None or answered.stats.failed or not answered.ok:
                failures.append(f"refer target: {answered.stats}")
        for helper, expected in helpers:
            failures += helper.finish(span + 30, expected)
    counts, reasons = judge(
        result, offered, rate, min_rate_ratio=settings.min_rate_ratio, helpers=failures
    )
    for key, value in counts.items():
        setattr(trial, key, value)
    trial.reasons = reasons
    return trial
