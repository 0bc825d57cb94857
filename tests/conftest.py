"""Suite-wide policy: tests name the real peers they need (see tests/peers/require.py)."""

from __future__ import annotations

import pytest

from tests.peers.require import require_peer


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker in item.iter_markers(name="peer"):
        require_peer(*marker.args)
