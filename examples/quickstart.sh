#!/usr/bin/env bash
# Quick start on the embedded SQLite default: install dejavu (and ffmpeg if missing),
# make a folder of demo songs, fingerprint it, then recognize a 5 s clip of one song and
# a clip of a song that was never fingerprinted.  Runs in ./demo (delete it afterwards).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v ffmpeg >/dev/null; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends ffmpeg >/dev/null
fi
python3 -m pip install -q -e .
mkdir -p demo && cd demo
python3 -m dejavu.demo music 5 >/dev/null            # 5 synthetic 30 s songs (WAV)
mkdir -p unknown
python3 - <<'PY'                                      # ...and a song with other notes
from dejavu.demo import synth_song, write_wav
write_wav("unknown/never-seen.wav", synth_song(1234, 30.0), 22050)
PY
echo "== dejavu --fingerprint music wav      (database: ./demo/dejavu.db)"
dejavu --fingerprint music wav
echo "== clip: 5 s of 'Demo Song 03' starting at 12.5 s, as MP3"
ffmpeg -nostdin -v error -y -ss 12.5 -t 5 -i "music/Demo Song 03.wav" clip.mp3
echo "== dejavu --recognize file clip.mp3"
dejavu --recognize file clip.mp3 | python3 -m json.tool
echo "== a song that was never fingerprinted (exit status 1, empty results):"
ffmpeg -nostdin -v error -y -ss 5 -t 5 -i unknown/never-seen.wav unknown.wav
dejavu --recognize file unknown.wav || echo "exit status $?"
