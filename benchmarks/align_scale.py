"""Alignment suggestions on big traces: sketch-and-window content matching vs comparing all pairs.

Builds two traces of N stages per side (default 10,000) where no name is shared: a quarter of the
candidate stages are exact copies of reference stages, a quarter scaled copies (unit changes),
a quarter transposed copies, and a quarter unrelated; shapes are drawn from a handful of common
sizes so that many stages share a shape (the hard case for content matching). Then, in one run:

* ``suggest_alignment`` on all N stages per side (the time the note quotes), with recall
  (planted pairs found) and precision (suggested pairs that are planted);
* on a subset of ``--subset`` stages per side, ours again and the baseline: every reference
  stage against every candidate stage of the same size (``np.allclose`` after a least-squares
  factor, transposes tried), i.e. what a user writing the obvious loop would do. The ratio is
  measured on that subset; the baseline is quadratic, so it is not run at N.

    python benchmarks/align_scale.py [--stages 10000] [--subset 1000] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

import parity  # noqa: E402
from parity.compare.suggest import suggest_alignment  # noqa: E402

SHAPES = [(8,), (16,), (4, 8), (8, 4), (3, 5), (32,), (6, 6)]


def build(root: str, n: int, seed: int = 0) -> tuple[str, str, dict[str, str]]:
    rng = np.random.default_rng(seed)
    ref_path, cand_path = os.path.join(root, "ref.trace"), os.path.join(root, "cand.trace")
    planted: dict[str, str] = {}
    ref_vals = []
    with parity.record(ref_path):
        for i in range(n):
            x = rng.normal(size=SHAPES[i % len(SHAPES)])
            ref_vals.append(x)
            parity.tap(f"ref_stage_{i}", x)
    order = rng.permutation(n)
    with parity.record(cand_path):
        for k, i in enumerate(order):
            x = ref_vals[i]
            kind = k % 4
            if kind == 0:
                y = x + rng.normal(size=x.shape) * 1e-9
            elif kind == 1:
                y = x * 1e-3
            elif kind == 2:
                y = x.T.copy() if x.ndim == 2 else x * -2.0
            else:
                y = rng.normal(size=x.shape)
            key = f"cand_{k:05d}"
            parity.tap(key, y)
            if kind != 3:
                planted[f"ref_stage_{i}"] = key
    return ref_path, cand_path, planted


def baseline(ref: parity.Trace, cand: parity.Trace) -> dict[str, str]:
    """All pairs of the same size: least-squares factor, allclose, transposes for 2-D stages."""
    found: dict[str, str] = {}
    cands = [(s.key, np.asarray(cand[s.key], dtype=np.float64)) for s in cand]
    for s in ref:
        x = np.asarray(ref[s.key], dtype=np.float64)
        for ck, y in cands:
            if y.size != x.size:
                continue
            for xx in ([x, x.T] if x.ndim == 2 else [x]):
                if xx.shape != y.shape:
                    continue
                c = float(np.dot(xx.ravel(), y.ravel()) / np.dot(xx.ravel(), xx.ravel()))
                if np.allclose(xx * c, y, rtol=1e-3, atol=1e-12):
                    found.setdefault(s.key, ck)
    return found


def score(got: dict[str, str], planted: dict[str, str]) -> tuple[float, float]:
    hits = sum(planted.get(r) == c for r, c in got.items())
    return hits / max(len(planted), 1), hits / max(len(got), 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stages", type=int, default=10_000)
    ap.add_argument("--subset", type=int, default=1_000)
    ap.add_argument("--dir", default=None)
    args = ap.parse_args()
    root = tempfile.mkdtemp(dir=args.dir)
    try:
        ref, cand, planted = build(os.path.join(root, "big"), args.stages)
        rt, ct = parity.load_trace(ref), parity.load_trace(cand)
        t0 = time.perf_counter()
        got = {s.ref_key: s.cand_key for s in suggest_alignment(rt, ct) if "content" in s.by}
        t_big = time.perf_counter() - t0
        recall, precision = score(got, planted)
        print(f"{args.stages} stages per side: suggest_alignment {t_big:.2f} s, "
              f"recall {recall:.3f} ({len(planted)} planted pairs), precision {precision:.3f}")

        sref, scand, splanted = build(os.path.join(root, "small"), args.subset, seed=1)
        srt, sct = parity.load_trace(sref), parity.load_trace(scand)
        t0 = time.perf_counter()
        ours = {s.ref_key: s.cand_key for s in suggest_alignment(srt, sct) if "content" in s.by}
        t_ours = time.perf_counter() - t0
        t0 = time.perf_counter()
        base = baseline(srt, sct)
        t_base = time.perf_counter() - t0
        r_o, p_o = score(ours, splanted)
        r_b, p_b = score(base, splanted)
        print(f"{args.subset} stages per side: ours {t_ours:.2f} s (recall {r_o:.3f}, precision {p_o:.3f}), "
              f"all pairs {t_base:.2f} s (recall {r_b:.3f}, precision {p_b:.3f}); speed-up {t_base / t_ours:.1f}x")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
