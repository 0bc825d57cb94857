"""A real SIP phone (baresip) calls the Chorus echo and hears its own tone come back.

baresip sends a WAV tone as its microphone with one codec forced, and its `sndfile` filter
records the decoded audio it receives. The echo reflects RTP unchanged, so the recording
must hold the same tone, far above every other frequency — and for G.722 the wideband
half of the spectrum too, which a narrowband path would have cut off.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from control.media.tone import dominant_frequencies, sine, tone_power
from tests.peers.baresip import BaresipProcess, write_wav
from tests.peers.chorus import ChorusProcess

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.peer("baresip"),
]

TONE_SECONDS = 3.0


@pytest.fixture(scope="module")
def chorus() -> Iterator[ChorusProcess]:
    with ChorusProcess() as process:
        yield process
        assert process.alive, process.log()


@pytest.mark.parametrize(
    ("codec", "rate", "tones"),
    [
        ("PCMU/8000/1", 8000, (880.0,)),
        # 6 kHz only survives a 16 kHz path: proves the echo kept G.722 end to end.
        ("G722/16000/1", 16000, (880.0, 6000.0)),
    ],
)
def test_baresip_hears_its_tone_from_echo(
    chorus: ChorusProcess, tmp_path: Path, codec: str, rate: int, tones: tuple[float, ...]
) -> None:
    signal = sum(sine(f, TONE_SECONDS, rate, 0.4 / len(tones)).astype(np.int32) for f in tones)
    source = write_wav(tmp_path / f"tone-{rate}.wav", np.asarray(signal, dtype=np.int16), rate)
    with BaresipProcess(source, codec=codec) as ua:

        def why() -> str:
            return f"\n--- baresip ---\n{ua.log()}\n--- chorus ---\n{chorus.log()}"

        ua.dial(f"sip:echo@127.0.0.1:{chorus.sip_port}")
        ua.wait_event("CALL_ESTABLISHED", 10)
        # aufile ends the call itself when the WAV runs out.
        closed = ua.wait_event("CALL_CLOSED", TONE_SECONDS + 10)
        assert "end of file" in str(closed.get("param")), f"{closed}{why()}\n{chorus.trace()}"
    assert ua.returncode == 0, why()
    assert "CALL_RTPESTAB" in ua.event_types(), why()

    recordings = ua.recordings("dec")
    assert len(recordings) == 1, why()
    heard = recordings[0]
    assert heard.rate == rate, why()
    samples = heard.samples[rate // 5 :]  # skip the jitter buffer's start-up
    assert len(samples) > rate, f"only {len(samples)} samples came back{why()}"
    assert np.abs(samples).max() > 2000, f"what came back is silence{why()}"
    peaks = dominant_frequencies(samples, rate, len(tones))
    assert sorted(round(f) for f in peaks) == sorted(round(f) for f in tones), peaks
    others = [f for f in (300.0, 1500.0, 2500.0, 3500.0) if all(abs(f - t) > 200 for t in tones)]
    for tone in tones:
        level = tone_power(samples, rate, tone)
        for other in others:
            assert level > tone_power(samples, rate, other) + 30, (tone, other, level)
