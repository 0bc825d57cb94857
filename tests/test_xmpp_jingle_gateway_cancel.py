"""A caller's CANCEL of a ringing call through the Jingle gateway (issue 12), against a real
Prosody and real SIP peers, juliet@xmpp.localhost being tests/peers/jinglepeer.py:

- SIP → XMPP: SIPp (tests/sipp/uac_cancel_ringing.xml) calls juliet, her ``<ringing/>`` is
  its 180, it CANCELs: 200 to the CANCEL, 487 to the INVITE, and juliet gets the XEP-0353
  ``<retract/>`` (reason cancel) at once. ``jingle_ring_timeout`` is far longer than the
  wait for it, so the retract cannot be the ring timer's.

- XMPP → SIP: juliet proposes a call to romeo@sip.localhost, the gateway's INVITE reaches a
  SIPp UAS (tests/sipp/uas_refer_ringing.xml: 180, then it waits for the CANCEL) as Chorus'
  outbound proxy; the 180 is juliet's ``<ringing/>``, her ``<retract/>`` the INVITE's CANCEL
  (SIPp answers 200 and 487, Chorus ACKs), again well before ``jingle_ring_timeout``.

SIPp as the caller sends straight to Chorus (no outbound proxy then).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from control.xmpp.jinglegw import RESOURCE
from control.xmpp.jinglemessage import JingleMessage
from tests.peers.ports import free_ports
from tests.peers.sipp import SippUas, run_sipp_async
from tests.peers.wait import wait_until
from tests.test_xmpp_jingle_gateway import gateway

pytestmark = [pytest.mark.peer("prosody", "aiortc", "sipp"), pytest.mark.timeout(300)]

RING_TIMEOUT = 120  # seconds: far past every wait below
ROMEO = "romeo@sip.localhost"


async def test_a_sipp_cancel_of_a_ringing_call_retracts_the_proposal(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    trace = tmp_path / "sip.trace"  # what crossed Chorus' SIP socket, shown on a failure
    gw = gateway(tmp_path, None, port, jingle_ring_timeout=RING_TIMEOUT, trace_sip=trace)
    async with gw as (app, juliet, _):
        keys = {"xmpp_domain": "xmpp.localhost", "sip_domain": "sip.localhost"}
        sipp = asyncio.ensure_future(
            run_sipp_async(
                "uac_cancel_ringing",
                f"127.0.0.1:{port}",
                keys=keys,
                recv_timeout_ms=60_000,
                timeout=90,
            )
        )
        try:
            caller, propose = await juliet.next_message("propose", timeout=60)
        except TimeoutError:
            raise AssertionError((await sipp).describe()) from None
        assert caller == f"{ROMEO}/{RESOURCE}" and propose.audio
        juliet.send_message(caller, JingleMessage("ringing", propose.id))  # the 180
        try:
            _, retract = await juliet.next_message("retract", timeout=20)
        except TimeoutError:
            raise AssertionError(f"no retract; SIP trace:\n{_read(trace)}") from None
        assert retract.id == propose.id
        assert retract.reason is not None and retract.reason.condition == "cancel"
        result = await sipp
        assert result.ok, result.describe()  # 200 for the CANCEL, 487 for the INVITE
        assert await wait_until(lambda: len(app.jingle) == 0, timeout=30)
        assert juliet.session is None


async def test_an_xmpp_retract_of_a_ringing_call_cancels_the_sip_invite(tmp_path: Path) -> None:
    with SippUas("uas_refer_ringing") as uas:
        async with gateway(
            tmp_path, None, proxy_port=uas.port, jingle_ring_timeout=RING_TIMEOUT
        ) as (app, juliet, _):
            sid = juliet.propose(ROMEO)
            _, ringing = await juliet.next_message("ringing", timeout=60)  # SIPp's 180
            assert ringing.id == sid
            juliet.send_message(ROMEO, JingleMessage("retract", sid))
            # the SIPp call ends once its CANCEL came (it waits 30 s for it), was answered
            # 200 and 487, and the 487 was ACKed
            assert await wait_until(lambda: len(app.jingle) == 0, timeout=30)
        result = await uas.astop()
    assert result.stats is not None and result.stats.successful == 1, result.describe()
    assert result.stats.failed == 0, result.describe()


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else "(none)"
