"""The tone measures the audio tests judge by: a present tone reads as present, a click
does not read as a tone."""

from __future__ import annotations

import numpy as np

from control.media.tone import sine, steady_tone_power, tone_power

RATE = 16000


def test_a_click_raises_every_band_of_the_whole_but_not_the_median_piece() -> None:
    signal = sine(440.0, 3.0, RATE, amplitude=0.4)
    signal[RATE : RATE + 10] = 30000  # one click, as a late or concealed packet leaves
    assert tone_power(signal, RATE, 700.0) > -55.0
    assert steady_tone_power(signal, RATE, 700.0) < -80.0
    assert steady_tone_power(signal, RATE, 440.0) > -15.0


def test_a_tone_present_throughout_reads_as_present() -> None:
    quiet = sine(700.0, 3.0, RATE, amplitude=0.01)  # -40 dB: a leak mix-minus would leave
    mixed = (sine(440.0, 3.0, RATE, amplitude=0.4).astype(np.int32) + quiet).astype(np.int16)
    assert steady_tone_power(mixed, RATE, 700.0) > -50.0


def test_a_signal_shorter_than_one_piece_is_measured_whole() -> None:
    short = sine(700.0, 0.1, RATE, amplitude=0.5)
    assert steady_tone_power(short, RATE, 700.0) == tone_power(short, RATE, 700.0)
