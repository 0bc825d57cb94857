"""A real SIP phone (baresip) calls the Chorus echo and hears its own tone come back.

baresip sends a WAV tone as its microphone with one codec forced, and its `sndfile` filter
records the decoded audio it receives. The echo returns what it got, so the recording must
hold the same tone, far above every other frequency — and for G.722 and Opus the wideband
part of the spectrum too, which a narrowband path would have cut off.

The same call runs over SIP/TLS (Request-URI `;transport=tls`): RFC 3261 §12.1.1 makes the
answer's Contact `sip:` (the Request-URI was not SIPS), baresip ACKs it over the same TLS
connection, and the dialog lives. And with SDES-SRTP (`mediaenc=srtp-mand`, RFC 4568): the
answer is `RTP/SAVP` with our own `a=crypto` key, and baresip, which drops every packet
that fails SRTP authentication, still hears its tone.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from control.media.tone import dominant_frequencies, sine, tone_power
from tests.peers.baresip import BaresipProcess, write_wav
from tests.peers.chorus import ChorusProcess
from tests.peers.siptrace import audio_profile, call_messages, invite_answer

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.peer("baresip"),
]

TONE_SECONDS = 3.0


@dataclass(frozen=True, slots=True)
class Case:
    codec: str  # baresip's exact name
    tones: tuple[float, ...]
    transport: str = "udp"
    mediaenc: str | None = None

    @property
    def rate(self) -> int:
        return int(self.codec.split("/")[1])


CASES = {
    "pcmu": Case("PCMU/8000/1", (880.0,)),
    # 6 kHz only survives a 16 kHz path: proves the echo kept G.722 end to end.
    "g722": Case("G722/16000/1", (880.0, 6000.0)),
    # baresip names mono Opus opus/48000/1 (the SDP still says opus/48000/2, RFC 7587).
    "opus": Case("opus/48000/1", (880.0, 6000.0)),
    "pcmu-tls": Case("PCMU/8000/1", (880.0,), transport="tls"),
    "g722-srtp": Case("G722/16000/1", (880.0, 6000.0), mediaenc="srtp-mand"),
    "pcmu-srtp-tls": Case("PCMU/8000/1", (880.0,), transport="tls", mediaenc="srtp-mand"),
}


@pytest.fixture(scope="module")
def chorus() -> Iterator[ChorusProcess]:
    codecs = ["G722", "PCMU", "PCMA", "opus", "telephone-event"]
    with ChorusProcess({"rtp": {"codecs": codecs}}) as process:
        yield process
        assert process.alive, process.log()


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_baresip_hears_its_tone_from_echo(
    chorus: ChorusProcess, tmp_path: Path, case: Case
) -> None:
    rate, tones = case.rate, case.tones
    signal = sum(sine(f, TONE_SECONDS, rate, 0.4 / len(tones)).astype(np.int32) for f in tones)
    source = write_wav(tmp_path / f"tone-{rate}.wav", np.asarray(signal, dtype=np.int16), rate)
    ca_file = chorus.workdir / "spool" / "tls" / "chorus.crt"
    with BaresipProcess(source, codec=case.codec, mediaenc=case.mediaenc, ca_file=ca_file) as ua:

        def why() -> str:
            return f"\n--- baresip ---\n{ua.log()}\n--- chorus ---\n{chorus.log()}"

        if case.transport == "tls":
            ua.dial(f"sip:echo@127.0.0.1:{chorus.tls_port};transport=tls")
        else:
            ua.dial(f"sip:echo@127.0.0.1:{chorus.sip_port}")
        established = ua.wait_event("CALL_ESTABLISHED", 10)
        # aufile ends the call itself when the WAV runs out.
        closed = ua.wait_event("CALL_CLOSED", TONE_SECONDS + 10)
        assert "end of file" in str(closed.get("param")), f"{closed}{why()}\n{chorus.trace()}"
    assert ua.returncode == 0, why()
    assert "CALL_RTPESTAB" in ua.event_types(), why()

    # Signalling: every message of the call on the transport dialled; the answer's Contact
    # and media profile as RFC 3261 §12.1.1 and RFC 4568 want them.
    messages = call_messages(chorus.trace(), str(established["id"]))
    assert {m.transport for m in messages} == {case.transport}, messages
    answer = invite_answer(messages)
    contact = answer.header("Contact")
    assert contact.startswith("<sip:"), contact
    assert ("transport=tls" in contact) == (case.transport == "tls"), contact
    received = [m.method for m in messages if m.received]
    assert received[:1] == ["INVITE"] and "ACK" in received and "BYE" in received, received
    # The ACK matched: no 2xx retransmission after it (RFC 3261 §13.3.1.4).
    ack = next(i for i, m in enumerate(messages) if m.method == "ACK")
    again = [m for m in messages[ack:] if m.status == 200 and m.cseq_method == "INVITE"]
    assert not again, "the ACK did not stop the 200"
    if case.mediaenc is not None:
        assert audio_profile(answer) == "RTP/SAVP", answer.body
        assert "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" in answer.body, answer.body
    else:
        assert audio_profile(answer) == "RTP/AVP" and "a=crypto" not in answer.body, answer.body

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
