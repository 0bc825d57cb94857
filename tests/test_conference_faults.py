"""Through the server: a room whose mixing keeps failing is ended with BYE to everyone in it,
while another room on the same server keeps mixing (checked by FFT).

The server runs in this process (``build_server`` — the same objects ``chorus serve`` builds)
so a fault can be injected into its mixer: every A-law encode raises.  SIP goes over real
loopback sockets to Chorus' own test UA.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from control.media.tone import tone_power
from control.server import Server
from tests.peers.inprocess import running_server
from tests.peers.rtp_endpoint import RtpEndpoint
from tests.test_conference import HEARD, Participant, join, leave, mixed_past
from tests.test_mixer_faults import broken_alaw

pytestmark = pytest.mark.timeout(120)


class _Server:
    """Just what `join` needs of a ChorusProcess: the SIP port and the log."""

    def __init__(self, server: Server, port: int, caplog: pytest.LogCaptureFixture) -> None:
        self.server = server
        self.sip_port = port
        self._caplog = caplog

    def log(self) -> str:
        return self._caplog.text


@pytest.fixture
async def server(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[_Server]:
    broken_alaw(monkeypatch)
    caplog.set_level(logging.INFO, logger="chorus")
    async with running_server(
        tmp_path / "spool",
        rtp={
            "codecs": ["PCMU", "PCMA", "G722"],
            "timeout": 60.0,
            "failure_ticks": 25,
        },
        rtp_ports=1000,
    ) as (chorus, port):
        yield _Server(chorus, port, caplog)


async def test_failing_room_is_ended_with_bye_and_the_other_room_keeps_mixing(
    server: _Server,
) -> None:
    good = [
        await join(server, "good", RtpEndpoint("PCMU", 8000, 0, seed=1)),  # type: ignore[arg-type]
        await join(server, "good", RtpEndpoint("G722", 8000, 9, seed=2)),  # type: ignore[arg-type]
    ]
    bad: list[Participant] = [
        await join(server, "bad", RtpEndpoint("PCMA", 8000, 8, seed=3)),  # type: ignore[arg-type]
        await join(server, "bad", RtpEndpoint("PCMA", 8000, 8, seed=4)),  # type: ignore[arg-type]
    ]
    try:
        await asyncio.gather(
            good[0].endpoint.play(440.0, 2.0),
            good[1].endpoint.play(700.0, 2.0),
            bad[0].endpoint.play(1100.0, 1.0),
        )
        reasons = await asyncio.wait_for(
            asyncio.gather(*(p.session.terminated for p in bad if p.session is not None)), 30
        )
        assert reasons == ["remote BYE", "remote BYE"]
        assert await mixed_past(*(p.endpoint for p in good)), "the good room stopped mixing"
        pcm0 = good[0].endpoint.heard(skip=0.4)
        pcm1 = good[1].endpoint.heard(skip=0.4)
        assert tone_power(pcm0, 8000, 700.0) > HEARD
        assert tone_power(pcm1, 16000, 440.0) > HEARD
        assert all(p.session is not None and not p.session.terminated.done() for p in good)
        assert "room bad@127.0.0.1 failed in the audio engine" in server.log()
        assert "BYE to 2 participants" in server.log()
        counters = await server.server.applications["conference"].engine.stats()  # type: ignore[attr-defined]
        assert counters.rooms_failed == 1
    finally:
        for participant in good:
            await leave(participant)
        for participant in bad:
            participant.endpoint.close()
            await participant.client.__aexit__(None, None, None)
