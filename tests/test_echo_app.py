"""Echo through control/app.py's domain objects, over real sockets to a running
``chorus serve``: a MESSAGE inside the call's dialog reaches echo (RFC 3428 §4 within a
dialog), the layer answers an offerless or malformed INVITE once for every application, and
SUBSCRIBE/REFER get echo's refusals."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from control.sip.session import SessionState
from tests.peers.chorus import ChorusProcess
from tests.peers.sipclient import SipClient
from tests.peers.wait import wait_until
from tests.test_echo import PCMU_OFFER, offer

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def chorus() -> Iterator[ChorusProcess]:
    with ChorusProcess({"echo": {"session_limit": 600}}) as process:
        yield process
        assert process.alive, process.log()


async def test_message_inside_the_call_dialog_reaches_echo(chorus: ChorusProcess) -> None:
    async with SipClient("udp") as sip:
        session, response = await sip.call(
            f"sip:echo@127.0.0.1:{chorus.sip_port}", offer(4000, "0", PCMU_OFFER), chorus.sip_port
        )
        assert session is not None, response.status
        answered = await session.request(
            "MESSAGE", body=b"in the dialog", content_type="text/plain"
        )
        assert answered.status == 200
        await wait_until(lambda: sip.received)
        reply = sip.received[0].request
        assert reply.method == "MESSAGE" and reply.body == b"in the dialog"
        info = await session.request("INFO")
        assert info.status == 200  # other in-dialog requests as before the hook
        await session.bye()
        assert session.state is SessionState.TERMINATED


async def test_offerless_invite_is_488_from_the_layer(chorus: ChorusProcess) -> None:
    async with SipClient("udp") as sip:
        session, response = await sip.call(
            f"sip:echo@127.0.0.1:{chorus.sip_port}", b"", chorus.sip_port
        )
        assert session is None and response.status == 488


async def test_malformed_sdp_is_refused_by_the_layer(chorus: ChorusProcess) -> None:
    async with SipClient("udp") as sip:
        session, response = await sip.call(
            f"sip:echo@127.0.0.1:{chorus.sip_port}", b"v=0\r\nnot sdp at all\r\n", chorus.sip_port
        )
        assert session is None and response.status in (400, 488)


@pytest.mark.parametrize(("method", "status"), [("SUBSCRIBE", 489), ("REFER", 405)])
async def test_subscribe_and_refer_get_echos_refusals(
    chorus: ChorusProcess, method: str, status: int
) -> None:
    async with SipClient("udp") as sip:
        headers = (
            [("Event", "conference")]
            if method == "SUBSCRIBE"
            else [("Refer-To", "<sip:bob@127.0.0.1>")]
        )
        response = await sip.request(
            method, f"sip:echo@127.0.0.1:{chorus.sip_port}", chorus.sip_port, extra_headers=headers
        ).final
        assert response.status == status
