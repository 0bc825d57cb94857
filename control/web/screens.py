"""The screen viewer: a page, its live frames pushed over a WebSocket, and sibling URLs.

SylkServer's page reloads the image every second. Here the server pushes: the page opens
``…/ws`` and gets each new frame as one binary WebSocket message (RFC 6455 §5.6), preceded by
a small JSON text message with its sequence number and size, and ``{"state": "ended"}`` when
sharing stops. A viewer that reads slowly skips frames instead of queueing them: after
sending one frame it asks the board for the first frame newer than that one, which is the
latest. ``…/image.jpg`` is the current frame for any HTTP client, ``…/mjpeg`` the same push as
``multipart/x-mixed-replace`` for clients without JavaScript (an ``<img>`` shows it live).

All four share the screen token (purpose SCREEN, room, participant): wrong or expired → 403,
then a participant not sharing → 404.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
from typing import Any

from aiohttp import WSMsgType, web

from control.conference.screen import ScreenBoard, SharedFrame
from control.media.engine import ParticipantId, RoomId
from control.web.context import verify_token
from control.web.tokens import TokenPurpose

__all__ = ["ScreenViews", "VIEWER_SCRIPT"]

log = logging.getLogger("chorus.web")

MJPEG_BOUNDARY = "chorus-frame"
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; img-src 'self' blob:; "
        "connect-src 'self'; style-src 'unsafe-inline'"
    ),
    "Referrer-Policy": "no-referrer",  # the token must not leak to other sites
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}

VIEWER_SCRIPT = """\
"use strict";
(function () {
  const img = document.getElementById("screen");
  const state = document.getElementById("state");
  const body = document.body;
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const where = location.host + location.pathname + "/ws" + location.search;
  const ws = new WebSocket(scheme + "//" + where);
  ws.binaryType = "blob";
  let pending = null;
  let shown = null;
  ws.onmessage = (event) => {
    if (typeof event.data === "string") {
      const message = JSON.parse(event.data);
      if (message.state === "ended") {
        body.dataset.state = "ended";
        state.textContent = "Screen sharing has ended.";
      } else {
        pending = message;
      }
      return;
    }
    const meta = pending;
    const url = URL.createObjectURL(event.data);
    img.onload = () => {
      if (shown) URL.revokeObjectURL(shown);
      shown = url;
      body.dataset.state = "live";
      if (meta) {
        body.dataset.sequence = String(meta.sequence);
        state.textContent = meta.width + "\\u00d7" + meta.height;
      }
    };
    img.src = url;
  };
  ws.onclose = () => {
    if (body.dataset.state !== "ended") {
      body.dataset.state = "closed";
      state.textContent = "Disconnected.";
    }
  };
})();
"""

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Screen of {name}</title>
<style>
html, body {{ margin: 0; height: 100%; background: #000; color: #ccc; font: 14px sans-serif; }}
#screen {{ display: block; width: 100vw; height: 100vh; object-fit: contain; }}
#state {{ position: fixed; left: 0; bottom: 0; padding: 2px 6px; background: rgba(0,0,0,.6); }}
</style></head>
<body data-state="connecting">
<img id="screen" alt="screen of {name}">
<div id="state">Connecting…</div>
<script src="/static/screen.js"></script>
</body></html>
"""


class ScreenViews:
    def __init__(self, board: ScreenBoard) -> None:
        self.board = board
        self._closing = asyncio.Event()  # set by close(): live pushes end, the server can stop

    def close(self) -> None:
        """End every live push (WebSocket and MJPEG) so shutdown does not wait on viewers."""
        self._closing.set()

    async def _next(
        self, room: RoomId, participant: ParticipantId, after: int, *also: asyncio.Future[Any]
    ) -> SharedFrame | None:
        """The next frame, or None when sharing ended or one of `also` (the viewer leaving,
        the server closing) is done first."""
        waiting = self.board.frame_waiter(room, participant, after=after)
        if waiting.done():
            return waiting.result()
        try:
            await asyncio.wait({waiting, *also}, return_when=asyncio.FIRST_COMPLETED)
            return waiting.result() if waiting.done() and not waiting.cancelled() else None
        finally:
            waiting.cancel()

    def _sharing(self, request: web.Request) -> tuple[RoomId, ParticipantId, SharedFrame]:
        room = RoomId(request.match_info["room"])
        participant = ParticipantId(request.match_info["participant"])
        verify_token(request, TokenPurpose.SCREEN, room, participant)
        current = self.board.current(room, participant)
        if current is None:
            raise web.HTTPNotFound(text="this participant is not sharing a screen\n")
        return room, participant, current

    async def page(self, request: web.Request) -> web.Response:
        _, participant, _ = self._sharing(request)
        name = html.escape(participant)
        return web.Response(
            text=_PAGE.format(name=name), content_type="text/html", headers=PAGE_HEADERS
        )

    async def script(self, request: web.Request) -> web.Response:
        return web.Response(
            text=VIEWER_SCRIPT,
            content_type="text/javascript",
            headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
        )

    async def image(self, request: web.Request) -> web.Response:
        _, _, current = self._sharing(request)
        return web.Response(
            body=current.frame.jpeg,
            content_type="image/jpeg",
            headers={
                "Cache-Control": "no-store",
                "X-Screen-Sequence": str(current.sequence),
                "X-Content-Type-Options": "nosniff",
            },
        )

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        room, participant, _ = self._sharing(request)
        ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=4096)
        await ws.prepare(request)
        reader = asyncio.create_task(self._drain(ws))
        closing = asyncio.ensure_future(self._closing.wait())
        sequence = 0
        try:
            while not ws.closed:
                shared = await self._next(room, participant, sequence, reader, closing)
                if reader.done():  # the viewer went away
                    break
                if shared is None:
                    if not self._closing.is_set():
                        await ws.send_json({"state": "ended"})
                    break
                frame = shared.frame
                await ws.send_json(
                    {"sequence": shared.sequence, "width": frame.width, "height": frame.height}
                )
                await ws.send_bytes(frame.jpeg)
                sequence = shared.sequence
        except ConnectionResetError:
            pass
        finally:
            reader.cancel()
            closing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            await ws.close()
        return ws

    @staticmethod
    async def _drain(ws: web.WebSocketResponse) -> None:
        """Read (and drop) what the viewer sends, so its close and pings are seen."""
        async for message in ws:
            if message.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                break

    async def mjpeg(self, request: web.Request) -> web.StreamResponse:
        room, participant, _ = self._sharing(request)
        response = web.StreamResponse(
            headers={
                "Content-Type": f"multipart/x-mixed-replace; boundary={MJPEG_BOUNDARY}",
                "Cache-Control": "no-store",
                "X-Content-Type-Options": "nosniff",
            }
        )
        await response.prepare(request)
        sequence = 0
        closing = asyncio.ensure_future(self._closing.wait())
        try:
            while (shared := await self._next(room, participant, sequence, closing)) is not None:
                jpeg = shared.frame.jpeg
                head = (
                    f"--{MJPEG_BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                    f"Content-Length: {len(jpeg)}\r\n\r\n"
                ).encode("ascii")
                await response.write(head + jpeg + b"\r\n")
                sequence = shared.sequence
            await response.write(f"--{MJPEG_BOUNDARY}--\r\n".encode("ascii"))
            await response.write_eof()
        except ConnectionResetError:
            pass
        finally:
            closing.cancel()
        return response
