"""The admin API of a real ``chorus serve`` (issue 10, "Must show": the API refuses a missing
or wrong token): 401 with the RFC 6750 challenge without a token and with a wrong one, for
reads and actions alike (a refused kick leaves the participant in the room); the configured
``[api] token`` and a fixed ``[api] listen`` port are honoured; health and the OpenAPI
document need no token; the room view shows the participants with their streams.
"""

from __future__ import annotations

from collections.abc import Iterator

import aiohttp
import pytest

from tests.peers.chatclient import ChatClient
from tests.peers.chorus import ChorusProcess
from tests.peers.ports import free_ports

pytestmark = pytest.mark.timeout(120)

TOKEN = "operator-token-0123456789"


@pytest.fixture(scope="module")
def chorus() -> Iterator[ChorusProcess]:
    (port,) = free_ports(1)
    settings = {"api": {"listen": f"http:127.0.0.1:{port}", "token": TOKEN}}
    with ChorusProcess(settings) as process:
        process.api_port = port  # type: ignore[attr-defined]
        yield process
        assert process.alive, process.log()
        assert "Traceback" not in process.log(), process.log()


async def test_missing_or_wrong_token_refused(chorus: ChorusProcess) -> None:
    base = f"http://127.0.0.1:{chorus.api_port}"  # type: ignore[attr-defined]
    assert (chorus.workdir / "spool" / "api" / "url").read_text().strip() == base
    async with ChatClient("alice", "Alice") as alice_client:
        alice = await alice_client.join(chorus, "guarded")
        kick = base + "/api/rooms/guarded/participants/alice@127.0.0.1/kick"
        async with aiohttp.ClientSession() as http:
            for headers in ({}, {"Authorization": "Bearer " + "x" * 25}, {"Authorization": TOKEN}):
                async with http.get(base + "/api/rooms", headers=headers) as response:
                    assert response.status == 401, headers
                    assert response.headers["WWW-Authenticate"].startswith("Bearer")
                    assert "error" in await response.json()
                async with http.post(kick, headers=headers) as response:
                    assert response.status == 401, headers
            assert alice.session is not None and not alice.session.terminated.done()
            async with http.get(base + "/api/health") as response:
                assert response.status == 200
                health = await response.json()
                assert (health["status"], health["rooms"], health["participants"]) == ("ok", 1, 1)
            async with http.get(base + "/api/openapi.json") as response:
                assert (
                    "/api/rooms/{room}/participants/{participant}/kick"
                    in (await response.json())["paths"]
                )
            auth = {"Authorization": f"Bearer {TOKEN}"}
            async with http.get(base + "/api/rooms/guarded", headers=auth) as response:
                assert response.status == 200
                room = await response.json()
        [person] = room["participants"]
        assert (person["uri"], person["role"]) == ("sip:alice@127.0.0.1", "moderator")
        assert [s["kind"] for s in person["streams"]] == ["chat"]
        assert room["files"] == [] and room["subscriptions"] >= 0
