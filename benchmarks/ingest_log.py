"""Ingestion speed of the trace-line importer on a generated log.

Generates a log (1 GB by default) of the kind a C or Fortran solver prints, then measures, in the
same run:

* baseline: a throwaway Python script's work on the same file: iterate the lines, keep those with
  the prefix, split and float() every value (no trace written);
* parity: ``parity.importers.lines.import_log`` end to end (parse, write the trace, close it);

and prints MB/s for both and their ratio (wall clock; CPU seconds too, as the machine may be
shared). Two mixes:

* ``solver`` (default, the realistic case): one block per solver iteration, each with a progress
  line, an indexed line of three scalars (``TRACE_C_ITER it=N energy=.. grad_norm=.. step=..``),
  vectors whose length is drawn per block (positions ``key=v ...`` and forces ``key: [a, b, ...]``
  of 3 to 300 values, charges ``key v ...``, short occupation vectors), a 3×3 matrix, named fields
  (``cell=a:.. b:.. c:..``), several ``key=value`` pairs on one line, a text value, numbers in
  ``%.17g``, ``%.6e`` and ``%g``, and every tenth block a banner and a warning;
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

_BLOCKS = 256  # distinct blocks in the pool (vector lengths vary between them)


def _vec(rng: np.random.Generator, n: int, scale: float = 1.0, fmt: str = "%.17g") -> list[str]:
    return [fmt % x for x in rng.normal(size=n) * scale]


def _solver_block(rng: np.random.Generator) -> str:
    """One solver iteration; "@IT@" stands for the iteration number."""
    natoms = int(rng.integers(1, 101))
    e, g, s = rng.normal(), abs(rng.normal()) * 1e-3, 0.01
    m = rng.normal(size=(3, 3))
    stress = "; ".join(" ".join("%.17g" % x for x in row) for row in m)
    lines = [
        f"iter @IT@: E={e:.6f} |g|={g:.3e} ({rng.uniform(5, 50):.1f} ms)",
        f"TRACE_C_ITER it=@IT@ energy={e!r} grad_norm={g!r} step={s!r}",
        "TRACE_C: positions=" + " ".join(_vec(rng, 3 * natoms)),
        "TRACE_C: forces: [" + ", ".join(_vec(rng, 3 * natoms, 1e-3)) + "]",
        "TRACE_C: charges " + " ".join(_vec(rng, natoms, 0.1, "%.6e")),
        "TRACE_C: occupations=[" + " ".join(_vec(rng, int(rng.integers(1, 33)), 1.0, "%g")) + "]",
        f"TRACE_C: stress=[{stress}]",
        f"TRACE_C: cell=a:{3.5 + e * 1e-3!r} b:{4.25!r} c:{9.0!r}",
        f"TRACE_C: e_kin={abs(rng.normal())!r} e_pot={rng.normal()!r} temp={300 + rng.normal():.6e}",
        "TRACE_C: status=" + ("converged" if rng.random() < 0.1 else "running"),
    ]
    return "\n".join(lines) + "\n"


def _scalar_block(rng: np.random.Generator) -> str:
    names = ("energy", "kinetic", "potential", "temperature", "pressure", "volume", "density", "enthalpy")
    return "".join(f"TRACE_C: {n}=%.17g\n" % v for n, v in zip(names, rng.normal(size=len(names))))


def generate(path: str, size_mb: float, mix: str) -> int:
    """Write a log of about ``size_mb`` MB; returns its size in bytes."""
    rng = np.random.default_rng(0)
    block = _solver_block if mix == "solver" else _scalar_block
    pool = [block(rng) for _ in range(_BLOCKS)]
    target = int(size_mb * 1e6)
    written, it = 0, 0
    with open(path, "w") as f:
        while written < target:
            text = pool[it % len(pool)]
            if mix == "solver":  # the indexed lines stay distinct per iteration
                text = text.replace("@IT@", str(it))
                if it % 10 == 0:
                    text = (f"==== checkpoint {it}: state written to run_{it:06d}.chk ====\n" + text
                            + "WARNING: step size reduced to 0.005 (line search)\n")
            elif it % 10 == 0:
                text = f"step {it} done\n" + text
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


def _timed(fn, *args, **kwargs):
    t0, c0 = time.perf_counter(), time.process_time()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - t0, time.process_time() - c0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=float, default=1024.0)
    ap.add_argument("--mix", choices=("solver", "scalars"), default="solver")
    ap.add_argument("--keep", help="generate the log and the trace in this directory and keep them")
    args = ap.parse_args(argv)

    from parity.importers.lines import accelerated, import_log

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
        with open(log, "rb") as f:  # both runs read the log from the page cache
            while f.read(64 << 20):
                pass

        values, t_base, c_base = _timed(baseline, log)
        out = os.path.join(work, f"{args.mix}.trace")
        stats, t_parity, c_parity = _timed(import_log, out=out, source=log, prefixes="TRACE_C")

        print(f"log: {mb:.0f} MB ({args.mix} mix), {stats.lines} lines ({stats.trace_lines} trace lines, "
              f"{stats.skipped} skipped), {stats.fields} stages ({size / max(stats.fields, 1):.0f} bytes each), "
              f"{values} values; C number scanner: {'yes' if accelerated() else 'no (pure Python)'}")
        print(f"baseline (line iteration + float parsing, no trace written): {t_base:7.2f} s  {mb / t_base:7.1f} MB/s"
              f"  (CPU {c_base:6.2f} s)")
        print(f"parity import_log (parse + write the trace):                {t_parity:7.2f} s  {mb / t_parity:7.1f} MB/s"
              f"  (CPU {c_parity:6.2f} s, {mb / c_parity:.1f} MB per CPU second)")
        print(f"ratio parity / baseline speed: {t_base / t_parity:.2f}x")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
