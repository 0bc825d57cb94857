"""Test and benchmark helpers: make tones, and tell which tones a signal contains.

Audio tests assert "participant A hears tone X and not tone Y" rather than comparing
samples, because codecs, resamplers and mixers legitimately change every sample.
Spectra use a Hann window (sidelobes fall fast, so a loud tone does not mask a quiet
one a few hundred hertz away) over the whole signal.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["dominant_frequencies", "sine", "steady_tone_power", "tone_power"]

FULL_SCALE = 32767.0


def sine(
    freq: float, duration: float, rate: int, amplitude: float = 0.5, *, phase: float = 0.0
) -> npt.NDArray[np.int16]:
    """An int16 sine of `freq` Hz; `amplitude` is a fraction of full scale."""
    n = int(round(duration * rate))
    t = np.arange(n, dtype=np.float64) / rate
    wave = amplitude * FULL_SCALE * np.sin(2 * np.pi * freq * t + phase)
    return np.clip(np.round(wave), -32768, 32767).astype(np.int16)


def _spectrum(pcm: npt.ArrayLike, rate: int) -> tuple[npt.NDArray[np.float64], float]:
    x = np.asarray(pcm, dtype=np.float64) / FULL_SCALE
    if x.size == 0:
        return np.zeros(1), float(rate)
    window = np.hanning(x.size)
    # Scale so a full-scale sine reads as power 0.5 (its mean square) in its bins.
    power = np.abs(np.fft.rfft(x * window)) ** 2 / (np.sum(window**2) * x.size / 2)
    return power, rate / x.size


def tone_power(pcm: npt.ArrayLike, rate: int, freq: float, *, bandwidth: float = 40.0) -> float:
    """Power of the band `freq ± bandwidth/2` in dB relative to a full-scale sine.

    A full-scale sine reads about 0 dB, an amplitude-0.5 sine about -6 dB, silence is
    floored at -200 dB.
    """
    power, bin_hz = _spectrum(pcm, rate)
    lo = max(0, int(np.floor((freq - bandwidth / 2) / bin_hz)))
    hi = min(power.size, int(np.ceil((freq + bandwidth / 2) / bin_hz)) + 1)
    band = float(np.sum(power[lo:hi])) if hi > lo else 0.0
    return 10.0 * float(np.log10(max(band / 0.5, 1e-20)))


def steady_tone_power(
    pcm: npt.ArrayLike, rate: int, freq: float, *, segment: float = 0.2, bandwidth: float = 40.0
) -> float:
    """`tone_power` of each `segment`-second piece of the signal, the median of them.

    For "tone X is absent" checks: a tone that is really there is there in every piece,
    while a click (a late packet on a loaded machine, a concealed loss) spreads its energy
    over the whole spectrum of the one piece it falls in — over the whole signal that
    raises every band a little; the median of the pieces ignores it.
    """
    x = np.asarray(pcm)
    size = max(1, int(segment * rate))
    pieces = [x[i : i + size] for i in range(0, x.size - size + 1, size)]
    if not pieces:
        return tone_power(x, rate, freq, bandwidth=bandwidth)
    return float(np.median([tone_power(p, rate, freq, bandwidth=bandwidth) for p in pieces]))


def dominant_frequencies(pcm: npt.ArrayLike, rate: int, n: int = 1) -> list[float]:
    """The `n` strongest spectral peaks in Hz, strongest first.

    After picking a peak, its neighbourhood (±50 Hz) is suppressed so one tone's
    window leakage does not count as a second tone.
    """
    power, bin_hz = _spectrum(pcm, rate)
    power = power.copy()
    power[0] = 0.0  # DC offset is not a tone
    guard = max(1, int(np.ceil(50.0 / bin_hz)))
    peaks: list[float] = []
    for _ in range(n):
        k = int(np.argmax(power))
        if power[k] <= 0.0:
            break
        # Parabolic interpolation on log power refines the peak between bins.
        offset = 0.0
        if 0 < k < power.size - 1:
            a, b, c = np.log(power[k - 1 : k + 2] + 1e-30)
            denom = a - 2 * b + c
            if denom != 0:
                offset = 0.5 * (a - c) / denom
        peaks.append(float((k + offset) * bin_hz))
        power[max(0, k - guard) : k + guard + 1] = 0.0
    return peaks
