"""The SIPp load-test suite (bench/sipp/, bench/sipp_trial.py, bench/sipp_suite.py; issue 13
item 2), with real SIPp against a real ``chorus serve``:

- every scenario (join with pcap audio, subscribe with NOTIFY versions checked, REFER add and
  remove with a SIPp target, MESSAGE into rooms, echo) passes a trial at a small fixed rate
  over rooms from the runner's injection file: every call completed, none failed, no
  retransmission, no unexpected message, helpers clean;
- the subscribe scenario's version check fails a call when a notifier repeats a version
  (a SIPp notifier, bench/sipp/uas_stale_notifier.xml);
- the runner's search + hold and a short soak produce a result and a RESULTS section;
- a REFER the server refuses (403) fails the operator's call;
- a target that answers every call with an error makes the runner report failure (exit 1,
  no rate held): nothing is hidden;
- the search and the verdict as plain logic: bracket and bisection, no input is a failure.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.sipp_suite import find_max_rate, hold_rate, main, rss_verdict
from bench.sipp_trial import (
    SCENARIOS,
    SIPP_DIR,
    TrialSettings,
    judge,
    rooms_file,
    run_trial,
    server_settings,
)
from tests.peers.chorus import ChorusProcess
from tests.peers.sipp import SippResult, SippStats, SippUas, run_sipp, scenario_path

pytestmark = pytest.mark.timeout(300)

SMALL = TrialSettings(rooms=2, call_hold=1.0)


@pytest.fixture(scope="module")
def chorus() -> Iterator[ChorusProcess]:
    with ChorusProcess(server_settings(SMALL.call_hold, 60.0)) as process:
        yield process
        assert process.alive, process.log()
        assert "Traceback" not in process.log(), process.log()


@pytest.mark.peer("sipp", "sipp-pcap")
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_every_scenario_passes_a_small_fixed_rate(chorus: ChorusProcess, name: str) -> None:
    trial = run_trial(SCENARIOS[name], f"127.0.0.1:{chorus.sip_port}", 2.0, 2.0, SMALL)
    assert trial.reasons == []
    assert trial.passed
    assert (trial.offered, trial.successful, trial.failed) == (4, 4, 0)
    assert trial.retransmissions == 0 and trial.unexpected == 0


@pytest.mark.peer("sipp")
def test_a_repeated_notify_version_fails_the_watchers_call(tmp_path: Path) -> None:
    rooms = rooms_file(tmp_path / "rooms.csv", 1)
    with SippUas(SIPP_DIR / "uas_stale_notifier.xml") as notifier:
        result = run_sipp(
            SIPP_DIR / "uac_subscribe_conference.xml",
            notifier.address,
            extra_args=["-inf", str(rooms), "-set", "hold", "2", "-aa"],
            timeout=30,
        )
    assert result.stats is not None, result.describe()
    assert result.stats.failed == 1, result.describe()
    assert result.stats.raw.get("FailedTestDoesntMatch(C)") == "1", result.describe()
    assert 'test "current:1.000000 > last:1.000000" with check_it failed' in result.errors
    _, reasons = judge(result, 1, 1.0, min_rate_ratio=0.0)
    assert any("TestDoesntMatch 1" in reason for reason in reasons), reasons


def _report(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    """The runner's JSON report (stdout)."""
    report: dict[str, Any] = json.loads(capsys.readouterr().out)
    return report


def _passing_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> tuple[dict[str, Any], str]:
    """The runner's report and the RESULTS section it wrote, for a run that must pass.
    A soak of seconds on a fresh server is all warm-up: its RSS limit is lifted here and
    judged by test_rss_verdict_*."""
    results = tmp_path / "RESULTS.md"
    status = main([*argv, "--soak-max-growth", "1000", "--results", str(results)])
    report = _report(capsys)
    assert status == 0, report
    return report, results.read_text()


@pytest.mark.peer("sipp")
def test_runner_search_hold_and_soak_produce_a_result(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report, text = _passing_run(
        tmp_path,
        capsys,
        ["--scenarios", "echo", "--duration", "2", "--hold", "2", "--call-hold", "0.5",
         "--start-rate", "2", "--max-rate", "4", "--rooms", "2",
         "--soak", "0.1", "--soak-sample", "1"],
    )  # fmt: skip
    echo = report["scenarios"]["echo"]
    assert echo["searched"] == [4.0] and echo["held"] == [4.0] and echo["median"] == 4.0
    assert [t["rate"] for t in echo["trials"]] == [2.0, 4.0, 4.0]
    assert all(t["passed"] for t in echo["trials"])
    (soak,) = report["soaks"]
    assert soak["rate"] == 2.0 and soak["passed"] and soak["failed"] == 0
    assert soak["calls"] == soak["successful"] == 12
    assert soak["rss_samples"] > 0 and soak["rss_growth_percent"] is not None
    assert "## SIPp load-test suite" in text
    assert "| echo | 4 | 4 | **4** |" in text
    assert "Soak echo: 0.1 min at 2 calls/s, 12 of 12 calls completed, 0 failed" in text


@pytest.mark.peer("sipp")
def test_a_target_answering_errors_makes_the_runner_report_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "RESULTS.md"
    with SippUas(scenario_path("uas_503")) as busy:
        status = main(
            ["--scenarios", "echo", "--target", busy.address, "--cooldown", "0",
             "--duration", "2", "--hold", "2", "--start-rate", "2", "--max-rate", "4",
             "--max-steps", "2", "--results", str(results)]
        )  # fmt: skip
    report = _report(capsys)
    assert status == 1
    assert report["failed"] == ["echo"]
    echo = report["scenarios"]["echo"]
    assert echo["median"] == 0 and echo["held"] == [0.0]
    trials = echo["trials"]
    assert trials and not any(t["passed"] for t in trials)
    assert all(t["successful"] == 0 and t["failed"] == t["offered"] for t in trials)
    assert all("no call completed (no input)" in t["reasons"] for t in trials)
    assert "| echo | 0 | 0 | **0** |" in results.read_text()


def test_search_doubles_then_bisects_to_the_limit() -> None:
    tried: list[float] = []

    def below_23(rate: float) -> bool:
        tried.append(rate)
        return rate <= 23

    best, failed_at, steps = find_max_rate(
        below_23, start_rate=5, max_rate=1000, precision=0.05, max_steps=20
    )
    assert tried[:4] == [5, 10, 20, 40]
    assert 20 <= best <= 23 < (failed_at or 0) and steps == len(tried)
    assert best > 23 * 0.95 - 1


def test_search_that_never_passes_finds_nothing_and_holds_nothing() -> None:
    best, failed_at, steps = find_max_rate(
        lambda rate: False, start_rate=2, max_rate=4, precision=0.1, max_steps=3
    )
    assert (best, failed_at, steps) == (0.0, 0.5, 3)
    assert hold_rate(lambda rate: False, best) == 0.0
    assert hold_rate(lambda rate: rate <= 9, 10.0) == 8.0


def test_a_trial_without_statistics_or_calls_fails() -> None:
    silent = SippResult(returncode=255, stdout="", stderr="", stats=None)
    assert judge(silent, 10, 5.0, min_rate_ratio=0.9)[1] == ["no statistics from SIPp (exit 255)"]
    nothing = SippResult(0, "", "", SippStats(created=0, successful=0, failed=0))
    reasons = judge(nothing, 10, 5.0, min_rate_ratio=0.9)[1]
    assert "no call completed (no input)" in reasons
    assert "0 of 10 calls completed" in reasons


@pytest.mark.peer("sipp")
def test_a_refused_refer_fails_the_operators_call(chorus: ChorusProcess, tmp_path: Path) -> None:
    # No live room of that name: the server refuses the REFER (403), which the scenario
    # does not take for its 202 or a NOTIFY, so the call fails instead of passing quietly.
    rooms = rooms_file(tmp_path / "rooms.csv", 1)
    result = run_sipp(
        SIPP_DIR / "uac_refer_add_remove.xml",
        f"127.0.0.1:{chorus.sip_port}",
        keys={"target": "127.0.0.1:9"},
        extra_args=["-inf", str(rooms)],
        timeout=30,
    )
    assert result.stats is not None, result.describe()
    assert (result.stats.successful, result.stats.failed) == (0, 1), result.describe()
    assert result.stats.raw.get("FailedUnexpectedMessage(C)") == "1", result.describe()
    assert "403" in result.errors, result.errors


def test_rss_verdict_fails_a_soak_whose_rss_grew_by_the_limit_or_more() -> None:
    # 600 s soak: samples before 60 s are warm-up and not judged
    samples = [(10.0, 50_000), (60.0, 100_000), (300.0, 104_000), (600.0, 105_000)]
    verdict = rss_verdict(samples, 600, 5.0)
    assert verdict["rss_kib_first_after_warmup"] == 100_000
    assert verdict["rss_growth_percent"] == 5.0
    assert verdict["reasons"] == ["RSS grew 5.00 % (limit 5 %)"]
    assert rss_verdict(samples[:3], 600, 5.0)["reasons"] == []  # 4 % passes


def test_rss_verdict_without_two_samples_is_no_pass() -> None:
    assert rss_verdict([(70.0, 100_000)], 600, 5.0)["reasons"] == ["RSS not judged: 1 samples"]
    assert rss_verdict([], 600, 5.0)["reasons"] == ["RSS not judged: 0 samples"]


@pytest.mark.peer("sipp")
def test_soak_together_offers_echo_and_join_at_once_to_one_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report, text = _passing_run(
        tmp_path,
        capsys,
        ["--scenarios", "echo", "join", "--call-hold", "0.5", "--rooms", "2",
         "--soak", "0.1", "--soak-rates", "2", "1", "--soak-together", "--soak-sample", "1"],
    )  # fmt: skip
    assert report["scenarios"] == {}  # rates given: no search
    echo, join = report["soaks"]
    assert (echo["scenario"], echo["rate"], echo["together_with"]) == ("echo", 2.0, ["join"])
    assert (join["scenario"], join["rate"], join["together_with"]) == ("join", 1.0, ["echo"])
    assert echo["calls"] == echo["successful"] == 12 and join["calls"] == join["successful"] == 6
    assert echo["rss_kib_series"] == join["rss_kib_series"] and echo["rss_samples"] > 0
    assert "Soak echo: 0.1 min at 2 calls/s (at once with join), 12 of 12 calls completed" in text
    assert "RSS series (s, KiB): " in text
