"""Throughput of parity.compare.metrics.compute_metrics against the machine's memory read rate.

Builds two float32 arrays of ``--gb`` GB each (in RAM, or as np.memmap files with ``--memmap``),
then times, on the same pair:

* ``np.dot(a, b)``                 -- the "two-array memory read rate" (BLAS, all cores);
* ``np.allclose(b, a, rtol, atol)`` -- what a naive comparison costs;
* ``compute_metrics(a, b)``        -- with the C kernel and with the NumPy backend.

Throughput counts the bytes of both inputs. The product goal is C-kernel / dot >= 0.5.

Run: ``python benchmarks/metrics_kernel.py [--gb 1] [--repeat 3] [--memmap] [--threads N] [--skip-numpy]``
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

from parity.compare.metrics import compute_metrics, kernel_available, kernel_simd

RTOL, ATOL = 1e-5, 1e-5


def make_pair(n: int, memmap_dir: str | None) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    if memmap_dir is None:
        a = np.empty(n, np.float32)
        b = np.empty(n, np.float32)
    else:
        a = np.memmap(os.path.join(memmap_dir, "ref.f32"), np.float32, "w+", shape=(n,))
        b = np.memmap(os.path.join(memmap_dir, "cand.f32"), np.float32, "w+", shape=(n,))
    step = 1 << 24
    for s in range(0, n, step):
        e = min(s + step, n)
        a[s:e] = rng.standard_normal(e - s, dtype=np.float32)
        b[s:e] = a[s:e] + rng.standard_normal(e - s, dtype=np.float32) * np.float32(1e-5)
    if memmap_dir is not None:
        a.flush()
        b.flush()
        a = np.memmap(a.filename, np.float32, "r", shape=(n,))
        b = np.memmap(b.filename, np.float32, "r", shape=(n,))
    return a, b


def machine_busy_jiffies() -> int | None:
    """CPU time (jiffies) spent by the whole machine, from /proc/stat (Linux); None elsewhere."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return None
    return sum(v) - v[3] - v[4]  # all but idle and iowait


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gb", type=float, default=1.0, help="size of EACH float32 input in GB (default 1)")
    p.add_argument("--repeat", type=int, default=5, help="timed rounds; the best time of each case is kept")
    p.add_argument("--memmap", action="store_true", help="read the inputs from np.memmap files (page cache)")
    p.add_argument("--threads", type=int, default=None, help="compute_metrics threads (default min(2, cpus))")
    p.add_argument("--skip-numpy", action="store_true", help="do not time the (slow) NumPy backend")
    args = p.parse_args(argv)

    n = int(args.gb * 1e9) // 4
    nbytes = 2 * n * 4
    with tempfile.TemporaryDirectory(prefix="parity-bench-") as tmp:
        a, b = make_pair(n, tmp if args.memmap else None)
        print(f"inputs: 2 x {n:,} float32 ({nbytes / 1e9:.2f} GB in total, {'memmap' if args.memmap else 'RAM'}); "
              f"cpus {os.cpu_count()}; C kernel: {kernel_simd() if kernel_available() else 'not built'}")
        cases = [("np.dot(a, b)", lambda: np.dot(a, b)),
                 ("np.allclose(b, a)", lambda: np.allclose(b, a, rtol=RTOL, atol=ATOL))]
        if kernel_available():
            cases.append(("compute_metrics [c]",
                          lambda: compute_metrics(a, b, rtol=RTOL, atol=ATOL, backend="c", threads=args.threads)))
            cases.append(("compute_metrics [c, 1 thread]",
                          lambda: compute_metrics(a, b, rtol=RTOL, atol=ATOL, backend="c", threads=1)))
        if not args.skip_numpy:
            cases.append(("compute_metrics [numpy]",
                          lambda: compute_metrics(a, b, rtol=RTOL, atol=ATOL, backend="numpy", threads=args.threads)))
        # rounds interleave the cases, so that a busy machine slows them alike; the best time is kept
        best = {name: float("inf") for name, _ in cases}
        for _, fn in cases:
            fn()  # warm up (page cache, thread pools)
        others = {name: 0.0 for name, _ in cases}  # cores used by other processes in the best run
        hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        for _ in range(args.repeat):
            for name, fn in cases:
                j0, c0 = machine_busy_jiffies(), time.process_time()
                t = time.perf_counter()
                fn()
                dt = time.perf_counter() - t
                j1, c1 = machine_busy_jiffies(), time.process_time()
                if dt < best[name]:
                    best[name] = dt
                    if j0 is not None:
                        others[name] = max(0.0, ((j1 - j0) / hz - (c1 - c0)) / dt)
        dot = nbytes / best["np.dot(a, b)"] / 1e9
        print(f"  {'':<30} {'best ms':>9}  {'GB/s':>7}  {'vs dot':>6}")
        for name, _ in cases:
            rate = nbytes / best[name] / 1e9
            busy = f"   (other processes used ~{others[name]:.1f} cores)" if others[name] >= 0.3 else ""
            print(f"  {name:<30} {best[name] * 1e3:9.1f}  {rate:7.2f}  {rate / dot:5.2f}x{busy}")
        m = compute_metrics(a, b, rtol=RTOL, atol=ATOL)
        print(f"(check: {m.mismatched:,} of {m.count:,} outside tolerance, max abs {m.max_abs_err:.3g}, "
              f"max ulp {m.max_ulp:.0f}, cosine {m.cosine:.9f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
