"""deploy/prosody: the config passes ``prosodyctl check config``, and a Prosody started from
it (tests/peers/prosody.py) takes the Chorus component and TLS-only clients."""

from __future__ import annotations

import asyncio
import re

import pytest
from slixmpp import ClientXMPP, ComponentXMPP

from tests.peers.prosody import CONFIG, ProsodyProcess, check_config, client_ssl_context

pytestmark = pytest.mark.peer("prosody")


@pytest.fixture
def prosody():  # type: ignore[no-untyped-def]
    with ProsodyProcess(users={"bob": "bob-password"}) as server:
        yield server


def test_deploy_config_passes_prosodyctl_check(prosody: ProsodyProcess) -> None:
    done = check_config(prosody.env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "All checks passed" in done.stdout


def test_deploy_config_requires_tls_for_clients_and_federation() -> None:
    text = CONFIG.read_text()
    for setting in ("c2s_require_encryption", "s2s_require_encryption", "s2s_secure_auth"):
        assert re.search(rf"^{setting} = true$", text, re.M), setting
    assert re.search(r"^Component \(component_domain\)\n\tcomponent_secret = ENV_", text, re.M)


async def test_component_handshakes_and_a_tls_client_reaches_it(prosody: ProsodyProcess) -> None:
    component = ComponentXMPP(prosody.component_jid, prosody.component_secret)
    received: asyncio.Queue[object] = asyncio.Queue()
    component.add_event_handler("message", received.put_nowait)
    up = asyncio.Event()
    component.add_event_handler("session_start", lambda _: up.set())
    component.connect("127.0.0.1", prosody.component_port)
    client = ClientXMPP(f"bob@{prosody.xmpp_domain}/test", "bob-password")
    client.ssl_context = client_ssl_context()
    encrypted = asyncio.Event()
    client.add_event_handler("session_start", lambda _: encrypted.set())
    try:
        await asyncio.wait_for(up.wait(), 20)
        client.connect("127.0.0.1", prosody.c2s_port)
        await asyncio.wait_for(encrypted.wait(), 20)
        assert client.transport.get_extra_info("ssl_object") is not None  # STARTTLS done
        client.send_message(mto=f"alice@{prosody.component_jid}", mbody="hello", mtype="chat")
        message = await asyncio.wait_for(received.get(), 20)
        assert message["body"] == "hello"  # type: ignore[index]
        assert str(message["from"]) == f"bob@{prosody.xmpp_domain}/test"  # type: ignore[index]
    finally:
        client.disconnect()
        component.disconnect()


async def test_component_with_a_wrong_secret_is_refused(prosody: ProsodyProcess) -> None:
    component = ComponentXMPP(prosody.component_jid, "not-the-secret")
    outcome: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    component.add_event_handler(
        "session_start", lambda _: outcome.done() or outcome.set_result("accepted")
    )
    component.add_event_handler(
        "stream_error", lambda e: outcome.done() or outcome.set_result(e["condition"])
    )
    component.connect("127.0.0.1", prosody.component_port)
    try:
        assert await asyncio.wait_for(outcome, 20) == "not-authorized"
    finally:
        component.disconnect()
