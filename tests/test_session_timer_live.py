"""RFC 4028 session timers through a running ``chorus serve``, against SIPp and raw sockets.

Chorus runs with ``min_se = 2`` and ``session_expires = 10`` so that expiry comes in seconds:
a SIPp caller that asks to refresh and then stays silent must get Chorus's BYE (and leave its
room), a caller that leaves the refresh to Chorus must get a re-INVITE. The SIPp deadlines
(20 s) are hang guards, far beyond the 2.7 s and 5 s these take.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest

from tests.peers.chorus import ChorusProcess
from tests.peers.rawsip import RawUdp, parse_response, raw_request
from tests.peers.sipp import SippResult, run_sipp

needs_sipp = pytest.mark.peer("sipp")

SDP = (
    b"v=0\r\no=tester 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


@pytest.fixture(scope="module")
def chorus() -> Iterator[ChorusProcess]:
    with ChorusProcess({"sip": {"min_se": 2, "session_expires": 10}}) as process:
        yield process
        assert process.alive, process.log()


def wait_for_log(chorus: ChorusProcess, pattern: str, timeout: float = 20.0) -> bool:
    """Poll the server's log for ``pattern``; the deadline is only a backstop."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if re.search(pattern, chorus.log()):
            return True
        time.sleep(0.05)
    return bool(re.search(pattern, chorus.log()))


def call(chorus: ChorusProcess, scenario: str, room: str, *, se: int) -> SippResult:
    """One SIPp call of ``scenario`` into ``room`` asking for ``se`` seconds; it must pass."""
    result = run_sipp(
        scenario,
        f"127.0.0.1:{chorus.sip_port}",
        service=room,
        keys={"se": str(se), "min_se": "2"},
        trace_messages=True,
        timeout=40,
    )
    assert result.ok, result.describe()
    return result


@needs_sipp
def test_silent_refresher_gets_bye_and_leaves_the_room(chorus: ChorusProcess) -> None:
    result = call(chorus, "uac_session_timer", "timerroom", se=4)
    # The 200 granted exactly what was asked, with the caller as refresher.
    assert re.search(r"Session-Expires: 4;refresher=uac", result.messages)
    # Chorus's BYE ended the call, and the room let the participant go.
    assert re.search(r"^BYE sip:sipp@", result.messages, re.M), result.messages[-3000:]
    assert wait_for_log(chorus, r"left timerroom\S*: session timer expired"), chorus.log()


@needs_sipp
def test_chorus_refreshes_when_the_caller_leaves_it_the_refresh(chorus: ChorusProcess) -> None:
    result = call(chorus, "uac_session_refresh", "refreshroom", se=10)
    assert re.search(r"Session-Expires: 10;refresher=uas", result.messages)
    reinvites = re.findall(
        r"^INVITE sip:sipp@.*?(?=^\S+ \S+ SIP/2\.0|\Z)", result.messages, re.M | re.S
    )
    assert reinvites, result.messages[-3000:]
    assert "Session-Expires: 10;refresher=uac" in reinvites[0]


@needs_sipp
def test_a_caller_that_refreshes_keeps_its_session(chorus: ChorusProcess) -> None:
    result = call(chorus, "uac_session_refreshing", "keptroom", se=10)
    assert not re.search(r"^BYE sip:sipp@", result.messages, re.M)  # only the caller hung up
    assert wait_for_log(chorus, r"left keptroom\S*: remote BYE"), chorus.log()


def invite_status(chorus: ChorusProcess, *extra: tuple[str, str]) -> tuple[int, dict[str, str]]:
    with RawUdp() as client:
        client.send(
            raw_request(
                "INVITE",
                chorus.sip_port,
                user="rawroom",
                body=SDP,
                extra=extra,
                local_port=client.port,
            ),
            chorus.sip_port,
        )
        while (data := client.receive(timeout=10.0)) is not None:
            response = parse_response(data)
            if response.status >= 200:
                return response.status, dict(response.headers)
    raise AssertionError("no final response")


def test_too_small_interval_gets_422_with_min_se(chorus: ChorusProcess) -> None:
    status, headers = invite_status(chorus, ("Supported", "timer"), ("Session-Expires", "1"))
    assert status == 422
    assert headers["Min-SE"] == "2"


def test_malformed_session_expires_gets_400(chorus: ChorusProcess) -> None:
    status, _ = invite_status(chorus, ("Session-Expires", "soon"))
    assert status == 400


def test_require_replaces_gets_420_unsupported(chorus: ChorusProcess) -> None:
    status, headers = invite_status(chorus, ("Require", "replaces"))
    assert status == 420
    assert headers["Unsupported"] == "replaces"


def test_options_advertises_only_what_is_served(chorus: ChorusProcess) -> None:
    """RFC 4028 timers and RFC 4488 norefersub (the conference takes REFER), never replaces."""
    with RawUdp() as client:
        client.send(
            raw_request("OPTIONS", chorus.sip_port, local_port=client.port), chorus.sip_port
        )
        data = client.receive(timeout=10.0)
    assert data is not None
    response = parse_response(data)
    assert response.status == 200
    supported = {
        tag.strip() for value in response.headers.get_all("Supported") for tag in value.split(",")
    }
    assert supported == {"timer", "norefersub"}
