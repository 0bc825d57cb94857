"""The suite's peer policy: a missing peer skips locally and fails under CHORUS_REQUIRE_PEERS=1."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

INNER_CONFTEST = """
from tests.conftest import pytest_runtest_setup  # the suite's own hook, under test
from tests.peers.require import PEERS

PEERS["absent-for-test"] = (lambda: False, "absent-for-test (installed by nothing)")
PEERS["present-for-test"] = (lambda: True, "present-for-test")
"""

INNER_TESTS = """
import pytest
from tests.peers.require import require_peer

@pytest.mark.peer("absent-for-test")
def test_marked():
    pass

def test_called():
    require_peer("present-for-test", "absent-for-test")

@pytest.mark.peer("present-for-test")
def test_present():
    pass
"""


def _run(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, env: str | None
) -> pytest.RunResult:
    if env is None:
        monkeypatch.delenv("CHORUS_REQUIRE_PEERS", raising=False)
    else:
        monkeypatch.setenv("CHORUS_REQUIRE_PEERS", env)
    pytester.makeconftest(INNER_CONFTEST)
    pytester.makeini(
        "[pytest]\nasyncio_default_fixture_loop_scope = function\nmarkers =\n    peer: test peers\n"
    )
    pytester.makepyfile(test_inner=INNER_TESTS)
    return pytester.runpytest_inprocess("-rs")


def test_missing_peer_skips_locally_and_is_listed(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = _run(pytester, monkeypatch, None)
    result.assert_outcomes(passed=1, skipped=2)
    result.stdout.fnmatch_lines(["*SKIPPED*not installed: absent-for-test (installed by nothing)*"])


def test_missing_peer_fails_when_peers_are_required(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = _run(pytester, monkeypatch, "1")
    # the marked test fails in setup (an error), the calling one in its body
    result.assert_outcomes(passed=1, failed=1, errors=1)
    result.stdout.fnmatch_lines(["*CHORUS_REQUIRE_PEERS=1 and a peer is not installed*"])


def test_unknown_peer_name_is_an_error_not_a_skip() -> None:
    from tests.peers.require import missing_peers

    with pytest.raises(KeyError):
        missing_peers("no-such-peer")
