"""One FreeSWITCH node's Event Socket, through greenswitch, in a thread of its own.

greenswitch is built on gevent. gevent is never allowed near the asyncio side (no
monkey-patching): the connection lives in its own thread with its own gevent hub. asyncio
enters that thread only with ``hub.loop.run_callback_threadsafe`` and the thread comes back
only with ``loop.call_soon_threadsafe`` — commands and their answers, events and connection
changes all cross that one seam as plain values.

The thread keeps the connection up: connect, ``auth``, subscribe, and when the socket closes
(FreeSWITCH stopped, the node died, a reply cut off half-way) reconnect with exponential
back-off (``reconnect_min`` doubling to ``reconnect_max``). A refused password is reported
(`EslAuthFailed`) and retried at the slowest pace: it only changes when someone fixes it.

Two defects of greenswitch 0.0.19 are mended here by subclassing: a connection that closes
in the middle of a body made its reader loop forever on empty reads, and commands waiting
for a reply when the connection closed were never answered. Both now fail the connection
and every waiting command at once (`EslUnavailable`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gevent
import gevent.event
import gevent.socket
from greenswitch.esl import InboundESL, NotConnectedError

from control.media.freeswitch.esl import EslEvent

__all__ = [
    "ClientEvent",
    "EslAuthFailed",
    "EslClient",
    "EslConnected",
    "EslDisconnected",
    "EslEventReceived",
    "EslUnavailable",
]

log = logging.getLogger("chorus.media.freeswitch.esl")

# Event names before CUSTOM: mod_event_socket takes every word after it as a subclass.
SUBSCRIPTION = "event plain CHANNEL_HANGUP_COMPLETE SHUTDOWN CUSTOM conference::maintenance"
_OUTER = ("Content-Length", "Content-Type")


class EslUnavailable(Exception):
    """The node's Event Socket is not connected, or did not answer in time."""


@dataclass(frozen=True, slots=True)
class EslConnected:
    node: str


@dataclass(frozen=True, slots=True)
class EslDisconnected:
    node: str
    reason: str


@dataclass(frozen=True, slots=True)
class EslAuthFailed:
    node: str
    reply: str


@dataclass(frozen=True, slots=True)
class EslEventReceived:
    node: str
    event: EslEvent


ClientEvent = EslConnected | EslDisconnected | EslAuthFailed | EslEventReceived


class _Inbound(InboundESL):
    """greenswitch's inbound connection with its two disconnect defects mended."""

    @staticmethod
    def _read_socket(sock: Any, length: int) -> str:
        data = sock.read(length)
        if data is None or len(data) < length:
            raise ConnectionError(f"closed {len(data or b'')} bytes into a {length} byte body")
        return str(data.decode("utf-8", "replace"))

    def receive_events(self) -> None:
        try:
            super().receive_events()
        except Exception as exc:  # a broken frame or a cut-off body: the connection is done
            log.debug("ESL reader stopped: %r", exc)
        finally:
            self.connected: bool = False
            self._run: bool = False
            waiting: list[Any] = list(self._commands_sent)
            self._commands_sent: list[Any] = []
            for result in waiting:
                result.set_exception(NotConnectedError("connection closed before the reply"))
            with contextlib.suppress(OSError):
                self.sock.close()


class EslClient:
    """The Event Socket of node ``name`` at ``host:port``.

    ``on_event`` is called on the asyncio loop for every `ClientEvent`. ``api`` runs one
    ``api`` command and returns its output.
    """

    def __init__(
        self,
        name: str,
        host: str,
        port: int,
        password: str,
        *,
        on_event: Callable[[ClientEvent], None],
        reconnect_min: float = 0.5,
        reconnect_max: float = 30.0,
        connect_timeout: float = 5.0,
    ) -> None:
        self.name = name
        self._host = host
        self._port = port
        self._password = password
        self._on_event = on_event
        self._reconnect_min = reconnect_min
        self._reconnect_max = reconnect_max
        self._connect_timeout = connect_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._hub: Any = None
        self._started = threading.Event()
        self._esl: _Inbound | None = None
        self._closing = False
        self._main: gevent.Greenlet | None = None
        self.connected = False
        self.attempts = 0  # connection attempts so far (tests read the back-off from it)

    # --- asyncio side -----------------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name=f"esl-{self.name}", daemon=True)
        self._thread.start()
        self._started.wait(5)

    async def api(self, command: str, *, timeout: float = 5.0) -> str:
        """``api <command>``; raises EslUnavailable when not connected or not answered."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[str] = loop.create_future()
        if self._hub is None or self._closing:
            raise EslUnavailable(f"{self.name}: Event Socket not running")
        self._hub.loop.run_callback_threadsafe(self._spawn_api, command, future, timeout)
        return await future

    async def close(self) -> None:
        if self._hub is None or self._closing:
            return
        self._closing = True
        self._hub.loop.run_callback_threadsafe(self._shutdown)
        thread = self._thread
        if thread is not None:
            await asyncio.to_thread(thread.join, 10)

    def _post(self, event: ClientEvent) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._on_event, event)

    def _resolve(self, future: asyncio.Future[str], result: str | BaseException) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return

        def settle() -> None:
            if future.done():
                return
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle)

    # --- gevent side (everything below runs in the ESL thread) ------------------------------

    def _run(self) -> None:
        self._hub = gevent.get_hub()
        self._main = gevent.spawn(self._keep_connected)
        self._started.set()
        with contextlib.suppress(gevent.GreenletExit):
            self._main.join()
        self._drop_connection()

    def _spawn_api(self, command: str, future: asyncio.Future[str], timeout: float) -> None:
        gevent.spawn(self._api, command, future, timeout)

    def _api(self, command: str, future: asyncio.Future[str], timeout: float) -> None:
        esl = self._esl
        if esl is None or not esl.connected:
            self._resolve(future, EslUnavailable(f"{self.name}: not connected"))
            return
        try:
            with gevent.Timeout(timeout, EslUnavailable(f"{self.name}: no answer to {command!r}")):
                response = esl.send(f"api {command}")
        except EslUnavailable as exc:
            # The late reply would be taken for the next command's (replies come in order):
            # a node that stopped answering gets a fresh connection instead.
            self._resolve(future, exc)
            _hang_up(esl)
        except (NotConnectedError, OSError) as exc:
            self._resolve(future, EslUnavailable(f"{self.name}: {exc or 'disconnected'}"))
        else:
            self._resolve(future, str(getattr(response, "data", "")))

    def _shutdown(self) -> None:
        self._closing = True
        main = self._main
        if main is not None:
            main.kill(block=False)

    def _keep_connected(self) -> None:
        delay = self._reconnect_min
        last_failure = ""
        while not self._closing:
            self.attempts += 1
            failure = self._connect_once()
            if failure is None:  # was connected, then lost it: start the back-off again
                delay = self._reconnect_min
                continue
            if failure != last_failure:
                log.warning("Event Socket of %s: %s (retrying)", self.name, failure)
                last_failure = failure
            gevent.sleep(delay)
            delay = min(delay * 2, self._reconnect_max)

    def _connect_once(self) -> str | None:
        """Connect, authenticate, subscribe and serve until the connection drops.

        Returns None after a connection that worked, else why it could not be made.
        """
        esl = _Inbound(self._host, self._port, self._password, timeout=self._connect_timeout)
        self._esl = esl
        try:
            with gevent.Timeout(self._connect_timeout, NotConnectedError("no auth/request")):
                esl.connect()
                esl.register_handle("*", self._handle)
                reply = esl.send(SUBSCRIPTION)
            if not str(getattr(reply, "data", "")).startswith("+OK"):
                raise NotConnectedError(f"subscription refused: {getattr(reply, 'data', '')}")
        except ValueError:  # greenswitch's "Invalid password."
            self._drop_connection()
            self._post(EslAuthFailed(self.name, "-ERR invalid"))
            return "password refused"
        except (NotConnectedError, OSError) as exc:
            self._drop_connection()
            return f"cannot connect to {self._host}:{self._port} ({exc or type(exc).__name__})"
        self.connected = True
        self._post(EslConnected(self.name))
        reader = esl._receive_events_greenlet
        if reader is not None:
            reader.join()
        self.connected = False
        self._drop_connection()
        if not self._closing:
            self._post(EslDisconnected(self.name, "Event Socket connection closed"))
        return None

    def _drop_connection(self) -> None:
        esl, self._esl = self._esl, None
        self.connected = False
        if esl is None:
            return
        esl._run = False
        _hang_up(esl)
        greenlets = [esl._receive_events_greenlet, esl._process_events_greenlet]
        gevent.killall([g for g in greenlets if g is not None], block=False)

    def _handle(self, event: Any) -> None:
        headers = {k: v for k, v in event.headers.items() if k not in _OUTER and k is not None}
        if event.headers.get("Content-Type") != "text/event-plain":
            return
        self._post(EslEventReceived(self.name, EslEvent(headers, "", tuple(headers))))


def _hang_up(esl: _Inbound) -> None:
    """Close the socket so that its reader sees EOF at once (a plain close() leaves the
    makefile's reference open and the reader blocked)."""
    with contextlib.suppress(Exception):
        esl.sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(Exception):
        esl.sock.close()
