"""A stand-in FreeSWITCH node for the engine's tests: SIPp as its SIP side (scenario
tests/sipp/uas_media_echo.xml with `-rtp_echo`: it answers the leg and echoes the RTP it gets)
plus the ESL fake (tests/peers/eslfake.py) as its Event Socket, in this process or — when it
must die by kill -9 — in a process of its own. One SIPp per node.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from control.cli import build_server
from control.config import parse_config
from control.media.engine import ParticipantId, RoomId
from control.media.freeswitch import FreeSwitchEngine
from control.server import Server
from control.sip import sdp
from control.sip.session import Offer
from tests.peers import inprocess
from tests.peers.chatclient import ChatSession
from tests.peers.eslfake import FakeFreeSwitch
from tests.peers.ports import LOOPBACK, free_port, free_ports
from tests.peers.sipp import SCENARIO_DIR, SippUas

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "chorus-test-esl"


def _even_media_port() -> int:
    """SIPp echoes on -mp and -mp + 2 (and aborts on port 0): an even, free pair."""
    for _ in range(200):
        port = free_port("udp") & ~1
        if port > 1024 and all(_udp_free(p) for p in (port, port + 1, port + 2, port + 3)):
            return port
    raise RuntimeError("no free even UDP port pair")


def _udp_free(port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
        return True


FORGET = """<label id="reinvite"/>
  <send>
    <![CDATA[
      SIP/2.0 481 Call/Transaction Does Not Exist
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
  <recv request="ACK" crlf="true"/>
  <recv request="BYE" next="bye"/>"""


FORGET_STATUS = {481: "481 Call/Transaction Does Not Exist", 408: "408 Request Timeout"}


def scenario(
    workdir: Path, *, hangup_after_ms: int | None, forget: bool = False, forget_status: int = 481
) -> Path:
    """The media-echo scenario, or a variant whose node sends BYE after a while, or one
    that has forgotten the dialog by its first re-INVITE (481, or 408, RFC 5057 §5.1)."""
    path = SCENARIO_DIR / "uas_media_echo.xml"
    if hangup_after_ms is None and not forget:
        return path
    text = path.read_text()
    if hangup_after_ms is not None:
        text = text.replace(
            "<!--HANGUP-->", f'<pause milliseconds="{hangup_after_ms}"/><nop next="hangup"/>'
        )
    if forget:  # the 200 path stays in the file (SIPp wants its variables used), unreached
        status = FORGET_STATUS[forget_status]
        text = text.replace('<label id="reinvite"/>', FORGET.replace(FORGET_STATUS[481], status))
    variant = workdir / f"uas_media_echo_{hangup_after_ms}_{int(forget)}_{forget_status}.xml"
    variant.write_text(text)
    return variant


@dataclass
class MediaNode:
    """SIPp (SIP + RTP echo) and an Event Socket, as one `[freeswitch] nodes` entry."""

    workdir: Path
    hangup_after_ms: int | None = None
    esl_in_process: bool = True
    forget_dialogs: bool = False  # answer every re-INVITE 481 (or forget_status)
    forget_status: int = 481

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.sip_port, self.esl_port = free_ports(2)
        self.media_port = _even_media_port()
        self.messages = self.workdir / f"sipp-{self.sip_port}-messages.log"
        self.sipp: SippUas | None = None
        self.fake: FakeFreeSwitch | None = None
        self._esl_proc: subprocess.Popen[bytes] | None = None

    @property
    def config(self) -> dict[str, str]:
        return {
            "sip": f"{LOOPBACK}:{self.sip_port}",
            "esl": f"{LOOPBACK}:{self.esl_port}",
            "password": PASSWORD,
        }

    @property
    def name(self) -> str:
        return f"{LOOPBACK}:{self.sip_port}"

    async def start(self) -> MediaNode:
        self.start_sipp()
        if self.esl_in_process:
            self.fake = await FakeFreeSwitch(PASSWORD, port=self.esl_port).start()
        else:
            self.start_esl_process()
        return self

    def start_sipp(self) -> None:
        self.sipp = SippUas(
            scenario(
                self.workdir,
                hangup_after_ms=self.hangup_after_ms,
                forget=self.forget_dialogs,
                forget_status=self.forget_status,
            ),
            port=self.sip_port,
            extra_args=[
                "-rtp_echo",
                "-mp",
                str(self.media_port),
                "-mi",
                LOOPBACK,
                "-trace_msg",
                "-message_file",
                str(self.messages),
            ],
            workdir=self.workdir,
        ).start()

    def start_esl_process(self) -> None:
        self._esl_proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.peers.eslfake",
                "--port",
                str(self.esl_port),
                "--password",
                PASSWORD,
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert self._esl_proc.stdout is not None
        line = self._esl_proc.stdout.readline()
        if not line.startswith(b"ready"):
            raise RuntimeError(f"ESL fake did not start: {line!r}")

    def kill(self) -> None:
        """kill -9 of the whole node: SIPp and the Event Socket process."""
        for proc in (getattr(self.sipp, "_proc", None), self._esl_proc):
            if proc is not None and proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(5)

    def received(self, method: str = "INVITE") -> list[str]:
        """Requests SIPp received, as text (from its -trace_msg log)."""
        try:
            log = self.messages.read_text(errors="replace")
        except OSError:
            return []
        blocks = re.split(r"^-{10,}.*$", log, flags=re.M)
        found = []
        for block in blocks:
            if "message received" not in block:
                continue
            start = block.find(f"{method} sip:")
            if start >= 0:
                found.append(block[start:].replace("\r\n", "\n"))
        return found

    async def wait_received(self, method: str, count: int = 1, timeout: float = 10) -> list[str]:
        deadline = time.monotonic() + timeout
        while len(found := self.received(method)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"SIPp node got {len(found)} {method}, wanted {count}")
            await asyncio.sleep(0.05)
        return found

    async def stop(self) -> None:
        if self.fake is not None:
            await self.fake.stop()
        if self._esl_proc is not None and self._esl_proc.poll() is None:
            self._esl_proc.kill()
            self._esl_proc.wait(5)
        if self.sipp is not None:
            with contextlib.suppress(Exception):
                proc = getattr(self.sipp, "_proc", None)
                if proc is not None and proc.poll() is None:
                    proc.kill()
                self.sipp.stop()


# --- what the engine tests share: a participant socket, offers, fixtures ---------------

ROOM = RoomId("r1@conference.example.com")
ALICE = ParticipantId("aliceAAAAAAAAAAA")
KEY = "inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz"


class Participant(asyncio.DatagramProtocol):
    """The participant's RTP socket."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.received.put_nowait((data, (str(addr[0]), int(addr[1]))))

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])


def offer(
    port: int,
    *,
    srtp: bool = False,
    direction: str = "sendrecv",
    codec: tuple[int, str] = (0, "PCMU"),
) -> sdp.SessionDescription:
    proto = "RTP/SAVP" if srtp else "RTP/AVP"
    crypto = f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 {KEY}\r\n" if srtp else ""
    text = (
        "v=0\r\no=alice 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} {proto} {codec[0]} 101\r\na=rtpmap:{codec[0]} {codec[1]}/8000\r\n"
        f"a=rtpmap:101 telephone-event/8000\r\n{crypto}a={direction}\r\n"
    )
    return sdp.parse(text)


def rtp(seq: int) -> bytes:
    return (
        bytes([0x80, 0x00])
        + seq.to_bytes(2, "big")
        + (160 * seq).to_bytes(4, "big")
        + (b"\x12\x34\x56\x78" + b"\xff" * 160)
    )


@pytest.fixture(name="server")
async def server_fixture(tmp_path: Path) -> AsyncIterator[Server]:
    (port,) = free_ports(1)
    config = parse_config(
        {
            "sip": {"listen": [f"udp:127.0.0.1:{port}"]},
            "msrp": {"listen": ["tcp:127.0.0.1:0"]},
            "server": {"spool_dir": str(tmp_path / "spool")},
        }
    )
    server = build_server(config)
    await server.start()
    yield server
    await server.stop()


@contextlib.asynccontextmanager
async def running_server(
    tmp_path: Path, nodes: Sequence[Mapping[str, str]], **pool: float
) -> AsyncIterator[tuple[Server, int]]:
    """A running server (and its SIP port) with ``[audio] engine = "freeswitch"``, whose rooms
    ``nodes`` mix (`[freeswitch] nodes` entries; ``pool``: the other `[freeswitch]` keys);
    conference-info goes out at once, the SIP trace is ``tmp_path / "sip"``."""
    sections: dict[str, Mapping[str, object]] = {
        "server": {"trace_sip": str(tmp_path / "sip")},
        "conference": {"info_interval": 0.0},
        "audio": {"engine": "freeswitch"},
        "freeswitch": {"nodes": [dict(n) for n in nodes], **pool},
    }
    async with inprocess.running_server(
        tmp_path / "spool", rtp={}, transports=("udp",), sections=sections
    ) as running:
        yield running


@pytest.fixture(name="node")
async def node_fixture(tmp_path: Path) -> AsyncIterator[MediaNode]:
    media = await MediaNode(tmp_path / "node").start()
    yield media
    await media.stop()


def engine_for(server: Server, *nodes: MediaNode, **timing: float) -> FreeSwitchEngine:
    """An engine over ``nodes`` with test-sized timings (``timing`` overrides them)."""
    config = parse_config(
        {"audio": {"engine": "freeswitch"}, "freeswitch": {"nodes": [n.config for n in nodes]}}
    )
    settings = {
        "answer_timeout": 5.0,
        "health_interval": 0.5,
        "failover_after": 1.0,
        "reconnect_max": 0.5,
        **timing,
    }
    return FreeSwitchEngine(server.ua, config.freeswitch.nodes, **settings)


async def echoed(participant: Participant, address: str, port: int) -> bytes:
    assert participant.transport is not None
    packet = rtp(1)
    for _ in range(20):
        participant.transport.sendto(packet, (address, port))
        try:
            data, source = await asyncio.wait_for(participant.received.get(), 0.5)
        except TimeoutError:
            continue
        assert source == (address, port)
        return data
    raise AssertionError(f"nothing came back from {address}:{port}")


@pytest.fixture(name="participant")
async def participant_fixture() -> AsyncIterator[Participant]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        Participant, local_addr=("127.0.0.1", 0)
    )
    yield protocol
    transport.close()


def take_reoffers(
    chat: ChatSession, *, audio_port: int | None = None
) -> list[sdp.SessionDescription]:
    """The participant's phone takes the room's re-INVITEs (a lost or moved audio stream):
    each offer is kept, in order, and answered with the phone's own SDP, a new version, its
    audio m-line (the first) at ``audio_port`` — 0 to accept a removed stream (RFC 3264
    §8.2), None to keep its port (the stream moved to another node: the phone's RTP then goes
    to the new address the offer names)."""
    session = chat.session
    assert session is not None
    offers: list[sdp.SessionDescription] = []

    async def reoffered(offer: Offer) -> None:
        offers.append(sdp.parse(offer.body))
        local = chat.sdp.local
        assert local is not None
        answer = local.copy()
        answer.media = [m.copy() for m in answer.media]
        if audio_port is not None:
            answer.media[0].port = audio_port
        elif chat.audio is not None:
            chat.audio.answered_sdp(offers[-1])
        answer.origin = replace(answer.origin, sess_version=answer.origin.sess_version + 1)
        session.answer_reinvite(offer, bytes(answer))

    session.on_reinvite = reoffered
    return offers
