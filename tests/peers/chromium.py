"""Headless Chromium driven over the DevTools protocol, for the web pages' tests.

Chromium runs with a fresh ``--user-data-dir`` (a temp dir), on loopback only
(``--remote-debugging-address=127.0.0.1``, port 0: Chromium writes the port it chose into
``DevToolsActivePort`` in that dir). We speak CDP over aiohttp's websocket client with one
flat session per page (``Target.attachToTarget`` with ``flatten``), so a test can navigate,
evaluate JavaScript, take screenshots and let downloads land in a directory of its own.

Screenshots are PNG; `decode_png` turns one into rows of RGB pixels (8-bit RGB/RGBA,
non-interlaced: what Chromium writes) so a test can check colours without an image library.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import shutil
import struct
import tempfile
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

STARTUP_TIMEOUT = 30.0
COMMAND_TIMEOUT = 30.0


def chromium_binary() -> str:
    for name in ("chromium", "chromium-headless-shell"):
        found = shutil.which(name)
        if found:
            return found
    raise FileNotFoundError("chromium is not installed (Debian chromium)")


class CdpError(Exception):
    """A DevTools command answered with an error."""


class Page:
    """One browser tab reached through a flat CDP session."""

    def __init__(self, browser: Chromium, session_id: str, target_id: str) -> None:
        self._browser = browser
        self.session_id = session_id
        self.target_id = target_id

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        return await self._browser.send(method, session_id=self.session_id, **params)

    async def navigate(self, url: str, *, wait_load: bool = True) -> dict[str, Any]:
        """Go to `url`; with `wait_load`, return once its load event fired."""
        waiter = self._browser.expect("Page.loadEventFired", self.session_id)
        result = await self.send("Page.navigate", url=url)
        if wait_load and "errorText" not in result:
            await asyncio.wait_for(waiter, COMMAND_TIMEOUT)
        else:
            waiter.cancel()
        return result

    async def document_status(self, url: str) -> int:
        """Navigate to `url` and return the HTTP status of the document Chromium received."""
        await self.send("Network.enable")
        waiter = self._browser.expect("Network.responseReceived", self.session_id, kind="Document")
        loaded = self._browser.expect("Page.loadEventFired", self.session_id)
        await self.send("Page.navigate", url=url)
        params = await asyncio.wait_for(waiter, COMMAND_TIMEOUT)
        await asyncio.wait_for(loaded, COMMAND_TIMEOUT)
        return int(params["response"]["status"])

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (promises awaited)."""
        result = await self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise CdpError(f"{expression[:60]!r}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, *, timeout: float = 20.0) -> Any:
        """Evaluate until the expression is truthy (for page state the test waits on)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if loop.time() > deadline:
                raise TimeoutError(f"{expression!r} stayed falsy for {timeout} s")
            await asyncio.sleep(0.05)

    async def screenshot(self) -> bytes:
        """A PNG of the viewport, as DevTools captures it."""
        result = await self.send("Page.captureScreenshot", format="png")
        return base64.b64decode(result["data"])

    async def allow_downloads(self, directory: Path) -> None:
        """Downloads of this browser land in `directory` (named by their GUID)."""
        await self._browser.send(
            "Browser.setDownloadBehavior",
            behavior="allowAndName",
            downloadPath=str(directory),
            eventsEnabled=True,
        )


class Chromium:
    """A headless Chromium process and its browser-level DevTools connection."""

    def __init__(self, process: asyncio.subprocess.Process, profile: Path) -> None:
        self.process = process
        self.profile = profile
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._waiters: list[tuple[str, str | None, str | None, asyncio.Future[dict[str, Any]]]] = []
        self.events: list[tuple[str, dict[str, Any]]] = []
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None

    async def _connect(self) -> None:
        active = self.profile / "DevToolsActivePort"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STARTUP_TIMEOUT
        while not active.exists() or len(active.read_text().splitlines()) < 2:
            if self.process.returncode is not None or loop.time() > deadline:
                raise RuntimeError("chromium did not open its DevTools port")
            await asyncio.sleep(0.05)
        port, path = active.read_text().splitlines()[:2]
        self._http = aiohttp.ClientSession()
        self._ws = await self._http.ws_connect(f"ws://127.0.0.1:{port}{path}", max_msg_size=0)
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self._ws is not None
        async for message in self._ws:
            if message.type is not aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(message.data)
            if "id" in data:
                future = self._pending.pop(data["id"], None)
                if future is not None and not future.done():
                    if "error" in data:
                        future.set_exception(CdpError(str(data["error"])))
                    else:
                        future.set_result(data.get("result", {}))
                continue
            method, params = data.get("method", ""), data.get("params", {})
            self.events.append((method, params))
            session = data.get("sessionId")
            for waiter in list(self._waiters):
                name, wanted, kind, future = waiter
                if kind is not None and params.get("type") != kind:
                    continue
                if name == method and wanted in (None, session) and not future.done():
                    future.set_result(params)
                    self._waiters.remove(waiter)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(CdpError("DevTools connection closed"))

    def expect(
        self, method: str, session_id: str | None = None, *, kind: str | None = None
    ) -> asyncio.Future[dict[str, Any]]:
        """A future for the next event `method` (of one session, or any; with `kind`, only
        an event whose ``type`` param is that, e.g. a ``Document`` response)."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters.append((method, session_id, kind, future))
        return future

    async def send(
        self, method: str, *, session_id: str | None = None, **params: Any
    ) -> dict[str, Any]:
        assert self._ws is not None
        ident = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[ident] = future
        message: dict[str, Any] = {"id": ident, "method": method, "params": params}
        if session_id is not None:
            message["sessionId"] = session_id
        await self._ws.send_str(json.dumps(message))
        return await asyncio.wait_for(future, COMMAND_TIMEOUT)

    async def new_page(self, *, width: int = 640, height: int = 480) -> Page:
        """A fresh tab with a fixed viewport, Page and Runtime domains enabled."""
        target = await self.send("Target.createTarget", url="about:blank")
        attached = await self.send(
            "Target.attachToTarget", targetId=target["targetId"], flatten=True
        )
        page = Page(self, attached["sessionId"], target["targetId"])
        await page.send("Page.enable")
        await page.send("Runtime.enable")
        await page.send(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )
        return page

    async def close(self) -> None:
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.send("Browser.close"), 5.0)
            await self._ws.close()
        if self._http is not None:
            await self._http.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        if self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 10.0)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


@contextlib.asynccontextmanager
async def running_chromium() -> AsyncIterator[Chromium]:
    """Headless Chromium on loopback with a throw-away profile; closed and removed after."""
    with tempfile.TemporaryDirectory(prefix="chorus-chromium-", ignore_cleanup_errors=True) as temp:
        profile = Path(temp)
        process = await asyncio.create_subprocess_exec(
            chromium_binary(),
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--metrics-recording-only",
            "--mute-audio",
            "--ignore-certificate-errors",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            f"--user-data-dir={profile}",
            "about:blank",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        browser = Chromium(process, profile)
        try:
            await browser._connect()
            yield browser
        finally:
            await browser.close()


# ---- PNG, enough to read Chromium's screenshots ---------------------------------------------


@dataclass(frozen=True, slots=True)
class Bitmap:
    width: int
    height: int
    rows: list[bytes]  # RGB, 3 bytes per pixel

    def pixel(self, x: int, y: int) -> tuple[int, int, int]:
        row = self.rows[y]
        r, g, b = row[3 * x : 3 * x + 3]
        return r, g, b


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def decode_png(data: bytes) -> Bitmap:
    """Decode an 8-bit RGB or RGBA non-interlaced PNG (PNG spec §9 filters) to RGB rows."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    offset, idat = 8, b""
    width = height = channels = 0
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        offset += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            if depth != 8 or colour not in (2, 6) or interlace:
                raise ValueError(f"unsupported PNG depth {depth} colour {colour}")
            channels = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
    raw = zlib.decompress(idat)
    stride = width * channels
    rows: list[bytes] = []
    previous = bytearray(stride)
    position = 0
    for _ in range(height):
        kind_byte = raw[position]
        line = bytearray(raw[position + 1 : position + 1 + stride])
        position += 1 + stride
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            corner = previous[i - channels] if i >= channels else 0
            if kind_byte == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind_byte == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind_byte == 3:
                line[i] = (line[i] + ((left + up) >> 1)) & 0xFF
            elif kind_byte == 4:
                line[i] = (line[i] + _paeth(left, up, corner)) & 0xFF
        previous = line
        if channels == 4:
            rgb = bytearray()
            for i in range(0, stride, 4):
                rgb += line[i : i + 3]
            rows.append(bytes(rgb))
        else:
            rows.append(bytes(line))
    return Bitmap(width, height, rows)
