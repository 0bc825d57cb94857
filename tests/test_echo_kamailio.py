"""Echo behind the production edge: SIPp → real Kamailio (deploy/kamailio) → Chorus.

Kamailio record-routes and dispatches on the Request-URI; Chorus must accept what arrives
through it (a trusted peer), answer, and take ACK and BYE along the recorded route. Chorus's
SIP trace shows the transport each request arrived on: with a `;transport=tcp` dispatcher
destination, every request of every call reaches Chorus over TCP, sent by Kamailio (its Via
on top says TCP), whatever SIPp used towards Kamailio.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.peers.chorus import ChorusProcess
from tests.peers.kamailio import KamailioProcess
from tests.peers.sipp import run_sipp, scenario_path
from tests.peers.siptrace import parse_trace

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.peer("kamailio", "sipp"),
]


@pytest.fixture(scope="module")
def chorus() -> Iterator[ChorusProcess]:
    with ChorusProcess() as process:
        yield process
        assert process.alive, process.log()


@pytest.mark.parametrize(
    ("sipp_transport", "node_transport"), [("u1", "udp"), ("t1", "tcp"), ("u1", "tcp")]
)
def test_200_calls_through_kamailio(
    chorus: ChorusProcess, sipp_transport: str, node_transport: str
) -> None:
    node = f"sip:127.0.0.1:{chorus.sip_port}"
    if node_transport == "tcp":
        node += ";transport=tcp"
    already = len(chorus.trace())
    with KamailioProcess([node]) as kamailio:
        result = run_sipp(
            scenario_path("uac_echo.xml"),
            kamailio.sip_address,
            transport=sipp_transport,  # type: ignore[arg-type]
            calls=200,
            rate=50,
            service="echo",
            pause_ms=200,
            timeout=90,
        )
        assert result.returncode == 0, result.describe() + "\n" + kamailio.log()[-3000:]
        assert result.stats is not None and result.stats.successful == 200
    trace = chorus.trace()[already:]
    # Every request reached Chorus through Kamailio, which record-routed the dialog.
    assert "Record-Route:" in trace
    requests = [m for m in parse_trace(trace) if m.received and m.method is not None]
    methods = [m.method for m in requests]
    # At least one of each per call (over UDP a retransmission can add one).
    assert all(methods.count(m) >= 200 for m in ("INVITE", "ACK", "BYE")), methods[:10]
    # The Kamailio -> Chorus hop: the socket each request came in on, and Kamailio's Via.
    hops = {(m.transport, m.via_transports()[0]) for m in requests}
    assert hops == {(node_transport, node_transport)}, hops
    assert chorus.alive
