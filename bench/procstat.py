"""CPU time and resident memory of a process and its descendants, read from /proc.

A benchmark charges a server for everything it runs: the main process and every worker it
spawned (mixer workers, Kamailio's children). CPU time is utime + stime of
/proc/PID/stat (all threads of the process, in clock ticks); memory is VmRSS of
/proc/PID/status. No psutil on this machine, and none needed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

__all__ = ["cpu_seconds", "load_average", "process_tree", "rss_kib"]

_TICK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may hold spaces: split after its ')'.
    return text[text.rindex(")") + 2 :].split()


def process_tree(root: int) -> list[int]:
    """`root` and every live descendant of it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU seconds the processes have used so far (gone ones count 0)."""
    total = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / _TICK


def rss_kib(pids: Iterable[int]) -> int:
    """Sum of VmRSS over the processes, KiB."""
    total = 0
    for pid in pids:
        try:
            lines = Path(f"/proc/{pid}/status").read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages, rounded for a report."""
    return [round(x, 2) for x in os.getloadavg()]
