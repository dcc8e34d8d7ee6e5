"""Continuous monitoring: a "radio show" of known and unknown excerpts, with crossfades
and noise, must give one segment per known excerpt (start/end within 1 s, right song
offset) and nothing for the unknown parts — from a file, stdin (compressed or raw PCM)
and the Python API."""
from __future__ import annotations

import json
import subprocess
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli

RATE = 22050  # Hz, the demo songs' rate
FADE = 1.0    # s of crossfade between excerpts
KNOWN = ["Plain Song", "under_score_song", "quote's \"song\"", "ünïcødé – song"]


@dataclass
class Excerpt:
    name: str          # song name, or "" for unknown audio
    start: float       # s in the show (middle of the crossfade)
    end: float
    offset: float      # s in the song at ``start``


def _read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as fh:
        assert fh.getframerate() == RATE and fh.getnchannels() == 1
        return np.frombuffer(fh.readframes(fh.getnframes()), dtype="<i2").astype(np.float32) / 32768


def build_show(parts: list[tuple[np.ndarray, str, float, float]], seed: int = 0,
               snr_db: float = 20.0) -> tuple[np.ndarray, list[Excerpt]]:
    """Concatenate (samples, name, song_start_s, length_s) excerpts with crossfades, add
    white noise at ``snr_db``; return the show and its known excerpts."""
    fade = round(FADE * RATE)
    total = sum(round(length * RATE) for *_, length in parts) - fade * (len(parts) - 1)
    show = np.zeros(total, dtype=np.float32)
    truth, pos = [], 0
    for k, (samples, name, song_start, length) in enumerate(parts):
        piece = samples[round(song_start * RATE):][:round(length * RATE)].copy()
        if k > 0:
            piece[:fade] *= np.linspace(0, 1, fade, dtype=np.float32)
        if k < len(parts) - 1:
            piece[-fade:] *= np.linspace(1, 0, fade, dtype=np.float32)
        show[pos:pos + piece.size] += piece
        if name:
            start = pos / RATE + (FADE / 2 if k > 0 else 0.0)
            end = (pos + piece.size) / RATE - (FADE / 2 if k < len(parts) - 1 else 0.0)
            truth.append(Excerpt(name, start, end, song_start + start - pos / RATE))
        pos += piece.size - fade
    rng = np.random.default_rng(seed)
    show += rng.standard_normal(show.size).astype(np.float32) * np.sqrt(np.mean(show**2) / 10 ** (snr_db / 10))
    return 0.9 * show / np.abs(show).max(), truth


@pytest.fixture(scope="module")
def show(demo_dir, tmp_path_factory) -> tuple[Path, list[Excerpt]]:
    songs = {name: _read_wav(demo_dir / "songs" / f"{name}.wav") for name in KNOWN}
    unknown = [_read_wav(p) for p in sorted((demo_dir / "unknown").glob("*.wav"))]
    parts = [(songs[KNOWN[0]], KNOWN[0], 3, 15), (unknown[0], "", 2, 12), (songs[KNOWN[1]], KNOWN[1], 0, 20),
             (songs[KNOWN[2]], KNOWN[2], 5, 14), (unknown[1], "", 0, 15), (songs[KNOWN[3]], KNOWN[3], 8, 12),
             (songs[KNOWN[0]], KNOWN[0], 10, 10)]
    audio, truth = build_show(parts)
    path = tmp_path_factory.mktemp("show") / "show.wav"
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as fh:
        fh.setnchannels(1)
        fh.setsampwidth(2)
        fh.setframerate(RATE)
        fh.writeframes(pcm.tobytes())
    return path, truth


def check_timeline(segments: list[dict], truth: list[Excerpt]) -> None:
    """One segment per known excerpt, in order, boundaries within 1 s, offsets right."""
    segments = sorted(segments, key=lambda s: s["start_seconds"])
    assert [s["song_name"] for s in segments] == [t.name for t in truth], segments
    for seg, t in zip(segments, truth):
        assert abs(seg["start_seconds"] - t.start) <= 1.0, (seg, t)
        assert abs(seg["end_seconds"] - t.end) <= 1.0, (seg, t)
        expected_offset = t.offset + seg["start_seconds"] - t.start
        assert abs(seg["offset_seconds"] - expected_offset) <= 0.25, (seg, t)
        assert 0 < seg["confidence"] <= 1 and seg["hashes_matched"] > 0


def _lines(stdout: bytes) -> list[dict]:
    return [json.loads(line) for line in stdout.decode().splitlines()]


def test_cli_monitors_a_file(show, config_file):
    path, truth = show
    proc = run_cli("-c", config_file, "--monitor", str(path), timeout=120)
    assert proc.returncode == 0, proc.stderr
    check_timeline(_lines(proc.stdout), truth)


def test_cli_monitors_compressed_stdin(show, config_file, tmp_path):
    path, truth = show
    mp3 = tmp_path / "show.mp3"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-b:a", "128k", str(mp3)], check=True)
    proc = run_cli("-c", config_file, "--monitor", "-", input=mp3.read_bytes(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    check_timeline(_lines(proc.stdout), truth)


def test_cli_monitors_raw_pcm_with_other_window(show, config_file):
    path, truth = show
    raw = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-ac", "2", "-ar", "44100",
                          "-f", "s16le", "-"], check=True, capture_output=True).stdout
    proc = run_cli("-c", config_file, "--monitor", "-", "--format", "s16le", "--rate", "44100",
                   "--channels", "2", "--window", "8", "--hop", "3", input=raw, timeout=120)
    assert proc.returncode == 0, proc.stderr
    check_timeline(_lines(proc.stdout), truth)


def test_python_api(show, demo_djv):
    from dejavu.logic.monitor import Segment

    path, truth = show
    segments = list(demo_djv.monitor(str(path), window=10, hop=5))
    assert all(isinstance(s, Segment) for s in segments)
    check_timeline([s.to_dict() for s in segments], truth)


def test_segments_come_out_while_the_stream_is_read(show, demo_djv):
    """A segment is reported once its song has ended, not at the end of the stream."""
    from dejavu.logic.monitor import Monitor

    path, truth = show
    audio = _read_wav(path)
    from dejavu.logic.resample import resample

    samples = resample(audio, RATE, demo_djv.cfg.fingerprint.sample_rate)
    mon = Monitor(demo_djv.db, demo_djv.cfg)
    first_seen = {}
    for i in range(0, samples.size, 4096):
        for seg in mon.feed(samples[i:i + 4096]):
            first_seen[seg.start_seconds] = mon.position
    for seg in mon.flush():
        first_seen[seg.start_seconds] = mon.position
    reported = sorted(first_seen.items())
    assert len(reported) == len(truth)
    # Each of the first four excerpts is out within window + hop + a few seconds of its end.
    for (start, when), t in zip(reported[:4], truth[:4]):
        assert when <= t.end + 10 + 5 + 5, (start, when, t)


def test_unknown_audio_gives_no_segments(demo_dir, config_file):
    unknown = sorted((demo_dir / "unknown").glob("*.wav"))[0]
    proc = run_cli("-c", config_file, "--monitor", str(unknown), timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout == b""


def test_errors_are_one_line(config_file, tmp_path):
    proc = run_cli("-c", config_file, "--monitor", str(tmp_path / "missing.wav"), timeout=60)
    assert proc.returncode == 2 and b"Traceback" not in proc.stderr
    lines = proc.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"dejavu: {str(tmp_path / 'missing.wav')!r}: no such file")
    proc = run_cli("-c", config_file, "--monitor", "-", "--window", "4", "--hop", "6", input=b"", timeout=60)
    assert proc.returncode == 2 and b"hop_seconds" in proc.stderr
    proc = run_cli("-c", config_file, "--list", "--hop", "3", timeout=60)
    assert proc.returncode == 2 and b"--hop goes with --monitor" in proc.stderr


def test_monitor_config_is_validated():
    from dejavu.config import load_config
    from dejavu.exceptions import ConfigError

    cfg = load_config({"monitor": {"window_seconds": 20, "hop_seconds": 2.5}})
    assert (cfg.monitor.window_seconds, cfg.monitor.hop_seconds) == (20, 2.5)
    for bad, key in [({"window_seconds": 1}, "monitor.window_seconds"), ({"hop_seconds": 0}, "monitor.hop_seconds"),
                     ({"hop_seconds": "5"}, "monitor.hop_seconds"), ({"windw": 3}, "monitor.windw")]:
        with pytest.raises(ConfigError, match=key):
            load_config({"monitor": bad})
