"""The operator dashboard in headless Chromium (issue 13, "Must show": the dashboard shows a
live room in Chromium, screenshot and DOM check), against a real ``chorus serve`` in cluster
mode behind a real Kamailio (its JSON-RPC, so the node health and the drain are real):

- a wrong token is refused on the page; the operator's token shows the node (cluster phase
  active, Kamailio RPC up) and no room;
- chat participants joining and leaving a room appear and disappear as the room model
  changes (pushed, no reload), with their media; a file pushed into the room appears with a
  download link that serves its bytes, a screen shared over MSRP (Blink's way) appears with
  its viewer's signed link; a screenshot is taken of the live room;
- the drain button drains the node (Kamailio's dispatcher flags it DX, the page says
  draining), the same button takes new rooms again (AP, active);
- POST /dashboard/drain without the token is 401.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from control.kamailio import parse_dispatcher_list
from tests.peers.chatclient import ChatClient
from tests.peers.chorus import ChorusProcess
from tests.peers.chromium import Page, decode_png, running_chromium
from tests.peers.kamailio import KamailioProcess
from tests.peers.ports import free_ports
from tests.peers.wait import wait_until
from tests.test_room_files_live import Upload, push
from tests.test_room_screen_live import RED, share

pytestmark = [pytest.mark.timeout(240), pytest.mark.peer("chromium", "kamailio")]

TOKEN = "dashboard-operator-0123456789"
ROOM = "dash@127.0.0.1"
WAIT = 30.0


@pytest.fixture(scope="module")
def edge() -> Iterator[KamailioProcess]:
    with KamailioProcess([], defines={"WITH_DS_PING": True, "DS_PING_INTERVAL": 1}) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def chorus(edge: KamailioProcess) -> Iterator[ChorusProcess]:
    (web_port,) = free_ports(1)
    settings = {
        "web": {"listen": f"http:127.0.0.1:{web_port}"},
        "api": {"token": TOKEN},
        "cluster": {"kamailio_rpc": edge.rpc_url, "drain_exit": False},
    }
    with ChorusProcess(settings) as process:
        process.web = f"http://127.0.0.1:{web_port}"  # type: ignore[attr-defined]
        yield process
        assert process.alive, process.log()
        assert "Traceback" not in process.log(), process.log()


def flags(edge: KamailioProcess, node: ChorusProcess) -> str | None:
    try:
        targets = parse_dispatcher_list(edge.rpc_call("dispatcher.list"))
    except OSError:
        return None
    uri = f"sip:127.0.0.1:{node.sip_port}"
    return next((t.flags for t in targets if t.uri == uri), None)


def rows(room: str = ROOM) -> str:
    return f"document.querySelectorAll('section.room[data-room=\"{room}\"] tr[data-participant]')"


async def login(page: Page, base: str, token: str) -> None:
    await page.navigate(base + "/dashboard")
    assert await page.evaluate("document.body.dataset.state") == "login"
    await page.evaluate(
        f"document.getElementById('token').value = {token!r};"
        "document.getElementById('connect').click(); true"
    )


async def test_live_rooms_health_and_drain(
    chorus: ChorusProcess, edge: KamailioProcess, tmp_path: Path
) -> None:
    base = chorus.web  # type: ignore[attr-defined]
    assert await wait_until(lambda: flags(edge, chorus) == "AP", timeout=WAIT)
    async with running_chromium() as browser:
        page = await browser.new_page(width=1000, height=700)
        await login(page, base, "x" * 29)
        await page.wait_for("document.body.dataset.state === 'refused'", timeout=WAIT)
        assert "invalid token" in await page.evaluate(
            "document.getElementById('status').textContent"
        )

        await login(page, base, TOKEN)
        await page.wait_for("document.body.dataset.state === 'live'", timeout=WAIT)
        assert await page.evaluate("document.getElementById('phase').dataset.phase") == "active"
        kamailio = "document.querySelector('[data-health=kamailio]').textContent"
        assert await page.wait_for(f"{kamailio} === 'up'", timeout=WAIT)
        assert await page.evaluate("document.getElementById('room-count').textContent") == "0"

        async with ChatClient("alice", "Alice") as alice, ChatClient("bob", "Bob") as bob:
            alice_chat = await alice.join(chorus, "dash")
            await page.wait_for(f"{rows()}.length === 1", timeout=WAIT)
            bob_chat = await bob.join(chorus, "dash")
            await page.wait_for(f"{rows()}.length === 2", timeout=WAIT)
            cells = "r => r.cells[0].textContent + '|' + r.cells[2].textContent"
            names = await page.evaluate(f"Array.from({rows()}).map({cells})")
            assert sorted(names) == ["Alice|chat", "Bob|chat"]
            link = await page.evaluate(
                f"document.querySelector('section.room[data-room=\"{ROOM}\"] h3 a').href"
            )
            assert link.startswith(base + "/room/dash@127.0.0.1?t=")
            data = random.Random(5).randbytes(200_000)
            upload = Upload(data, hashlib.sha1(data).digest(), name="agenda.bin")
            assert (await push(alice, chorus, upload, room="dash"))[-1] == 200
            item = f"document.querySelector('li[data-sha1=\"{upload.sha1.hex()}\"] a')"
            await page.wait_for(f"{item} !== null", timeout=WAIT)
            assert await page.evaluate(f"{item}.textContent") == "agenda.bin"
            async with (
                aiohttp.ClientSession() as http,
                http.get(await page.evaluate(f"{item}.href")) as download,
            ):
                assert download.status == 200 and await download.read() == data
            assert await page.evaluate(f"{rows()}.length") == 2  # a transfer is not a person
            assert await share(alice_chat, RED) == 200  # Blink's screen sharing, one frame
            screen = "document.querySelector('li[data-screen] a')"
            await page.wait_for(f"{screen} !== null", timeout=WAIT)
            assert await page.evaluate(f"{screen}.textContent") == "screen of Alice"
            viewer = await page.evaluate(f"{screen}.href")
            assert viewer.startswith(base + "/screen/dash@127.0.0.1/")
            async with aiohttp.ClientSession() as http, http.get(viewer) as response:
                assert response.status == 200 and "screen.js" in await response.text()
            shot = await page.screenshot()
            (tmp_path / "dashboard.png").write_bytes(shot)
            bitmap = decode_png(shot)
            assert (bitmap.width, bitmap.height) == (1000, 700)
            updates = int(await page.evaluate("Number(document.body.dataset.updates)"))

            await bob_chat.leave()
            await page.wait_for(f"{rows()}.length === 1", timeout=WAIT)
            # pushed into the same page: more updates, no reload (the state is still live)
            assert int(await page.evaluate("Number(document.body.dataset.updates)")) > updates
            assert await page.evaluate("document.body.dataset.state") == "live"

        await page.wait_for("document.getElementById('room-count').textContent === '0'")

        drain = "document.getElementById('drain')"
        assert await page.evaluate(f"{drain}.hidden") is False
        await page.evaluate(f"{drain}.click(); true")
        await page.wait_for(f"{drain}.dataset.answer === '200'", timeout=WAIT)
        assert await wait_until(lambda: flags(edge, chorus) == "DX", timeout=WAIT)
        await page.wait_for(
            "document.getElementById('phase').dataset.phase === 'draining'", timeout=WAIT
        )
        assert await page.evaluate(f"{drain}.textContent") == "Take new rooms again"
        await page.evaluate(f"delete {drain}.dataset.answer; {drain}.click(); true")
        await page.wait_for(f"{drain}.dataset.answer === '200'", timeout=WAIT)
        assert await wait_until(lambda: flags(edge, chorus) == "AP", timeout=WAIT)
        await page.wait_for(
            "document.getElementById('phase').dataset.phase === 'active'", timeout=WAIT
        )

    drain_url = base + "/dashboard/drain"
    async with aiohttp.ClientSession() as http, http.post(drain_url, json={}) as response:
        assert response.status == 401
    assert flags(edge, chorus) == "AP"
