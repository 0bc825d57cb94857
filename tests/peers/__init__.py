"""Helpers that run real peer programs (Kamailio, SIPp) for integration tests and benchmarks.

Every helper binds to 127.0.0.1 on free ports, keeps its files in a temporary directory,
and stops what it started.
"""

from tests.peers.kamailio import KamailioProcess, kamailio_available
from tests.peers.ports import free_port, free_ports
from tests.peers.sipp import (
    SippResult,
    SippStats,
    SippUas,
    answer_contacts,
    run_sipp,
    run_sipp_async,
    scenario_path,
    sipp_available,
)

__all__ = [
    "KamailioProcess",
    "SippResult",
    "SippStats",
    "SippUas",
    "answer_contacts",
    "free_port",
    "free_ports",
    "kamailio_available",
    "run_sipp",
    "run_sipp_async",
    "scenario_path",
    "sipp_available",
]
