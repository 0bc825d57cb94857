"""Several real baresip phones in one call: each sends its own tone, each records what it hears.

The audio check for rooms: a participant hears everyone but themselves (mix-minus), so in a
room of talkers with distinct tones each recording must hold the others' tones and not its
own. `converse` dials every talker in turn, lets them all talk for a while once everyone's
call is up, hangs up, and returns the stretch of each recording when everyone was in.
What each talker offers (codec, SRTP, transport) is up to the test; the URI it dials too.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from control.media.tone import sine, tone_power
from tests.peers.baresip import BaresipError, BaresipProcess, write_wav

__all__ = [
    "ABSENT",
    "HEARD",
    "Heard",
    "Talker",
    "assert_each_hears_the_others",
    "converse",
    "hearing_report",
]

HEARD = -20.0  # dB (full-scale sine = 0): each talker sends its tone at about -8
ABSENT = -35.0  # dB: codec noise only; a tone heard back would read near HEARD
SOURCE_SECONDS = 40.0  # longer than any call here: the test hangs up, not aufile
SETTLE_SECONDS = 1.0  # jitter buffers filling after the last join: not analysed


@dataclass(frozen=True, slots=True)
class Talker:
    """One phone: its user name, the exact baresip codec it offers, the tone it sends, and
    `mediaenc` (baresip's SRTP mode) or None for plain RTP."""

    user: str
    codec: str
    tone: float
    mediaenc: str | None = None

    @property
    def rate(self) -> int:
        return int(self.codec.split("/")[1])

    def wav_samples(self, seconds: float) -> npt.NDArray[np.int16]:
        """The talker's tone at its codec's rate, as its microphone sends it."""
        return sine(self.tone, seconds, self.rate, 0.4)


@dataclass(frozen=True, slots=True)
class Heard:
    """What `talker` heard while everyone was in the call, at its codec's rate."""

    talker: Talker
    rate: int
    samples: npt.NDArray[np.int16]
    process: BaresipProcess

    def power(self, tone: float) -> float:
        return tone_power(self.samples, self.rate, tone)

    @property
    def call_id(self) -> str:
        """The Call-ID of the talker's call (baresip's event `id`)."""
        return str(self.process.wait_event("CALL_ESTABLISHED", 0)["id"])


def converse(
    talkers: Sequence[Talker],
    uri_for: Callable[[Talker], str],
    workdir: Path,
    *,
    talk_seconds: float = 4.0,
    ca_file: Path | None = None,
    diagnostics: Callable[[], str] = lambda: "",
) -> list[Heard]:
    """Dial `uri_for(talker)` for each talker in order, talk `talk_seconds` once all calls
    are up and receiving RTP, hang up, and return what each heard in that stretch.

    `diagnostics` adds the far side's log to failure messages.
    """
    with contextlib.ExitStack() as stack:
        phones: list[BaresipProcess] = []

        def why() -> str:
            logs = [f"--- baresip {p.aor} ---\n{p.log()[-3000:]}" for p in phones]
            return "\n" + "\n".join(logs) + "\n" + diagnostics()

        for talker in talkers:
            source = write_wav(
                workdir / f"{talker.user}.wav",
                talker.wav_samples(SOURCE_SECONDS),
                talker.rate,
            )
            phone = BaresipProcess(
                source,
                codec=talker.codec,
                user=talker.user,
                mediaenc=talker.mediaenc,
                ca_file=ca_file,
            )
            stack.enter_context(phone)
            phones.append(phone)
            phone.dial(uri_for(talker))
            try:
                phone.wait_event("CALL_ESTABLISHED", 15)
            except BaresipError as exc:
                raise AssertionError(f"{talker.user} could not join: {exc}{why()}") from None
        for phone in phones:
            try:
                phone.wait_event("CALL_RTPESTAB", 15)
            except BaresipError as exc:
                raise AssertionError(f"{phone.aor} receives no RTP: {exc}{why()}") from None
        # The conversation itself: real time passing while the phones talk; nothing is
        # asserted about how long anything took.
        time.sleep(SETTLE_SECONDS + talk_seconds)
        for phone in phones:
            assert "CALL_CLOSED" not in phone.event_types(), f"{phone.aor} dropped{why()}"
            phone.hangup()
        for phone in phones:
            phone.wait_event("CALL_CLOSED", 10)
    heard: list[Heard] = []
    for talker, phone in zip(talkers, phones, strict=True):
        assert phone.returncode == 0, f"{talker.user}: baresip exited {phone.returncode}{why()}"
        (recording,) = phone.recordings("dec")
        assert recording.rate == talker.rate, why()
        # The dump runs in real time from call setup to hang-up, so its tail is the
        # stretch when everyone was in; the last 0.2 s covers the hang-up itself.
        tail = recording.samples[: max(0, recording.samples.size - recording.rate // 5)]
        tail = tail[-int(talk_seconds * recording.rate) :]
        assert tail.size >= recording.rate, f"{talker.user} recorded too little{why()}"
        heard.append(Heard(talker, recording.rate, tail, phone))
    return heard


def hearing_report(heard: Sequence[Heard]) -> str:
    """Every talker's level of every tone, for assertion messages."""
    rows = []
    for h in heard:
        levels = ", ".join(f"{t.user}:{h.power(t.tone):.1f} dB" for t in (x.talker for x in heard))
        rows.append(f"{h.talker.user} ({h.talker.codec}) heard {levels}")
    return "\n".join(rows)


def assert_each_hears_the_others(heard: Sequence[Heard], context: str = "") -> None:
    """Mix-minus: every talker hears every other talker's tone, and not its own."""
    report = hearing_report(heard) + context
    for listener in heard:
        for other in heard:
            level = listener.power(other.talker.tone)
            if other is listener:
                assert level < ABSENT, f"{listener.talker.user} heard itself\n{report}"
            else:
                assert level > HEARD, (
                    f"{listener.talker.user} did not hear {other.talker.user}\n{report}"
                )
