"""The README's first set-up command, ``bash examples/quickstart.sh``, run as a new user would:
it installs dejavu, fingerprints five demo songs into ./demo/dejavu.db, names a 5 s MP3 clip
with the right offset, and gives an unknown song empty results and exit status 1."""
from __future__ import annotations

import json
import re
import shutil
import subprocess

from conftest import ROOT


def test_the_readme_quickstart_runs_on_the_embedded_default() -> None:
    demo = ROOT / "demo"
    existed = demo.exists()
    try:
        done = subprocess.run(["bash", str(ROOT / "examples" / "quickstart.sh")], capture_output=True,
                              stdin=subprocess.DEVNULL, timeout=600)
    finally:
        if not existed:
            shutil.rmtree(demo, ignore_errors=True)
    out, err = done.stdout.decode(), done.stderr.decode()
    assert done.returncode == 0, err
    match = re.search(r"== dejavu --recognize file clip.mp3\n(\{.*?\n\})\n", out, re.S)
    assert match, out
    best = json.loads(match.group(1))["results"][0]
    assert best["song_name"] == "Demo Song 03" and abs(best["offset_seconds"] - 12.5) < 0.1, best
    unknown = out.split("never fingerprinted", 1)[1]
    assert '"results": []' in unknown and "exit status 1" in unknown, out
