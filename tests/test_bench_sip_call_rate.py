"""bench/sip_call_rate's interleaved ladder: same-rate pairs, no-input steps, CPU pinning."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.kamailio_reference import StepResult
from bench.sip_call_rate import REFERENCE, pair_ratios, pin_tree, step_record


def _step(name: str, rate: float, cpu: float, passed: bool = True) -> dict[str, object]:
    return {"rate": rate, "passed": passed, "cpu_seconds_per_1000_calls": {name: cpu}}


def test_pairs_only_rates_both_passed_in_the_same_round() -> None:
    rounds = [
        {
            REFERENCE: [_step("kamailio", 400, 0.5), _step("kamailio", 800, 0.4, passed=False)],
            "chorus_direct": [_step("chorus", 400, 1.5), _step("chorus", 800, 1.2)],
        },
        {REFERENCE: [_step("kamailio", 400, 1.0)], "chorus_direct": [_step("chorus", 400, 2.0)]},
    ]
    pairs = pair_ratios(rounds, "chorus_direct")  # type: ignore[arg-type]
    assert [(p["round"], p["rate"], p["ratio"]) for p in pairs] == [(1, 400, 3.0), (2, 400, 2.0)]


def test_a_step_that_received_no_call_fails() -> None:
    empty = StepResult(
        rate=100, calls=0, successful=0, failed=0, achieved_rate=0.0, retransmissions=0,
        returncode=0, sustained=True, wall_seconds=1.0,
    )  # fmt: skip
    assert step_record(empty)["passed"] is False


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to pin one")
def test_pin_tree_moves_every_thread_of_the_process_and_its_children() -> None:
    code = (
        "import subprocess, sys, threading, time\n"
        "threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'])\n"
        "time.sleep(30)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code])
    children: list[str] = []
    try:
        cpu = sorted(os.sched_getaffinity(0))[-1]
        for _ in range(100):  # until the thread and the child are there
            tasks = len(os.listdir(f"/proc/{parent.pid}/task"))
            children = Path(f"/proc/{parent.pid}/task/{parent.pid}/children").read_text().split()
            if tasks >= 2 and children:
                break
            subprocess.run(["sleep", "0.05"], check=True)
        assert pin_tree(parent.pid, cpu) >= 3  # main thread, its thread, the child
        for pid in (parent.pid, int(children[0])):
            for task in os.listdir(f"/proc/{pid}/task"):
                assert os.sched_getaffinity(int(task)) == {cpu}
    finally:
        for child in children:
            os.kill(int(child), 9)
        parent.kill()
        parent.wait()
