"""Calibrate the no-match rule: tune on half of the songs, report on the other half.

    python bench/calibrate_rule.py [AUDIO_DIR] [--workdir DIR] [--clips 2] [--database DB ...]

Every song of AUDIO_DIR is fingerprinted (default configuration) into WORKDIR/calibrate.db;
each ``--database`` names another SQLite store that holds the same songs under their file
names plus others (e.g. the catalogues of 1,000-100,000 songs ``recognition_latency.py
--keep`` builds, whose synthetic songs' keys follow the real ones' distribution): the
queries are then judged in each store, and a rule must keep its false positives low in all.  From each song,
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
rule are the library's (``search.rank_songs``: the rows recognition reads, under the row
budget; ``matching.accepts``), so a change to either is what this script measures.  Songs
are split into halves by a hash of their name, the same in every store and run.
"""
from __future__ import annotations

import argparse
import glob
import itertools
import os
import pickle
import sys
import zlib
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


def collect(files: list[str], db_path: str, cache: str, clips: int, matching: dict) -> list[dict]:
    """Queries of every song, judged in the store ``db_path``: the query's song (name), the
    ``KEEP`` best songs (names) and their scores, the query's hash count; cached in ``cache``.
    ``matching``: settings of the configuration's ``matching`` section (e.g. ``row_budget``)."""
    djv = Dejavu({"database": {"path": db_path}, "matching": matching})
    if os.path.exists(cache):
        return pickle.load(open(cache, "rb"))
    names = {s["song_id"]: s["song_name"] for s in djv.songs}
    missing = {decoder.get_audio_name_from_path(p) for p in files} - set(names.values())
    if missing:
        sys.exit(f"{db_path} lacks {len(missing)} of the songs, e.g. {sorted(missing)[0]!r}")
    rng, sr, queries = np.random.default_rng(7), 22050, []
    fp = djv.cfg.fingerprint
    for path in files:
        x = decoder.decode(path, sr)
        for length, _ in itertools.product(LENGTHS, range(clips)):
            start = float(rng.uniform(5, max(6, x.size / sr - length - 5)))
            clip = x[int(start * sr): int((start + length) * sr)]
            for cond in CONDITIONS:
                y, rate = degrade.CONDITIONS[cond](clip, sr, np.random.default_rng(int(start * 1000)))
                y = resample(y, rate, fp.sample_rate)
                h, o = fingerprint(y, fp, query=True)
                songs, best = search.rank_songs(djv.db, djv.cfg, h, o, fingerprint(y, fp))
                queries.append(dict(song=decoder.get_audio_name_from_path(path), length=length, cond=cond,
                                    songs=np.array([names[i] for i in songs[:KEEP]], dtype=object),
                                    best=best[:KEEP], hashes=h.size))
        print(f"{os.path.basename(db_path)}: {len(queries)} queries ({os.path.basename(path)})", file=sys.stderr)
    pickle.dump(queries, open(cache, "wb"))
    return queries


class Judged:
    """One store's queries as arrays: scores as positives and as negatives (true song left out)."""

    def __init__(self, queries: list[dict], related: set[frozenset[str]]) -> None:
        n = len(queries)
        self.pos, self.neg = np.zeros((n, KEEP + 1)), np.zeros((n, KEEP + 1))
        self.correct, self.neg_ok = np.zeros(n, bool), np.ones(n, bool)
        for i, q in enumerate(queries):
            self.pos[i, : q["best"].size] = q["best"]
            others = q["songs"] != q["song"]
            self.neg[i, : others.sum()] = q["best"][others]
            self.correct[i] = q["songs"].size > 0 and q["songs"][0] == q["song"]
            if others.any():
                self.neg_ok[i] = frozenset((q["song"], q["songs"][others][0])) not in related
        self.hashes = np.array([q["hashes"] for q in queries])
        self.cond = np.array([q["cond"] for q in queries])
        self.length = np.array([q["length"] for q in queries])
        self.tune = np.array([zlib.crc32(q["song"].encode()) % 2 == 0 for q in queries])
        self.queries = queries

    def false_positives(self, rule: MatchingConfig, half: np.ndarray) -> np.ndarray:
        return accepts(self.neg, self.hashes, rule)[half & self.neg_ok]

    def recall(self, rule: MatchingConfig | None, half: np.ndarray) -> dict[str, float]:
        """Share of right answers per condition and length (``rule`` None: right song first)."""
        ok = self.correct if rule is None else accepts(self.pos, self.hashes, rule) & self.correct
        return {f"{c}{n}": float(ok[half & (self.cond == c) & (self.length == n)].mean())
                for c in CONDITIONS for n in LENGTHS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("audio_dir", nargs="?", default=os.path.expanduser("~/.cache/dejavu-dev-corpus/mp3"))
    parser.add_argument("--workdir", default="calibration", help="database and query cache (reused)")
    parser.add_argument("--clips", type=int, default=2, help="clips per song and length")
    parser.add_argument("--database", nargs="*", default=[], metavar="DB",
                        help="other SQLite stores holding the songs (and more) to judge the queries in")
    parser.add_argument("--row-budget", type=int, default=None, help="matching.row_budget of the lookups")
    parser.add_argument("--related", nargs="*", default=list(RELATED), metavar="A:B",
                        help="song pairs that share recorded material (not counted as false positives)")
    args = parser.parse_args()
    files = sorted(glob.glob(os.path.join(args.audio_dir, "*.mp3")))
    if not files:
        sys.exit(f"no MP3 files in {args.audio_dir}; get the corpus with ../shared/tools/get-dev-corpus.sh DEST")
    os.makedirs(args.workdir, exist_ok=True)
    own = os.path.join(args.workdir, "calibrate.db")
    Dejavu({"database": {"path": own}}).fingerprint_files(files, None)
    related = {frozenset(pair.split(":")) for pair in args.related}
    stores = {}
    for db in [own, *args.database]:
        matching = {} if args.row_budget is None else {"row_budget": args.row_budget}
        cache = os.path.join(args.workdir, f"queries-v3-{os.path.basename(db)}-{args.clips}-{args.row_budget}.pkl")
        stores[os.path.basename(db)] = Judged(collect(files, db, cache, args.clips, matching), related)
    cfg = Dejavu({"database": {"path": own}}).cfg.matching

    def searched(a: int, b: float, c: int, m: int) -> MatchingConfig:
        return replace(cfg, min_aligned=a, margin_ratio=b, min_margin=c, chance_songs=m, min_aligned_share=0.0)

    def line(label: str, rule: MatchingConfig, tune: bool) -> None:
        for name, judged in stores.items():
            half = judged.tune if tune else ~judged.tune
            fp = judged.false_positives(rule, half)
            cells = " ".join(f"{k}:{v:.2f}" for k, v in judged.recall(rule, half).items())
            print(f"{label:40s} {name[:16]:16s} FP {fp.sum():2d}/{fp.size} {cells}")

    print(f"machine: {machine()}")
    print(f"{len(files)} songs, {len(next(iter(stores.values())).queries)} queries per store; "
          "halves by a hash of the song name")
    default = (cfg.min_aligned, cfg.margin_ratio, cfg.min_margin, cfg.chance_songs, cfg.min_aligned_share)
    line(f"default {default} report", cfg, False)
    for m in (1, 3, 5, 8):
        best = None
        for a, b, c in itertools.product((5, 6, 8, 10, 12), (1.2, 1.4, 1.6, 1.8, 2.0, 2.5, 3.0), (0, 1, 2, 3, 4, 6)):
            rule = searched(a, b, c, m)
            if any(j.false_positives(rule, j.tune).mean() > 0.002 for j in stores.values()):
                continue
            total = sum(sum(j.recall(rule, j.tune).values()) for j in stores.values())
            if best is None or total > best[0]:
                best = (total, (a, b, c, m))
        if best is None:
            print(f"chance_songs {m}: no rule of the grid keeps false positives at 0.2 % on the tune half")
            continue
        line(f"best on tune {best[1]} tune", searched(*best[1]), True)
        line(f"best on tune {best[1]} report", searched(*best[1]), False)
    for name, judged in stores.items():
        top1 = judged.recall(None, ~judged.tune)
        print(f"right song first, no rule (report) {name}:", " ".join(f"{k}:{v:.2f}" for k, v in top1.items()))
        for i in np.flatnonzero(accepts(judged.neg, judged.hashes, cfg) & ~judged.neg_ok):
            q = judged.queries[i]
            print(f"related pair left out: {q['song']} -> {q['songs'][q['songs'] != q['song']][0]}")


if __name__ == "__main__":
    main()
