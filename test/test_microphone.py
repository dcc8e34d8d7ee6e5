"""Microphone recognition end to end: a song played into a virtual microphone
(PulseAudio null sink → ALSA default → PortAudio → PyAudio) is recognized by the CLI
and the Python API."""
from __future__ import annotations

import json
import os
import select
import shlex
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, SHARED_TOOLS, run_cli

TOOL = SHARED_TOOLS / "virtual-mic.sh"
SONG = "Plain Song"


def _ensure_pyaudio() -> None:
    """Install PyAudio (and PortAudio) if missing, the way the virtual-mic tool installs
    PulseAudio: only as root on a Debian-like system."""
    try:
        import pyaudio  # noqa: F401
        return
    except ImportError:
        pass
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("PyAudio is not installed and cannot be installed here (needs root and apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "portaudio19-dev"],
                      env=env, capture_output=True, stdin=subprocess.DEVNULL).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, stdin=subprocess.DEVNULL)
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "portaudio19-dev"],
                       env=env, check=True, capture_output=True, stdin=subprocess.DEVNULL)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "pyaudio"], check=True,
                   capture_output=True, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="session")
def virtual_mic():
    """Start the virtual microphone; yields ``play(file, start_s, length_s) -> Popen``."""
    if not TOOL.is_file():
        pytest.skip(f"virtual microphone tool not found at {TOOL}")
    if shutil.which("apt-get") is None and shutil.which("pulseaudio") is None:
        pytest.skip("this platform has neither PulseAudio nor apt-get to install it")
    _ensure_pyaudio()
    out = subprocess.run(["bash", str(TOOL), "start"], check=True, capture_output=True, text=True,
                         timeout=600, stdin=subprocess.DEVNULL).stdout
    saved = {}
    for line in out.splitlines():  # export NAME=value
        name, _, value = line.removeprefix("export ").partition("=")
        saved[name] = os.environ.get(name)
        os.environ[name] = shlex.split(value)[0]
    players: list[subprocess.Popen] = []

    def play(path, start: float = 0.0, length: float | None = None) -> subprocess.Popen:
        args = ["bash", str(TOOL), "play", str(path), str(start)] + ([str(length)] if length else [])
        players.append(subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL))
        return players[-1]

    yield play
    for p in players:
        if p.poll() is None:
            p.terminate()
            p.wait(timeout=10)
    subprocess.run(["bash", str(TOOL), "stop"], check=True, timeout=60, capture_output=True)
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _stop(player: subprocess.Popen) -> None:
    if player.poll() is None:
        player.terminate()
    player.wait(timeout=10)


def _start_cli(*args: str) -> tuple[subprocess.Popen, bytes]:
    """Start the real CLI and return once it has opened the microphone (it logs
    "* start recording"), so that start-up time on a busy machine does not matter.
    Returns the process and the stderr read so far."""
    proc = subprocess.Popen([sys.executable, str(ROOT / "dejavu.py"), *args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    err = b""
    deadline = time.monotonic() + 60
    while b"start recording" not in err:
        ready, _, _ = select.select([proc.stderr], [], [], max(0.0, deadline - time.monotonic()))
        chunk = os.read(proc.stderr.fileno(), 4096) if ready else b""
        if not chunk:
            proc.kill()
            raise AssertionError(f"the CLI did not start recording: {err.decode(errors='replace')}")
        err += chunk
    return proc, err


def test_cli_recognizes_the_song_played_into_the_microphone(virtual_mic, demo_dir, config_file):
    proc, err = _start_cli("-c", config_file, "--recognize", "mic", "6")
    started = time.monotonic()
    player = virtual_mic(demo_dir / "songs" / f"{SONG}.wav", 3, 8)
    out, more = proc.communicate(timeout=60)
    elapsed = time.monotonic() - started
    _stop(player)
    assert proc.returncode == 0, err + more
    assert b"Traceback" not in err + more
    best = json.loads(out)["results"][0]
    assert best["song_name"] == SONG
    # Playback began 3 s into the song, shortly after the recording started (the offset is
    # the song position at the start of the recording).
    assert 1.0 <= best["offset_seconds"] <= 3.5
    assert elapsed >= 5.9


def test_python_api_records_and_recognizes(virtual_mic, demo_dir, demo_djv):
    from dejavu.logic.recognizer.file_recognizer import FileRecognizer
    from dejavu.logic.recognizer.microphone_recognizer import MicrophoneRecognizer

    player = virtual_mic(demo_dir / "songs" / f"{SONG}.wav", 10, 8)
    time.sleep(0.3)
    started = time.monotonic()
    result = demo_djv.recognize(MicrophoneRecognizer, seconds=5)
    elapsed = time.monotonic() - started
    _stop(player)
    assert result["results"] and result["results"][0]["song_name"] == SONG
    # Playback started 10 s into the song, give or take the player's start-up.
    assert 9.0 <= result["results"][0]["offset_seconds"] <= 12.0
    assert elapsed >= 5.0
    # The same result dict as file recognition.
    file_result = demo_djv.recognize(FileRecognizer, str(demo_dir / "songs" / f"{SONG}.wav"))
    assert set(result) == set(file_result)
    assert set(result["results"][0]) == set(file_result["results"][0])


def test_recording_api_of_the_original(virtual_mic, demo_djv):
    from dejavu.logic.recognizer.microphone_recognizer import MicrophoneRecognizer, NoRecordingError

    mic = MicrophoneRecognizer(demo_djv)
    for name in ("default_chunksize", "default_format", "default_channels", "default_samplerate"):
        assert getattr(MicrophoneRecognizer, name)
    with pytest.raises(NoRecordingError):
        mic.recognize_recording()
    mic.start_recording(channels=2, samplerate=44100, chunksize=1024)
    for _ in range(22):
        mic.process_recording()
    mic.stop_recording()
    assert mic.get_recorded_time() == pytest.approx(22 * 1024 / 44100)
    assert len(mic.data) == mic.channels and mic.data[0].size == 22 * 1024
    result = mic.recognize_recording()   # silence: no match, but the full result dict
    assert result["results"] == [] and "total_time" in result
    mic.close()


def test_until_match_returns_early(virtual_mic, demo_dir, config_file):
    proc, err = _start_cli("-c", config_file, "--recognize", "mic", "12", "--until-match")
    started = time.monotonic()
    player = virtual_mic(demo_dir / "songs" / f"{SONG}.wav", 2, 14)
    out, more = proc.communicate(timeout=60)
    elapsed = time.monotonic() - started
    _stop(player)
    assert proc.returncode == 0, err + more
    result = json.loads(out)
    assert result["results"][0]["song_name"] == SONG
    assert 0.5 <= result["listen_time"] <= 6.0
    assert elapsed < 9.0


def test_until_match_listens_the_whole_time_without_a_match(virtual_mic, demo_djv):
    from dejavu.logic.recognizer.microphone_recognizer import MicrophoneRecognizer

    started = time.monotonic()
    result = demo_djv.recognize(MicrophoneRecognizer, seconds=2, until_match=True)
    assert result["results"] == []
    assert result["listen_time"] == pytest.approx(2.0, abs=0.05)
    assert time.monotonic() - started >= 2.0


def test_monitor_the_microphone_until_interrupted(virtual_mic, demo_dir, config_file):
    proc, err = _start_cli("-c", config_file, "--monitor", "mic", "--window", "5", "--hop", "2.5")
    player = virtual_mic(demo_dir / "songs" / f"{SONG}.wav", 5, 7)
    time.sleep(6)   # ~5.5 s of the song; the interruption then flushes every window
    proc.send_signal(signal.SIGINT)
    out, more = proc.communicate(timeout=30)
    _stop(player)
    err += more
    assert b"Traceback" not in err, err
    assert proc.returncode == 130
    segments = [json.loads(line) for line in out.splitlines()]
    assert [s["song_name"] for s in segments] == [SONG], (segments, err)
    # Playback began 5 s into the song, shortly after the recording started: the segment
    # starts then, at song position 5 s.
    seg = segments[0]
    assert seg["start_seconds"] <= 2.5
    assert seg["offset_seconds"] == pytest.approx(5.0, abs=0.6)
    assert seg["end_seconds"] - seg["start_seconds"] >= 4.0


def test_list_devices(virtual_mic):
    proc = run_cli("--list-devices", timeout=60)
    assert proc.returncode == 0, proc.stderr
    devices = [json.loads(line) for line in proc.stdout.splitlines()]
    assert devices and any(d["default"] for d in devices)
    for d in devices:
        assert {"index", "name", "channels", "default_sample_rate"} <= set(d)
        assert d["channels"] >= 1


def test_device_by_name_and_bad_device(virtual_mic, demo_djv, tmp_path):
    from dejavu import Dejavu
    from dejavu.exceptions import AudioDeviceError
    from dejavu.logic.recognizer.microphone_recognizer import MicrophoneRecognizer, list_input_devices

    db = {"database": {"path": demo_djv.cfg.database["path"]}}
    name = next(d["name"] for d in list_input_devices() if d["default"])
    with Dejavu({**db, "microphone": {"device": name[1:4].upper(), "channels": 2}}) as djv:
        mic = MicrophoneRecognizer(djv)
        mic.start_recording()
        mic.process_recording()
        mic.stop_recording()
        assert name[1:4] in mic.device_info["name"] and mic.channels in (1, 2)
        mic.close()
    with Dejavu({**db, "microphone": {"device": "no such device"}}) as djv:
        with pytest.raises(AudioDeviceError, match="no input device name contains"):
            djv.recognize(MicrophoneRecognizer, seconds=1)
    config = tmp_path / "bad.json"
    config.write_text(json.dumps({**db, "microphone": {"device": 99}}))
    proc = run_cli("-c", str(config), "--recognize", "mic", "2", timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.decode().strip().splitlines()
    assert lines[-1].startswith("dejavu: microphone.device 99 is not an input device")
    assert b"Traceback" not in proc.stderr


def test_missing_pyaudio_is_one_clear_line(demo_djv, tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"database": {"path": demo_djv.cfg.database["path"]}}))
    code = ("import sys; sys.modules['pyaudio'] = None\n"
            "from dejavu.cli import main\n"
            f"sys.exit(main(['-c', {str(config)!r}, '--recognize', 'mic', '2']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("dejavu: microphone support needs PyAudio")
    assert "Traceback" not in proc.stderr


def test_microphone_config_is_validated():
    from dejavu.config import load_config
    from dejavu.exceptions import ConfigError

    cfg = load_config({"microphone": {"device": "USB", "sample_rate": 48000, "channels": 2}})
    assert cfg.microphone.device == "USB" and cfg.microphone.chunk_size == 2048
    for bad, key in [({"device": 1.5}, "microphone.device"), ({"channels": 3}, "microphone.channels"),
                     ({"sample_rate": 100}, "microphone.sample_rate"), ({"chunk": 1}, "microphone.chunk")]:
        with pytest.raises(ConfigError, match=key):
            load_config({"microphone": bad})
