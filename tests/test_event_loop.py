"""``[server] event_loop``: the standard asyncio loop or uvloop, parsed and validated; a real
``chorus serve`` on uvloop answers SIPp's echo calls over UDP and TCP, reflects RTP and takes
re-INVITEs."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import uvloop

from control.config import ConfigError, parse_config
from control.server import loop_factory
from tests import test_echo
from tests.peers.chorus import ChorusProcess


def test_default_is_the_standard_loop() -> None:
    config = parse_config({})
    assert config.server.event_loop == "asyncio"
    loop = loop_factory(config.server.event_loop)()
    try:
        assert not isinstance(loop, uvloop.Loop)
        assert isinstance(loop, asyncio.AbstractEventLoop)
    finally:
        loop.close()


def test_uvloop_is_chosen_by_name() -> None:
    config = parse_config({"server": {"event_loop": "uvloop"}})
    assert config.server.event_loop == "uvloop"
    loop = loop_factory(config.server.event_loop)()
    try:
        assert isinstance(loop, uvloop.Loop)
    finally:
        loop.close()


@pytest.mark.parametrize("value", ["trio", "UVLOOP", ""])
def test_unknown_event_loop_is_an_error_naming_the_key(value: str) -> None:
    with pytest.raises(ConfigError, match=r"server\.event_loop"):
        parse_config({"server": {"event_loop": value}})


@pytest.fixture(scope="module")
def chorus_on_uvloop() -> Iterator[ChorusProcess]:
    with ChorusProcess({"server": {"event_loop": "uvloop"}}) as process:
        yield process
        assert process.alive, process.log()


# The echo suite's own tests, run against the server on uvloop (the same assertions, not a
# copy of them).


@pytest.mark.peer("sipp")
@pytest.mark.parametrize("transport", ["u1", "t1"])
def test_sipp_calls_to_echo_on_uvloop(chorus_on_uvloop: ChorusProcess, transport: str) -> None:
    test_echo.test_sipp_200_calls_to_echo(chorus_on_uvloop, transport)


@pytest.mark.parametrize(
    ("codec_name", "pt", "rtpmaps"),
    [("PCMU", "0", test_echo.PCMU_OFFER), ("G722", "9", test_echo.G722_OFFER)],
)
async def test_rtp_tone_comes_back_on_uvloop(
    chorus_on_uvloop: ChorusProcess, codec_name: str, pt: str, rtpmaps: str
) -> None:
    # The reflector's socket is a uvloop datagram transport.
    await test_echo.test_tone_comes_back(chorus_on_uvloop, codec_name, pt, rtpmaps)


async def test_reinvite_hold_resume_on_uvloop(chorus_on_uvloop: ChorusProcess) -> None:
    await test_echo.test_reinvite_hold_resume_and_codec_change(chorus_on_uvloop)
