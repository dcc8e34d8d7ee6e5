"""The browser page in a real browser: Debian's chromium driven by playwright (never
``playwright install``), its microphone a WAV file (chromium's fake capture device, looped).

A screenshot of each run is saved under ``$DEJAVU_TEST_ARTIFACTS`` (default: the test's tmp dir).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from conftest import cut
from test_server import STORED, UNKNOWN, Server, music, store_config  # noqa: F401  (fixtures)

CHROMIUM = "/usr/bin/chromium"
#: Seconds the page gets to show its first answer (one comes every 2.5 s of audio).
ANSWER_TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def page_server(store_config, tmp_path_factory):  # noqa: F811
    srv = Server(store_config, tmp_path_factory.mktemp("browser-serve"))
    yield srv
    srv.stop()


def _artifact(tmp_path: Path, name: str) -> Path:
    folder = Path(os.environ.get("DEJAVU_TEST_ARTIFACTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name


def _listen(port: int, microphone: Path, screenshot: Path, upload: Path | None = None,
            init_script: str | None = None) -> dict[str, str]:
    """Open the page with ``microphone`` as the microphone (``init_script`` run first), click
    Listen, wait for the first answer; optionally recognize ``upload`` through the file input.
    The page's texts."""
    assert Path(CHROMIUM).exists() and shutil.which("chromium"), "apt-get install chromium (.ci/run does)"
    args = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={microphone}", "--headless=new"]
    if os.geteuid() == 0:
        args.append("--no-sandbox")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            page = browser.new_page(viewport={"width": 390, "height": 844})     # a phone's screen
            if init_script:
                page.add_init_script(init_script)
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_selector("#songs li")
            page.click("#listen")
            page.wait_for_function("document.getElementById('song').textContent !== '—'",
                                   timeout=ANSWER_TIMEOUT_MS)
            texts = {key: page.text_content(f"#{key}") or "" for key in
                     ("song", "position", "confidence", "mode", "songs", "listen")}
            if upload is not None:
                page.set_input_files("#file", str(upload))
                page.wait_for_function("document.getElementById('file-result').textContent.includes('—')"
                                       " || document.getElementById('file-result').textContent.includes('match')",
                                       timeout=ANSWER_TIMEOUT_MS)
                texts["file-result"] = page.text_content("#file-result") or ""
            page.screenshot(path=str(screenshot), full_page=True)
            return texts
        finally:
            browser.close()


def test_the_page_names_the_song_its_microphone_hears(page_server, music, tmp_path):  # noqa: F811
    wav = cut(music[STORED[1]], tmp_path / "mic.wav", 60, 20, "-ac", "1", "-ar", "48000", "-c:a", "pcm_s16le")
    shot = _artifact(tmp_path, "browser-match.png")
    texts = _listen(page_server.port, wav, shot, upload=music[f"clip:{STORED[0]}"])
    assert texts["song"] == STORED[1]
    minutes, seconds = map(int, re.fullmatch(r"(\d+):(\d\d)", texts["position"]).groups())
    assert 60 <= minutes * 60 + seconds <= 85          # the clip starts 60 s in, and loops after 20 s
    assert re.fullmatch(r"\d+ %", texts["confidence"]) and texts["listen"] == "Stop"
    assert "streamed live" in texts["mode"]
    assert all(name in texts["songs"] for name in STORED)
    assert re.search(rf"{STORED[0]} — from 0:(39|40) in the song", texts["file-result"])    # the clip is at 40 s
    assert shot.stat().st_size > 10_000


def test_the_page_says_no_match_for_silence_and_unknown_music(page_server, music, tmp_path):  # noqa: F811
    silence = tmp_path / "silence.wav"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", "anullsrc=r=44100:cl=mono",
                    "-t", "10", "-c:a", "pcm_s16le", str(silence)], check=True)
    shot = _artifact(tmp_path, "browser-no-match.png")
    texts = _listen(page_server.port, silence, shot, upload=music[f"clip:{UNKNOWN}"])
    assert texts["song"] == "No match" and texts["position"] == "—"
    assert "no match" in texts["file-result"]


def test_without_audioworklet_the_page_uploads_recorded_clips(page_server, music, tmp_path):  # noqa: F811
    """The fallback: MediaRecorder clips (webm/opus) POSTed to /v1/recognize."""
    wav = cut(music[STORED[0]], tmp_path / "mic.wav", 50, 20, "-ac", "1", "-ar", "44100", "-c:a", "pcm_s16le")
    shot = _artifact(tmp_path, "browser-recorder.png")
    texts = _listen(page_server.port, wav, shot, init_script="delete window.AudioWorkletNode;")
    assert "clips of 6 s uploaded" in texts["mode"] and texts["song"] == STORED[0]
    assert re.fullmatch(r"\d+ %", texts["confidence"])
