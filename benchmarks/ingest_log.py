"""Ingestion speed of the trace-line importer on a generated log.

Generates a log (1 GB by default) of the kind a C solver prints, then measures, in the same run:

* baseline: a throwaway Python script's work on the same file: iterate the lines, keep those with
  the prefix, split and float() every value (no trace written);
* parity: ``parity.importers.lines.import_log`` end to end (parse, write the trace, close it).

and prints MB/s for both and their ratio. Two mixes:

* ``solver`` (default): per iteration, a progress line, an indexed line of three scalars, two
  192-value vectors (``key=v ...`` and ``key: [a, b, ...]``), a 3×3 matrix and named fields;
* ``scalars``: one ``TRACE_C: name=%.17g`` scalar per line (plus progress lines): the worst case,
  one stage per ~40 bytes.

Usage::

    python benchmarks/ingest_log.py [--size-mb 1024] [--mix solver|scalars] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

import numpy as np


def _solver_block(rng: np.random.Generator, it: int) -> str:
    pos = " ".join("%.17g" % x for x in rng.normal(size=192))
    forces = ", ".join("%.17g" % x for x in rng.normal(size=192) * 1e-3)
    m = rng.normal(size=(3, 3))
    stress = "; ".join(" ".join("%.17g" % x for x in row) for row in m)
    e, g, s = rng.normal(), abs(rng.normal()) * 1e-3, 0.01
    return (f"iter {it}: E={e:.6f} |g|={g:.3e} (12.5 ms)\n"
            f"TRACE_C_ITER it={it} energy={e!r} grad_norm={g!r} step={s!r}\n"
            f"TRACE_C: positions={pos}\n"
            f"TRACE_C: forces: [{forces}]\n"
            f"TRACE_C: stress=[{stress}]\n"
            f"TRACE_C: cell=a:{3.5 + e * 1e-3!r} b:{4.25!r} c:{9.0!r}\n")


def _scalar_block(rng: np.random.Generator, it: int) -> str:
    lines = [f"step {it} done\n"] if it % 10 == 0 else []
    names = ("energy", "kinetic", "potential", "temperature", "pressure", "volume", "density", "enthalpy")
    lines += [f"TRACE_C: {n}=%.17g\n" % v for n, v in zip(names, rng.normal(size=len(names)))]
    return "".join(lines)


def generate(path: str, size_mb: float, mix: str) -> int:
    """Write a log of about ``size_mb`` MB; returns its size in bytes."""
    rng = np.random.default_rng(0)
    block = _solver_block if mix == "solver" else _scalar_block
    pool = [block(rng, 0) for _ in range(64)]
    target = int(size_mb * 1e6)
    written, it = 0, 0
    with open(path, "w") as f:
        while written < target:
            text = pool[it % len(pool)]
            if mix == "solver":  # keep the indexed lines distinct per iteration
                text = text.replace("it=0 ", f"it={it} ", 1).replace("iter 0:", f"iter {it}:", 1)
            f.write(text)
            written += len(text)
            it += 1
    return os.path.getsize(path)


def baseline(path: str, prefix: bytes = b"TRACE_C") -> int:
    """A throwaway script: lines with the prefix, values split and float()-ed. Returns #values."""
    n = 0
    with open(path, "rb") as f:
        for line in f:
            if not line.startswith(prefix):
                continue
            body = line.split(b":", 1)[1] if line[len(prefix):len(prefix) + 1] == b":" else line.split(None, 1)[1]
            for field in body.replace(b"[", b" ").replace(b"]", b" ").replace(b",", b" ").replace(b";", b" ").split():
                value = field.split(b"=", 1)[-1].split(b":")[-1]
                try:
                    float(value)
                    n += 1
                except ValueError:
                    pass
    return n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=float, default=1024.0)
    ap.add_argument("--mix", choices=("solver", "scalars"), default="solver")
    ap.add_argument("--keep", help="generate the log and the trace in this directory and keep them")
    args = ap.parse_args(argv)

    from parity.importers.lines import import_log

    work = args.keep or tempfile.mkdtemp(prefix="parity-ingest-")
    os.makedirs(work, exist_ok=True)
    log = os.path.join(work, f"{args.mix}-{int(args.size_mb)}MB.log")
    try:
        if not os.path.exists(log):
            t0 = time.perf_counter()
            size = generate(log, args.size_mb, args.mix)
            print(f"generated {log}: {size / 1e6:.0f} MB in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        size = os.path.getsize(log)
        mb = size / 1e6

        t0 = time.perf_counter()
        values = baseline(log)
        t_base = time.perf_counter() - t0

        out = os.path.join(work, f"{args.mix}.trace")
        t0 = time.perf_counter()
        stats = import_log(log, out, prefixes="TRACE_C")
        t_parity = time.perf_counter() - t0

        print(f"log: {mb:.0f} MB, {stats.lines} lines ({stats.trace_lines} trace lines, {stats.skipped} skipped), "
              f"{stats.fields} stages, {values} values")
        print(f"baseline (line iteration + float parsing, no trace written): {t_base:7.2f} s  {mb / t_base:7.1f} MB/s")
        print(f"parity import_log (parse + write the trace):                {t_parity:7.2f} s  {mb / t_parity:7.1f} MB/s")
        print(f"ratio parity / baseline speed: {t_base / t_parity:.2f}x")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
