"""Synthetic demo music, so dejavu can be tried (and tested) without anyone's music.

Each song is made from its seed: a tempo, a chord progression, a melody of
harmonic notes with envelopes, a bass line and drum hits.  Different seeds give
different songs; the same seed always gives the same samples.

    python -m dejavu.demo DIR [N]    # writes N songs (default 5) as 16-bit WAV
"""
from __future__ import annotations

import os
import sys
import wave

import numpy as np


def _tone(freq: float, length: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(length) / sr
    harmonics = rng.uniform(0.2, 1.0, size=5) / np.arange(1, 6)
    out = sum(a * np.sin(2 * np.pi * freq * k * t) for k, a in enumerate(harmonics, start=1))
    attack = min(length, int(0.01 * sr))
    env = np.exp(-t * rng.uniform(2.0, 6.0))
    env[:attack] *= np.linspace(0, 1, attack)
    return out * env


def synth_song(seed: int, seconds: float = 30.0, sr: int = 22050) -> np.ndarray:
    """A deterministic synthetic song, float32 mono in [-1, 1], shape (seconds·sr,)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    out = np.zeros(n + sr, dtype=np.float64)
    beat = int(sr * 60 / rng.uniform(80, 150))
    root = rng.integers(40, 52)                      # MIDI note of the key
    scale = np.array([0, 2, 4, 5, 7, 9, 11, 12, 14, 16])
    progression = rng.choice([0, 3, 4, 5], size=8)
    drum_hz = rng.uniform(80.0, 900.0)               # each song its own drum "skin"

    tuning = rng.uniform(-0.5, 0.5)                 # semitones: each song its own pitch grid

    def hz(midi: float) -> float:
        return 440.0 * 2 ** ((midi + tuning - 69) / 12)

    for i, start in enumerate(range(0, n, beat)):
        chord = progression[(i // 4) % len(progression)]
        if i % 4 == 0:                               # chord on the bar, 4 beats long
            for step in (0, 2, 4):
                note = root + 12 + scale[(chord + step) % len(scale)]
                out[start:start + 4 * beat] += 0.12 * _tone(hz(note), min(4 * beat, n + sr - start), sr, rng)
        if i % 2 == 0:                               # bass every other beat
            out[start:start + 2 * beat] += 0.25 * _tone(hz(root + scale[chord]), min(2 * beat, n + sr - start), sr, rng)
        for sub in range(rng.integers(1, 3)):        # melody: one or two notes per beat
            pos = start + sub * beat // 2
            note = root + 24 + scale[rng.integers(0, len(scale))]
            length = min(beat // 2 + beat // 4, n + sr - pos)
            if length > 0:
                out[pos:pos + length] += 0.2 * _tone(hz(note), length, sr, rng)
        hit = min(int(0.08 * sr), n + sr - start)    # drum: a decaying tone plus noise
        decay = np.exp(-np.arange(hit) / (0.015 * sr))
        burst = (np.sin(2 * np.pi * drum_hz * np.arange(hit) / sr) + 0.3 * rng.standard_normal(hit)) * decay
        out[start:start + hit] += (0.3 if i % 2 == 0 else 0.15) * burst
    out = out[:n]
    return (0.9 * out / max(np.abs(out).max(), 1e-9)).astype(np.float32)


def write_wav(path: str, samples: np.ndarray, sr: int) -> None:
    """Write float mono samples as a 16-bit PCM WAV file."""
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    with wave.open(path, "wb") as fh:
        fh.setnchannels(1)
        fh.setsampwidth(2)
        fh.setframerate(int(sr))
        fh.writeframes(pcm.tobytes())


def write_demo_songs(directory: str, count: int = 5, seconds: float = 30.0, first_seed: int = 1) -> list[str]:
    """Write ``count`` synthetic songs as WAV files into ``directory``; return their paths."""
    os.makedirs(directory, exist_ok=True)
    paths = []
    for seed in range(first_seed, first_seed + count):
        path = os.path.join(directory, f"Demo Song {seed:02d}.wav")
        write_wav(path, synth_song(seed, seconds), 22050)
        paths.append(path)
    return paths


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: python -m dejavu.demo DIR [N]")
    for p in write_demo_songs(sys.argv[1], int(sys.argv[2]) if len(sys.argv) == 3 else 5):
        print(p)
