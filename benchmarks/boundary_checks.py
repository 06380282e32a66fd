"""What the hostile-input boundary checks cost: import and diff time, hardened vs before, one run.

The baseline is parity as it was before the checks (``--baseline``, a git revision, default the
last commit before them), unpacked with ``git archive`` into a temporary folder and built there
(C extensions included), so both sides run the same workload with the same accelerators. Each
measurement runs in a fresh interpreter with ``PYTHONPATH`` pointing at one side's ``src/``; the
two sides alternate, and the best of ``--repeats`` runs is kept for each (the machine may be
shared). Workloads, generated once and shared:

* ``log import``: a trace-line log of ``--log-mb`` MB in the realistic solver mix of
  ``ingest_log.py`` (C scanner path, one stage per ~100 bytes);
* ``npz import``: an .npz of 400 members of 16 K float32 each (stored) and a compressed one;
* ``dump import``: an APRT dump of 400 tensors of 4 K float32 under ``layer-N/`` folders;
* ``diff``: ``compare_traces`` of two traces of 3,000 small stages and 12 of 4 MiB each
  (manifest and header checks scale with stages, the metrics with bytes).

It prints each workload's time on both sides and the cost of the checks as a percentage; the goal
is under 2 %. Usage::

    python benchmarks/boundary_checks.py [--baseline 886f75e] [--repeats 5] [--inner 3] [--log-mb 64]

Each interpreter runs the workload ``--inner`` times and keeps its best (warm caches); the sides
alternate which runs first. On a shared 2-core VM, single runs still vary by about ±10 %.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEFAULT_BASELINE = "886f75e"  # main before issue 15's boundary checks

_IMPORT = """
import time, shutil
from parity.importers import import_files
best = 1e9
for _ in range({{inner}}):
    shutil.rmtree({{out!r}}, ignore_errors=True)
    t = time.perf_counter()
    import_files([{{{src}!r}}], {{out!r}}{extra})
    best = min(best, time.perf_counter() - t)
print(best)
"""

_SNIPPETS = {
    "log import": _IMPORT.format(src="log", extra=', prefixes=["TRACE_C"]'),
    "npz import": _IMPORT.format(src="npz", extra=""),
    "dump import": _IMPORT.format(src="dump", extra=""),
    "diff": """
import time
import parity
best = 1e9
for _ in range({inner}):
    t = time.perf_counter()
    r = parity.compare_traces({ref!r}, {cand!r}, rtol=1e-3, atol=1e-5)
    best = min(best, time.perf_counter() - t)
assert len(r.stages) > 3000
print(best)
""",
}


def build_baseline(revision: str, into: str) -> str:
    """Unpack ``revision`` of this repository into ``into`` and build its C extensions in place."""
    archive = subprocess.run(["git", "-C", ROOT, "archive", "--format=tar", revision],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", into], input=archive, check=True)
    subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=into, check=True,
                   capture_output=True)
    return os.path.join(into, "src")


def generate(directory: str, log_mb: float) -> dict[str, str]:
    sys.path.insert(0, HERE)
    import ingest_log  # the realistic solver-log generator

    import parity

    paths = {"log": os.path.join(directory, "solver.log"), "npz": os.path.join(directory, "many.npz"),
             "dump": os.path.join(directory, "dump"), "ref": os.path.join(directory, "ref.trace"),
             "cand": os.path.join(directory, "cand.trace")}
    ingest_log.generate(paths["log"], log_mb, "solver")
    rng = np.random.default_rng(0)
    members = {f"s{i:04d}": rng.normal(size=16384).astype(np.float32) for i in range(400)}
    np.savez(paths["npz"], **members)
    dump_src = os.path.join(directory, "dump-src.trace")
    with parity.record(dump_src):
        for i in range(400):
            with parity.scope("layers", i // 20):
                parity.tap(f"t{i % 20}", members[f"s{i:04d}"][:4096])
    from parity.importers import export_trace

    export_trace(dump_src, paths["dump"], "aprt")
    for name, noise in (("ref", 0.0), ("cand", 1e-7)):
        r = np.random.default_rng(1)
        with parity.record(paths[name]):
            for i in range(3000):
                parity.tap("small", r.normal(size=16) + noise, i=i)
            for i in range(12):
                parity.tap("big", r.normal(size=2**19) + noise, i=i)
    return paths


def time_once(src: str, workload: str, paths: dict[str, str], scratch: str, inner: int = 3) -> float:
    """Best of ``inner`` runs of ``workload`` in one fresh interpreter using parity from ``src``."""
    out = os.path.join(scratch, "out.trace")
    shutil.rmtree(out, ignore_errors=True)
    code = _SNIPPETS[workload].format(out=out, inner=inner, **paths)
    env = {**os.environ, "PYTHONPATH": src}
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=scratch)
    if res.returncode != 0:
        raise SystemExit(f"{workload} failed with {src}:\n{res.stderr}")
    shutil.rmtree(out, ignore_errors=True)
    return float(res.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", default=DEFAULT_BASELINE, help="git revision without the checks")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--log-mb", type=float, default=64.0)
    ap.add_argument("--inner", type=int, default=3, help="runs per interpreter (the best is kept)")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="parity-bench-checks-") as tmp:
        base_dir = os.path.join(tmp, "baseline")
        os.mkdir(base_dir)
        print(f"building the baseline ({args.baseline}) ...", flush=True)
        sides = {"baseline": build_baseline(args.baseline, base_dir), "hardened": os.path.join(ROOT, "src")}
        data = os.path.join(tmp, "data")
        os.mkdir(data)
        print("generating the workloads ...", flush=True)
        paths = generate(data, args.log_mb)
        scratch = os.path.join(tmp, "scratch")
        os.mkdir(scratch)
        print(f"\n{'workload':<12} {'baseline s':>11} {'hardened s':>11} {'cost':>8}")
        worst = -1e9
        for workload in _SNIPPETS:
            best = {side: float("inf") for side in sides}
            order = list(sides.items())
            for k in range(args.repeats):  # alternate which side runs first, so drift cancels
                for side, src in (order if k % 2 == 0 else order[::-1]):
                    best[side] = min(best[side], time_once(src, workload, paths, scratch, args.inner))
            cost = best["hardened"] / best["baseline"] - 1
            worst = max(worst, cost)
            print(f"{workload:<12} {best['baseline']:>11.3f} {best['hardened']:>11.3f} {cost:>+8.1%}", flush=True)
        print(f"\nworst cost of the boundary checks: {worst:+.1%} (goal: under +2%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
