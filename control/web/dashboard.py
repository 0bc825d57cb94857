"""The operator dashboard: live rooms, participants, files, screens and node health, and the
drain button (issue 13 item 4).

    GET  /dashboard              the page: asks for the operator's token, then follows the node
    GET  /static/dashboard.js    its script
    GET  /dashboard/ws           WebSocket: the first message from the page is
                                 ``{"token": "..."}`` (a browser cannot set headers on a
                                 WebSocket); a wrong one is ``{"error": ...}`` and close 4401.
                                 Then one JSON snapshot per change of the model
    POST /dashboard/drain        ``Authorization: Bearer``; ``{"undo": false}`` drains the node
                                 as ``chorus drain`` does, ``{"undo": true}`` as
                                 ``chorus drain --undo``; 409 outside cluster mode

The token is the admin API's (``[api] token``): the dashboard is the operator's, as the API
is. The page itself holds no data, so it needs no token. Snapshots come from the
`DashboardModel` (control/web/dashboard_model.py), pushed when it reports a room change and
otherwise looked at every `SCAN_INTERVAL` (rooms appearing, node health); a snapshot equal to
the last one sent is not sent. Links in it (room page, downloads, screen viewers) are signed
afresh when sent, like the room page's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any, Protocol

from aiohttp import WSMsgType, web

from control.media.engine import ParticipantId, RoomId
from control.web.auth import bearer_refusal, token_matches
from control.web.context import CONTEXT, WebUrls

__all__ = ["DASHBOARD_SCRIPT", "Dashboard", "DashboardModel"]

log = logging.getLogger("chorus.web")

SCAN_INTERVAL = 0.5  # seconds between looks for new rooms and health changes
AUTH_TIMEOUT = 10.0  # seconds the page has to send its token
REFUSED = 4401  # WebSocket close code (RFC 6455 §7.4.2: 4000-4999 are the application's)
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'"
    ),
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}


class DashboardModel(Protocol):
    def snapshot(self) -> dict[str, Any]: ...

    def follow(self, wake: Callable[[], None]) -> None: ...

    def unfollow(self, wake: Callable[[], None]) -> None: ...

    @property
    def can_drain(self) -> bool: ...

    def drain(self, undo: bool) -> None: ...


def with_links(snapshot: dict[str, Any], urls: WebUrls) -> dict[str, Any]:
    """The snapshot with signed links, leaving `snapshot` itself as it was."""
    rooms = []
    for room in snapshot["rooms"]:
        room_id = RoomId(room["id"])
        rooms.append(
            {
                **room,
                "page": urls.room_page(room_id),
                "files": [
                    {**f, "url": urls.file_download(room_id, f["sha1"])} for f in room["files"]
                ],
                "screens": [
                    {"participant": p, "url": urls.screen_page(room_id, ParticipantId(p))}
                    for p in room["screens"]
                ],
            }
        )
    return {**snapshot, "rooms": rooms}


class Dashboard:
    def __init__(self, model: DashboardModel, token: str) -> None:
        self.model = model
        self.token = token
        self._closing = asyncio.Event()

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/dashboard", self.page)
        router.add_get("/static/dashboard.js", self.script)
        router.add_get("/dashboard/ws", self.websocket, allow_head=False)
        router.add_post("/dashboard/drain", self.drain)

    def close(self) -> None:
        """End every live feed, so the server's stop does not wait for open dashboards."""
        self._closing.set()

    async def page(self, request: web.Request) -> web.Response:
        return web.Response(text=_PAGE, content_type="text/html", headers=PAGE_HEADERS)

    async def script(self, request: web.Request) -> web.Response:
        return web.Response(
            text=DASHBOARD_SCRIPT,
            content_type="application/javascript",
            headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
        )

    async def drain(self, request: web.Request) -> web.Response:
        refusal = bearer_refusal(request, self.token)
        if refusal is not None:
            return refusal
        if not self.model.can_drain:
            return web.json_response({"error": "not in cluster mode"}, status=409)
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("undo", False), bool):
            return web.json_response({"error": 'expected {"undo": true|false}'}, status=400)
        undo = body.get("undo", False)
        log.info("dashboard: %s requested from %s", "undrain" if undo else "drain", request.remote)
        self.model.drain(undo)
        return web.json_response({"ok": True, "undo": undo})

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=30.0)
        await ws.prepare(request)
        if not await self._authenticated(ws, request):
            return ws
        urls = request.app[CONTEXT].urls
        wake = asyncio.Event()
        self.model.follow(wake.set)
        reader = asyncio.create_task(_drain_incoming(ws))
        closing = asyncio.create_task(self._closing.wait())
        try:
            last: dict[str, Any] | None = None
            while not ws.closed and not reader.done() and not closing.done():
                wake.clear()
                snapshot = self.model.snapshot()
                if snapshot != last:
                    await ws.send_json(with_links(snapshot, urls))
                    last = snapshot
                woken = asyncio.create_task(wake.wait())
                await asyncio.wait(
                    (woken, reader, closing),
                    timeout=SCAN_INTERVAL,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                woken.cancel()
        except ConnectionResetError:
            pass  # the page went away mid-send
        finally:
            self.model.unfollow(wake.set)
            for task in (reader, closing):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await ws.close()
        return ws

    async def _authenticated(self, ws: web.WebSocketResponse, request: web.Request) -> bool:
        try:
            message = await asyncio.wait_for(ws.receive(), AUTH_TIMEOUT)
        except TimeoutError:
            await ws.close(code=REFUSED, message=b"no token")
            return False
        given = ""
        if message.type is WSMsgType.TEXT:
            with contextlib.suppress(ValueError):
                data = json.loads(message.data)
                if isinstance(data, dict) and isinstance(data.get("token"), str):
                    given = data["token"]
        if given and token_matches(given, self.token):
            return True
        log.warning("dashboard: wrong token from %s", request.remote)
        await ws.send_json({"error": "invalid token"})
        await ws.close(code=REFUSED, message=b"invalid token")
        return False


async def _drain_incoming(ws: web.WebSocketResponse) -> None:
    """Read (and ignore) what the page sends, so close frames and pings are handled."""
    async for _ in ws:
        pass


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Chorus dashboard</title>
<style>
body { font: 14px sans-serif; margin: 1em; color: #222; }
table { border-collapse: collapse; margin: .3em 0 1em; }
td, th { padding: 2px 8px; text-align: left; border-bottom: 1px solid #ddd; }
dl { display: grid; grid-template-columns: max-content auto; gap: 2px 12px; }
dt { font-weight: bold; }
.bad { color: #b00; } .good { color: #070; }
section.room { border: 1px solid #bbb; padding: .5em 1em; margin: .5em 0; }
#drain { font-size: 14px; padding: 4px 12px; }
</style></head>
<body data-state="login">
<h1>Chorus dashboard</h1>
<form id="login"><label>Operator token
<input id="token" type="password" autocomplete="off" size="40"></label>
<button id="connect" type="submit">Connect</button></form>
<p id="status">Not connected.</p>
<div id="live" hidden>
<h2>Node</h2>
<dl id="node"></dl>
<p><button id="drain" type="button" hidden>Drain</button></p>
<h2>Rooms (<span id="room-count">0</span>)</h2>
<div id="rooms"></div>
</div>
<script src="/static/dashboard.js"></script>
</body></html>
"""

DASHBOARD_SCRIPT = """\
"use strict";
(function () {
  const body = document.body;
  const status = document.getElementById("status");
  const live = document.getElementById("live");
  const drainButton = document.getElementById("drain");
  let token = sessionStorage.getItem("chorus-token") || "";
  let snapshot = null;

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (key.startsWith("data-")) node.setAttribute(key, value);
      else node[key] = value;
    }
    for (const child of children) {
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function yesNo(ok, good, bad) {
    return el("span", { className: ok ? "good" : "bad" }, ok ? good : bad);
  }

  function renderNode(node) {
    const dl = document.getElementById("node");
    const rows = [
      ["version", node.version],
      ["up since", new Date(node.started_at * 1000).toISOString()],
      ["rooms", node.rooms],
      ["participants", node.participants],
      ["audio engine", node.engine],
    ];
    dl.replaceChildren();
    for (const [name, value] of rows) dl.append(el("dt", {}, name), el("dd", {}, value));
    for (const fs of node.freeswitch) {
      dl.append(el("dt", {}, "FreeSWITCH " + fs.node),
                el("dd", { "data-health": "freeswitch" }, yesNo(fs.up, "up", "down"),
                   ", " + fs.rooms + " rooms"));
    }
    if (node.cluster) {
      dl.append(el("dt", {}, "cluster"),
                el("dd", { id: "phase", "data-phase": node.cluster.phase }, node.cluster.phase));
      dl.append(el("dt", {}, "Kamailio RPC"),
                el("dd", { "data-health": "kamailio" },
                   yesNo(node.cluster.kamailio_rpc_up, "up", "failing")));
    }
    if (node.xmpp) {
      dl.append(el("dt", {}, "XMPP component"),
                el("dd", { "data-health": "xmpp" },
                   yesNo(node.xmpp.connected, "connected", "disconnected")));
    }
    drainButton.hidden = !node.can_drain;
    const draining = node.cluster && node.cluster.phase === "draining";
    drainButton.textContent = draining ? "Take new rooms again" : "Drain";
    drainButton.dataset.undo = draining ? "true" : "false";
  }

  function renderRoom(room) {
    const people = el("table", { className: "participants" },
      el("tr", {}, el("th", {}, "name"), el("th", {}, "address"), el("th", {}, "media"),
         el("th", {}, "role"), el("th", {}, "muted"), el("th", {}, "via")));
    for (const p of room.participant_list) {
      // An XMPP occupant (MUC) shows its JID; a SIP participant its URI.
      people.append(el("tr", { "data-participant": p.id, "data-kind": p.kind },
        el("td", {}, p.nickname || p.name), el("td", {}, p.jid || p.uri),
        el("td", {}, p.streams.map((s) => s.kind).join(", ")),
        el("td", {}, p.role), el("td", {}, p.muted ? "yes" : ""),
        el("td", {}, p.kind === "xmpp" ? "XMPP" : "SIP")));
    }
    const files = el("ul", { className: "files" });
    for (const f of room.files) {
      files.append(el("li", { "data-sha1": f.sha1 },
        el("a", { href: f.url, download: f.name }, f.name), " (" + f.size + " bytes)"));
    }
    const names = new Map(room.participant_list.map((p) => [p.id, p.nickname || p.name]));
    const screens = el("ul", { className: "screens" });
    for (const s of room.screens) {
      const who = names.get(s.participant) || s.participant;
      screens.append(el("li", { "data-screen": s.participant },
        el("a", { href: s.url, target: "_blank", rel: "noopener" }, "screen of " + who)));
    }
    return el("section", { className: "room", "data-room": room.id },
      el("h3", {}, el("a", { href: room.page, target: "_blank", rel: "noopener" }, room.uri),
         room.locked ? " (locked)" : ""),
      el("p", {}, room.participants + " participants, " + room.subscriptions +
         " conference-info subscriptions"),
      people, el("h4", {}, "Files"), files, el("h4", {}, "Screens"), screens);
  }

  function render(data) {
    snapshot = data;
    renderNode(data.node);
    document.getElementById("room-count").textContent = String(data.rooms.length);
    document.getElementById("rooms").replaceChildren(...data.rooms.map(renderRoom));
    body.dataset.updates = String(Number(body.dataset.updates || "0") + 1);
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(scheme + "//" + location.host + "/dashboard/ws");
    body.dataset.state = "connecting";
    status.textContent = "Connecting…";
    ws.onopen = () => ws.send(JSON.stringify({ token: token }));
    ws.onmessage = (event) => {
      const data = JSON.parse(event.data);
      if (data.error) {
        sessionStorage.removeItem("chorus-token");  // a reload asks again
        body.dataset.state = "refused";
        status.textContent = "Refused: " + data.error;
        return;
      }
      body.dataset.state = "live";
      status.textContent = "Live.";
      document.getElementById("login").hidden = true;
      live.hidden = false;
      render(data);
    };
    ws.onclose = () => {
      if (body.dataset.state !== "refused") {
        body.dataset.state = "closed";
        status.textContent = "Disconnected.";
      }
    };
  }

  document.getElementById("login").addEventListener("submit", (event) => {
    event.preventDefault();
    token = document.getElementById("token").value.trim();
    sessionStorage.setItem("chorus-token", token);
    connect();
  });

  drainButton.addEventListener("click", async () => {
    const undo = drainButton.dataset.undo === "true";
    const response = await fetch("/dashboard/drain", {
      method: "POST",
      headers: { "Authorization": "Bearer " + token, "Content-Type": "application/json" },
      body: JSON.stringify({ undo: undo }),
    });
    drainButton.dataset.answer = String(response.status);
  });

  if (token) connect();
})();
"""
