"""Issue 19: truncated or damaged audio is never stored quietly (the real CLI on real music).

A file whose decoded length falls short of the length its header declares (an MP3's Xing
frame count, a FLAC's STREAMINFO, a WAV's data chunk), or whose decoder reported errors,
is stored with one warning line naming it and both lengths, counted in the summary; with
``--strict`` or ``"strict_decoding": true`` it is refused (not stored, exit 1).  A WAV
header whose sample width contradicts its frame size is refused.  A stub and the whole
song it was cut from, both stored: a clip of their common start names the whole song first.
"""
from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import cut, run_cli

#: Bytes kept of each truncated file (the first 2-3 s of a 192 kbps MP3).
KEPT_BYTES = 50_000


def _cli(store: Path, *args: str, config: dict[str, Any] | None = None,
         env: dict[str, str] | None = None) -> tuple[int, str, str]:
    path = store.with_suffix(".json")
    path.write_text(json.dumps({"database": {"path": str(store)}, **(config or {})}))
    out = run_cli("--config", str(path), "--no-progress", *args, env=env, timeout=300)
    return out.returncode, out.stdout.decode(), out.stderr.decode()


def _names(store: Path) -> list[str]:
    return sorted(json.loads(line)["song_name"] for line in _cli(store, "--list")[1].splitlines())


@pytest.fixture(scope="module")
def damaged(corpus: list[Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A folder of damaged files (name → declared seconds) and one whole FLAC."""
    folder = tmp_path_factory.mktemp("damaged")
    mp3 = corpus[0]
    (folder / "cut mp3.mp3").write_bytes(mp3.read_bytes()[:KEPT_BYTES])
    flac = cut(mp3, folder / "whole.flac", 0, 60)
    (folder / "cut flac.flac").write_bytes(flac.read_bytes()[:len(flac.read_bytes()) // 20])
    wav = cut(mp3, folder / "source.wav", 0, 60)
    (folder / "cut wav.wav").write_bytes(wav.read_bytes()[:wav.stat().st_size // 20 // 4 * 4])
    wav.unlink()
    body = bytearray(mp3.read_bytes())   # deterministic garbage over a third of the middle
    third = len(body) // 3
    body[third:2 * third] = np.random.default_rng(19).bytes(third)
    (folder / "garbled mp3.mp3").write_bytes(bytes(body))
    declared = float(subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of",
                                     "csv=p=0", str(mp3)], capture_output=True, text=True, check=True).stdout)
    return {"folder": folder, "mp3 seconds": declared}


@pytest.mark.parametrize("decoder", ["mpg123", "ffmpeg"])
def test_truncated_and_garbled_files_are_stored_with_a_warning_counted_in_the_summary(
        damaged: dict[str, Any], tmp_path: Path, decoder: str) -> None:
    if decoder == "mpg123" and shutil.which("mpg123") is None:
        pytest.skip("mpg123 is not installed: the MP3s go through ffmpeg, tested by the other case")
    env = {"DEJAVU_DECODER": decoder}
    code, out, err = _cli(tmp_path / "fp.db", "--fingerprint", str(damaged["folder"]), "mp3", "flac", "wav",
                          env=env)
    assert code == 0 and "Traceback" not in err, err
    warnings = [line for line in err.splitlines() if "': " in line]   # a line naming a file
    assert len(warnings) == 4, err
    for name in ("cut mp3.mp3", "cut flac.flac", "cut wav.wav", "garbled mp3.mp3"):
        [line] = [w for w in warnings if f"/{name}'" in w]
        lengths = [float(x) for x in re.findall(r"(\d+\.\d) s", line)]
        assert len(lengths) == 2 and lengths[0] < lengths[1], line
    [mp3_line] = [w for w in warnings if "/cut mp3.mp3'" in w]
    assert re.search(rf"decoded [0-3]\.\d s of the {damaged['mp3 seconds']:.1f} s its header declares", mp3_line)
    assert re.search(r"decoded \d\.\d s of the 60\.0 s", next(w for w in warnings if "/cut flac.flac'" in w))
    assert "fingerprinted 5, " in err and "; 4 of those fingerprinted truncated or damaged" in err, err
    assert len(_names(tmp_path / "fp.db")) == 5


@pytest.mark.parametrize("how", ["--strict", "config"])
def test_strict_decoding_refuses_damaged_files(damaged: dict[str, Any], tmp_path: Path, how: str) -> None:
    store = tmp_path / "fp.db"
    args = ("--fingerprint", str(damaged["folder"]), "mp3", "flac", "wav")
    code, _, err = (_cli(store, "--strict", *args) if how == "--strict"
                    else _cli(store, *args, config={"strict_decoding": True}))
    assert code == 1 and "Traceback" not in err, err
    refused = [line for line in err.splitlines() if line.endswith("not stored (strict decoding)")]
    assert len(refused) == 4 and "failed 4" in err, err
    assert _names(store) == ["whole"]


def test_a_wav_header_claiming_3_bits_per_sample_is_refused(corpus: list[Path], tmp_path: Path) -> None:
    """16-bit stereo frames whose header says 3 bits per sample: ffmpeg would read them as
    8-bit samples, noise of the wrong length; it is refused by name."""
    wav = cut(corpus[1], tmp_path / "three bits.wav", 0, 20)
    data = bytearray(wav.read_bytes())
    assert data[12:16] == b"fmt " and struct.unpack("<H", data[34:36]) == (16,)
    data[34:36] = struct.pack("<H", 3)
    wav.write_bytes(bytes(data))
    code, _, err = _cli(tmp_path / "fp.db", "--fingerprint", str(wav))
    assert code == 1 and _names(tmp_path / "fp.db") == [], err
    [line] = [line for line in err.splitlines() if "/three bits.wav'" in line]
    assert "3 bits per sample" in line and "4 bytes per frame" in line


def test_a_clip_of_a_stub_and_its_whole_song_names_the_whole_song_first(corpus: list[Path], tmp_path: Path) -> None:
    """The stub (the first 300 KB, ~12 s) is stored first, so it had the lower id that used
    to win the tie of equal matched hashes."""
    store = tmp_path / "fp.db"
    for song in corpus[:3]:
        stub = tmp_path / f"stub of {song.stem}.mp3"
        stub.write_bytes(song.read_bytes()[:300_000])
        assert _cli(store, "--fingerprint", str(stub))[0] == 0
    for song in corpus[:3]:
        assert _cli(store, "--fingerprint", str(song))[0] == 0
    for song in corpus[:3]:
        for start in (0.0, 2.0, 5.0):
            clip = cut(song, tmp_path / "clip.wav", start, 4)
            code, out, err = _cli(store, "--recognize", "file", str(clip))
            results = json.loads(out)["results"]
            assert code == 0 and results[0]["song_name"] == song.stem, (start, results)
            assert abs(results[0]["offset_seconds"] - start) < 0.1
