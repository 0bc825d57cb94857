"""Run a real baresip user agent headless, driven over its `ctrl_tcp` JSON netstring socket.

baresip (Debian `baresip-core` 1.0.0) gets a private config directory (`-f DIR`: `config`,
`accounts`, `contacts`) and no console UI: the `menu` module supplies the `dial`, `hangup`
and `quit` commands, `ctrl_tcp` carries them over TCP, `aufile` sends a WAV as the
microphone, and the `sndfile` audio filter dumps what is encoded and decoded into
`dump-<time>-enc.wav` / `dump-<time>-dec.wav` under `snd_path`. The decoded dump is what
baresip heard from the far end, before any player, so a test can check it by FFT.

Facts learned the hard way (baresip 1.0.0):
- SIP listens on UDP and TCP at `sip_listen`, and TLS on the port after it, so both must
  be free.
- `dial`/`hangup` are commands of the `menu` module, not of `ctrl_tcp`: without `menu`
  every command answers "command not found".
- When `aufile` reaches the end of the WAV it raises an audio error and `menu` ends the
  call (`CALL_CLOSED` with "end of file"): the WAV's length is the call's length.
- The account's `audio_codecs` must name codecs exactly (`PCMU/8000/1`, `G722/16000/1`).
- A Request-URI with `;transport=tls` makes it connect over TLS. 1.0.0 (libre 1.1.0) does
  not verify the server's certificate, whatever `sip_cafile` says; `ca_file` is still
  handed over so a newer baresip that does verify trusts the test certificate.
- `mediaenc=srtp-mand` on the account (module `srtp`) offers `RTP/SAVP` with SDES
  `a=crypto` lines (RFC 4568) and refuses a plain-RTP answer; `srtp` offers SDES on
  `RTP/AVP` and takes either.
- Opus (module `opus`) is `opus/48000/2` and runs at 48 kHz; `opus_stereo no` and
  `opus_sprop_stereo no` keep it mono to match a mono source.
- RTCP: reports go to RTP port + 1 unless the config says `rtcp_mux yes`, which offers
  `a=rtcp-mux` (RFC 5761) and muxes when the answer has it too. Every RTCP compound it
  receives raises a `CALL_RTCP` event (`param` "audio") carrying `rtcp_stats`: `tx` is what
  the far end reported about baresip's stream (`lost`, `jit` in µs), `rx` baresip's own
  measurement of the far end's stream, `rtt` in µs from the far end's LSR/DLSR (0 until a
  report echoed one of baresip's sender reports).
- With rtcp-mux it first sends one RTCP APP compound ("PING"/"PONG", 16 bytes), and under
  SRTP that one goes out unprotected; its RTCP BYE at hang-up also fails SRTCP validation
  at our end (libsrtp "unable to perform desired validation").
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import wave
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt

from tests.peers.ports import LOOPBACK, free_port, free_ports

__all__ = [
    "MODULE_DIR",
    "BaresipError",
    "BaresipProcess",
    "NetstringDecoder",
    "Recording",
    "baresip_available",
    "netstring",
    "write_wav",
]

BARESIP = "baresip"
MODULE_DIR = Path("/usr/lib/baresip/modules")
# Modules the headless setup loads; all ship in Debian's baresip-core.
AUDIO_MODULES = ("g711", "g722", "aufile", "aubridge", "sndfile")
APP_MODULES = ("account", "menu", "ctrl_tcp")
# Loaded only when a test asks for them (also in baresip-core).
OPUS_MODULE = "opus"
SRTP_MODULE = "srtp"
MEDIAENC = ("srtp", "srtp-mand", "srtp-mandf")


def baresip_available() -> bool:
    """True when the binary is on PATH and every module the setup loads is installed."""
    if shutil.which(BARESIP) is None:
        return False
    modules = AUDIO_MODULES + APP_MODULES + (OPUS_MODULE, SRTP_MODULE)
    return all((MODULE_DIR / f"{m}.so").exists() for m in modules)


class BaresipError(RuntimeError):
    """baresip did not start, a command failed, or an expected event did not come."""


def netstring(payload: bytes) -> bytes:
    """Frame `payload` as a netstring (`<len>:<payload>,`), as `ctrl_tcp` expects."""
    return str(len(payload)).encode() + b":" + payload + b","


class NetstringDecoder:
    """Split a TCP byte stream into netstring payloads; fed bytes, returns whole payloads.

    `limit` bounds a single payload so a corrupt length cannot make us buffer forever;
    baresip's own events are a few hundred bytes.
    """

    def __init__(self, limit: int = 1 << 20) -> None:
        self._buffer = bytearray()
        self._limit = limit

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        out: list[bytes] = []
        while True:
            colon = self._buffer.find(b":")
            if colon < 0:
                if len(self._buffer) > 20:
                    raise BaresipError(f"bad netstring length: {bytes(self._buffer[:20])!r}")
                return out
            head = bytes(self._buffer[:colon])
            if not head.isdigit():
                raise BaresipError(f"bad netstring length: {head!r}")
            length = int(head)
            if length > self._limit:
                raise BaresipError(f"netstring of {length} bytes is over the limit")
            end = colon + 1 + length
            if len(self._buffer) < end + 1:
                return out
            if self._buffer[end : end + 1] != b",":
                raise BaresipError("netstring does not end with ','")
            out.append(bytes(self._buffer[colon + 1 : end]))
            del self._buffer[: end + 1]


def write_wav(path: Path, pcm: npt.NDArray[np.int16], rate: int) -> Path:
    """Write mono 16-bit PCM as a WAV that `aufile` accepts (rate must equal `ausrc_srate`)."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(np.asarray(pcm, dtype="<i2").tobytes())
    return path


@dataclass(frozen=True, slots=True)
class Recording:
    """One `sndfile` dump: mono int16 samples at `rate`."""

    path: Path
    rate: int
    samples: npt.NDArray[np.int16]


def _read_dump(path: Path) -> Recording:
    """Read a sndfile dump; if baresip died before closing it, take the data chunk as is."""
    try:
        with wave.open(str(path), "rb") as dump:
            rate = dump.getframerate()
            frames = dump.readframes(dump.getnframes())
            if dump.getnchannels() != 1 or dump.getsampwidth() != 2:
                raise BaresipError(f"{path}: expected mono 16-bit")
    except (wave.Error, EOFError):
        raw = path.read_bytes()
        rate = int.from_bytes(raw[24:28], "little")
        data = raw.find(b"data")
        frames = raw[data + 8 :] if data >= 0 else b""
    frames = frames[: len(frames) // 2 * 2]
    return Recording(path, rate, np.frombuffer(frames, dtype="<i2").astype(np.int16))


def _free_sip_port(attempts: int = 50) -> int:
    """A port free for SIP UDP+TCP whose successor is free for TCP (baresip's TLS listener)."""
    for _ in range(attempts):
        (port,) = free_ports(1)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tls:
            try:
                tls.bind((LOOPBACK, port + 1))
            except OSError:
                continue
        return port
    raise BaresipError("no free port pair for baresip's SIP and TLS listeners")


class BaresipProcess:
    """``with BaresipProcess(source_wav, codec="PCMU/8000/1") as ua:`` — a headless baresip.

    `codec` is the one codec the account offers (exact baresip name); the sample rates of
    source and player follow its clock rate unless `sample_rate` is given, and the source
    WAV must be mono at that rate. `answermode` is the account's (`manual` or `auto`).
    `mediaenc` (`srtp`, `srtp-mand`, `srtp-mandf`) turns on SDES-SRTP for the account.
    `ca_file` is the certificate baresip should trust for SIP over TLS. `rtcp_mux` offers
    RTCP on the RTP port. `extra_config` adds or replaces lines of the config file.
    """

    def __init__(
        self,
        source_wav: str | os.PathLike[str],
        *,
        codec: str = "PCMU/8000/1",
        sample_rate: int | None = None,
        user: str = "tester",
        answermode: str = "manual",
        mediaenc: str | None = None,
        ca_file: str | os.PathLike[str] | None = None,
        extra_config: Mapping[str, str] | None = None,
        verbose: bool = True,
        rtcp_mux: bool = False,
    ) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="baresip-test-"))
        # Tests read recordings and logs after stop(): remove the directory when pytest exits.
        atexit.register(shutil.rmtree, self.workdir, ignore_errors=True)
        self.config_dir = self.workdir / "config"
        self.record_dir = self.workdir / "recordings"
        self.config_dir.mkdir()
        self.record_dir.mkdir()
        self.sip_port = _free_sip_port()
        self.ctrl_port = free_port("tcp")
        while self.ctrl_port in (self.sip_port, self.sip_port + 1):
            self.ctrl_port = free_port("tcp")
        self.codec = codec
        self.sample_rate = sample_rate or int(codec.split("/")[1])
        self.aor = f"sip:{user}@{LOOPBACK}"
        self.verbose = verbose
        self.log_path = self.workdir / "baresip.log"
        self.events: list[dict[str, Any]] = []
        self._responses: dict[str, dict[str, Any]] = {}
        self._cond = threading.Condition()
        self._sock: socket.socket | None = None
        self._reader: threading.Thread | None = None
        self._tokens = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None

        config: dict[str, str] = {
            "poll_method": "epoll",
            "sip_listen": f"{LOOPBACK}:{self.sip_port}",
            "sip_trans_def": "udp",
            # An address, not "lo": baresip matches net_interface against addresses too.
            "net_interface": LOOPBACK,
            "audio_source": f"aufile,{Path(source_wav).resolve()}",
            "audio_player": "aubridge,nil",
            "audio_alert": "aubridge,nil",
            "ausrc_srate": str(self.sample_rate),
            "auplay_srate": str(self.sample_rate),
            "ausrc_channels": "1",
            "auplay_channels": "1",
            "rtp_ports": "10000-19999",
            "module_path": str(MODULE_DIR),
            "ctrl_tcp_listen": f"{LOOPBACK}:{self.ctrl_port}",
            "snd_path": str(self.record_dir),
        }
        modules = list(AUDIO_MODULES)
        if codec.lower().startswith("opus/"):
            modules.append(OPUS_MODULE)
            config.update({"opus_stereo": "no", "opus_sprop_stereo": "no"})
        account = f"<{self.aor}>;regint=0;answermode={answermode};audio_codecs={codec}"
        if mediaenc is not None:
            if mediaenc not in MEDIAENC:
                raise ValueError(f"mediaenc {mediaenc!r}: expected one of {MEDIAENC}")
            modules.append(SRTP_MODULE)
            account += f";mediaenc={mediaenc}"
        if ca_file is not None:
            config["sip_cafile"] = str(Path(ca_file).resolve())
        if rtcp_mux:
            config["rtcp_mux"] = "yes"  # offer a=rtcp-mux (RFC 5761)
        config.update(extra_config or {})
        lines = [f"{key}\t\t{value}" for key, value in config.items()]
        lines += [f"module\t\t{m}.so" for m in modules]
        lines += [f"module_app\t\t{m}.so" for m in APP_MODULES]
        (self.config_dir / "config").write_text("\n".join(lines) + "\n")
        # regint=0: no REGISTER; the echo is dialled directly by URI.
        (self.config_dir / "accounts").write_text(account + "\n")
        (self.config_dir / "contacts").write_text("")

    # -- lifecycle ---------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> BaresipProcess:
        """Start baresip and connect to its control socket within `timeout` seconds."""
        binary = shutil.which(BARESIP)
        if binary is None:
            raise BaresipError("baresip is not installed")
        args = [binary, "-f", str(self.config_dir)] + (["-v"] if self.verbose else [])
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                args,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise BaresipError(f"baresip exited with {self.process.returncode}:\n{self.log()}")
            try:
                self._sock = socket.create_connection((LOOPBACK, self.ctrl_port), timeout=0.5)
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise BaresipError(
                        f"baresip control socket never opened:\n{self.log()}"
                    ) from None
                time.sleep(0.05)
        self._sock.settimeout(None)
        self._reader = threading.Thread(target=self._read_loop, daemon=True)
        self._reader.start()
        return self

    def stop(self, timeout: float = 5.0) -> int:
        """`quit` over the control socket, then SIGTERM, then SIGKILL; each bounded."""
        if self.process is None:
            return 0
        if self.process.poll() is None and self._sock is not None:
            with contextlib.suppress(OSError, BaresipError):
                self._send("quit", "", "quit")
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if self.process.poll() is not None:
                break
            self.process.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout)
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None
        if self._reader is not None:
            self._reader.join(timeout)
        self.returncode = self.process.wait(timeout)
        return self.returncode

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def __enter__(self) -> BaresipProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- control -----------------------------------------------------------------------

    def command(self, command: str, params: str = "", timeout: float = 5.0) -> dict[str, Any]:
        """Run one `ctrl_tcp` command and return its response; raise if it is not ok."""
        with self._cond:
            self._tokens += 1
            token = f"t{self._tokens}"
        self._send(command, params, token)
        with self._cond:
            if not self._cond.wait_for(lambda: token in self._responses, timeout):
                raise BaresipError(f"no response to {command!r} in {timeout} s:\n{self.log()}")
            response = self._responses.pop(token)
        if not response.get("ok"):
            raise BaresipError(f"{command} {params!r} failed: {response.get('data')!r}")
        return response

    def dial(self, uri: str, timeout: float = 5.0) -> dict[str, Any]:
        return self.command("dial", uri, timeout)

    def hangup(self, timeout: float = 5.0) -> dict[str, Any]:
        return self.command("hangup", "", timeout)

    def wait_event(
        self,
        kind: str | Callable[[dict[str, Any]], bool],
        timeout: float = 10.0,
        *,
        start: int = 0,
    ) -> dict[str, Any]:
        """The first event from index `start` on whose `type` is `kind` (or that matches)."""
        match = kind if callable(kind) else (lambda e: e.get("type") == kind)
        found: list[dict[str, Any]] = []

        def seen() -> bool:
            found[:] = [e for e in self.events[start:] if match(e)][:1]
            return bool(found) or self._reader is None or not self._reader.is_alive()

        with self._cond:
            self._cond.wait_for(seen, timeout)
        if not found:
            types = [e.get("type") for e in self.events]
            raise BaresipError(f"no {kind!r} event in {timeout} s (saw {types}):\n{self.log()}")
        return found[0]

    def event_types(self) -> list[str]:
        with self._cond:
            return [str(e.get("type")) for e in self.events]

    def _send(self, command: str, params: str, token: str) -> None:
        if self._sock is None:
            raise BaresipError("not connected")
        body = json.dumps({"command": command, "params": params, "token": token})
        self._sock.sendall(netstring(body.encode()))

    def _read_loop(self) -> None:
        decoder = NetstringDecoder()
        sock = self._sock
        assert sock is not None
        try:
            while data := sock.recv(65536):
                for payload in decoder.feed(data):
                    message = json.loads(payload)
                    with self._cond:
                        if message.get("response"):
                            self._responses[str(message.get("token"))] = message
                        else:
                            self.events.append(message)
                        self._cond.notify_all()
        except (OSError, BaresipError, ValueError):
            pass
        finally:
            with self._cond:
                self._cond.notify_all()

    # -- results -----------------------------------------------------------------------

    def recordings(self, kind: str = "dec") -> list[Recording]:
        """The `sndfile` dumps, oldest first: `dec` is what was heard, `enc` what was sent."""
        return [_read_dump(p) for p in sorted(self.record_dir.glob(f"dump-*-{kind}.wav"))]

    def rtcp_stats(self) -> list[dict[str, Any]]:
        """The `rtcp_stats` of every `CALL_RTCP` event so far, oldest first (one per RTCP
        compound baresip received)."""
        with self._cond:
            return [
                dict(e["rtcp_stats"])
                for e in self.events
                if e.get("type") == "CALL_RTCP" and isinstance(e.get("rtcp_stats"), dict)
            ]

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-20000:]
        except OSError:
            return ""
