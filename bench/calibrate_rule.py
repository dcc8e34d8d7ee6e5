"""Calibrate the no-match rule: tune on half of the songs, report on the other half.

    python bench/calibrate_rule.py [AUDIO_DIR] [--workdir DIR] [--clips 2]

Every song of AUDIO_DIR is fingerprinted (default configuration).  From each song,
``--clips`` random clips of 1, 2 and 5 s are degraded (clean, mic, pink0, sr16000, as
in ``dejavu-eval``) and looked up once; the per-song alignment scores are kept.  Each
query is used twice: as a positive (is the right song first, and does the rule accept
it?) and as a negative, with the right song taken out of the results, which is exactly
what the query would see if that song were not in the database.  Negatives whose best
song shares recorded material with the query's song (``--related``; this corpus has a
few, found from the false positives this script lists) are left out.

Rules of the form ``score ≥ min_aligned and score ≥ margin_ratio × chance + min_margin``
are searched on the even-numbered songs (at most 0.2 % false positives); ``chance`` is
either the next song's score or the mean of the next ``chance_songs`` scores.  The best
rule of each kind and the configured default are then reported on the odd-numbered songs.
``min_aligned_share`` is left out of the search (0 there): at 0.004 it only binds beyond
about 5 s of query; the default line applies the configured rule as it is.  Lookup and
rule are the library's (``search.rank_songs``, ``matching.accepts``), so a change to
either is what this script measures.
"""
from __future__ import annotations

import argparse
import glob
import itertools
import os
import pickle
import sys
from dataclasses import replace

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from _machine import machine  # noqa: E402

from dejavu import Dejavu  # noqa: E402
from dejavu.config import MatchingConfig  # noqa: E402
from dejavu.evaluation import degrade  # noqa: E402
from dejavu.logic import decoder, search  # noqa: E402
from dejavu.logic.fingerprint import fingerprint  # noqa: E402
from dejavu.logic.matching import accepts  # noqa: E402
from dejavu.logic.resample import resample  # noqa: E402

CONDITIONS = ("clean", "mic", "pink0", "sr16000")
LENGTHS = (1, 2, 5)
KEEP = 12  # best songs kept per query
RELATED = ("MarineBacktheAttack:MarineUrbanWarfare", "transience:van_geoscape", "van_mission:van_theme")


def collect(files: list[str], workdir: str, clips: int) -> tuple[list[dict], dict[int, str]]:
    """Queries of every song (the ``KEEP`` best songs, their scores, the query's hash
    count), cached in ``workdir``."""
    cache = os.path.join(workdir, "queries-v2.pkl")
    djv = Dejavu({"database": {"path": os.path.join(workdir, "calibrate.db")}})
    djv.fingerprint_files(files, None)
    names = {s["song_id"]: s["song_name"] for s in djv.songs}
    if os.path.exists(cache):
        return pickle.load(open(cache, "rb")), names
    ids = {v: k for k, v in names.items()}
    rng, sr, queries = np.random.default_rng(7), 22050, []
    fp = djv.cfg.fingerprint
    for path in files:
        x = decoder.decode(path, sr)
        truth = ids[decoder.get_audio_name_from_path(path)]
        for length, _ in itertools.product(LENGTHS, range(clips)):
            start = float(rng.uniform(5, max(6, x.size / sr - length - 5)))
            clip = x[int(start * sr): int((start + length) * sr)]
            for cond in CONDITIONS:
                y, rate = degrade.CONDITIONS[cond](clip, sr, np.random.default_rng(int(start * 1000)))
                h, o = fingerprint(resample(y, rate, fp.sample_rate), fp, query=True)
                songs, best = search.rank_songs(djv.db, djv.cfg, h, o)
                queries.append(dict(song=truth, length=length, cond=cond, songs=songs[:KEEP], best=best[:KEEP],
                                    hashes=h.size))
        print(f"{len(queries)} queries ({os.path.basename(path)})", file=sys.stderr)
    pickle.dump(queries, open(cache, "wb"))
    return queries, names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("audio_dir", nargs="?", default=os.path.expanduser("~/.cache/dejavu-dev-corpus/mp3"))
    parser.add_argument("--workdir", default="calibration", help="database and query cache (reused)")
    parser.add_argument("--clips", type=int, default=2, help="clips per song and length")
    parser.add_argument("--related", nargs="*", default=list(RELATED), metavar="A:B",
                        help="song pairs that share recorded material (not counted as false positives)")
    args = parser.parse_args()
    files = sorted(glob.glob(os.path.join(args.audio_dir, "*.mp3")))
    if not files:
        sys.exit(f"no MP3 files in {args.audio_dir}; get the corpus with ../shared/tools/get-dev-corpus.sh DEST")
    os.makedirs(args.workdir, exist_ok=True)
    queries, names = collect(files, args.workdir, args.clips)
    ids = {v: k for k, v in names.items()}
    related = {frozenset(ids[n] for n in pair.split(":")) for pair in args.related
               if all(n in ids for n in pair.split(":"))}

    # Scores of the best KEEP songs as positives, and without the true song as negatives.
    pos, neg = np.zeros((len(queries), KEEP + 1)), np.zeros((len(queries), KEEP + 1))
    correct, neg_ok = np.zeros(len(queries), bool), np.ones(len(queries), bool)
    for i, q in enumerate(queries):
        pos[i, : q["best"].size] = q["best"]
        others = q["songs"] != q["song"]
        neg[i, : others.sum()] = q["best"][others]
        correct[i] = q["songs"].size > 0 and q["songs"][0] == q["song"]
        if others.any():
            neg_ok[i] = frozenset((q["song"], int(q["songs"][others][0]))) not in related
    song = np.array([q["song"] for q in queries])
    hashes = np.array([q["hashes"] for q in queries])
    cond = np.array([q["cond"] for q in queries])
    length = np.array([q["length"] for q in queries])
    tune = song % 2 == 0

    cfg = Dejavu({"database": {"path": os.path.join(args.workdir, "calibrate.db")}}).cfg.matching

    def searched(a: int, b: float, c: int, m: int) -> MatchingConfig:
        return replace(cfg, min_aligned=a, margin_ratio=b, min_margin=c, chance_songs=m, min_aligned_share=0.0)

    def recall(acc: np.ndarray, half: np.ndarray) -> dict[str, float]:
        return {f"{c}{n}": float((acc & correct)[half & (cond == c) & (length == n)].mean())
                for c in CONDITIONS for n in LENGTHS}

    def line(label: str, rule: MatchingConfig, half: np.ndarray) -> None:
        fp = accepts(neg, hashes, rule)[half & neg_ok]
        cells = " ".join(f"{k}:{v:.2f}" for k, v in recall(accepts(pos, hashes, rule), half).items())
        print(f"{label:44s} FP {fp.sum():2d}/{fp.size} {cells}")

    print(f"machine: {machine()}")
    print(f"{len(files)} songs, {len(queries)} queries; tune = even song ids, report = odd")
    default = (cfg.min_aligned, cfg.margin_ratio, cfg.min_margin, cfg.chance_songs, cfg.min_aligned_share)
    line(f"default {default} report", cfg, ~tune)
    line("old rule (12, 2.0, 2, next song) report", searched(12, 2.0, 2, 1), ~tune)
    for m in (1, 3, 5):
        best = None
        for a, b, c in itertools.product((8, 10, 12), (1.2, 1.4, 1.6, 1.8, 2.0, 2.5), (0, 1, 2, 3, 4, 6)):
            if accepts(neg, hashes, searched(a, b, c, m))[tune & neg_ok].mean() > 0.002:
                continue
            total = sum(recall(accepts(pos, hashes, searched(a, b, c, m)), tune).values())
            if best is None or total > best[0]:
                best = (total, (a, b, c, m))
        line(f"best on tune {best[1]} tune", searched(*best[1]), tune)
        line(f"best on tune {best[1]} report", searched(*best[1]), ~tune)
    top1 = {k: f"{v:.2f}" for k, v in recall(np.ones(len(queries), bool), ~tune).items()}
    print("right song first, no rule (report):", " ".join(f"{k}:{v}" for k, v in top1.items()))
    fps = accepts(neg, hashes, cfg) & ~neg_ok
    for i in np.flatnonzero(fps):
        q = queries[i]
        print(f"related pair left out: {names[q['song']]} -> {names[int(q['songs'][q['songs'] != q['song']][0])]}")


if __name__ == "__main__":
    main()
