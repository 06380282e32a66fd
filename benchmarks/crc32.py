"""Throughput of parity.trace._stage CRC-32 and fused copy + CRC-32 against zlib, sha256 and memcpy.

On the same buffer of random bytes (``--mib``, default 256 MiB: main memory) and on a small one
(``--small-mib``, default 8 MiB: cache-resident on most servers), times in interleaved rounds and
keeps the best time of each:

* ``_stage.crc32(a)``            -- the checksum the trace writer will use (equals zlib.crc32);
* ``zlib.crc32(a)``              -- what users verify with (stdlib);
* ``hashlib.sha256(a)``          -- the checksum it replaces;
* ``np.copyto(b, a)``            -- a plain memcpy into a preallocated array;
* ``_stage.copy_crc32(b, a)``    -- copy into the preallocated array and CRC in one pass, with
                                    ``threads=1`` and ``threads=2``;

then prints GB/s (of ``a``'s bytes, 1 GB = 1e9 bytes) and the ratios crc32 / zlib and
copy_crc32 / np.copyto.  The goals: crc32 >= 15 GB/s single-threaded on the large buffer, and
copy_crc32 as fast as np.copyto.

Run (after ``python setup.py build_ext --inplace``):
    python benchmarks/crc32.py [--mib 256] [--small-mib 8] [--repeat 7] [--impl table|pclmul|vpclmul]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
import zlib

import numpy as np

from parity.trace import _stage


def random_bytes(nbytes: int, seed: int) -> np.ndarray:
    words = np.random.default_rng(seed).integers(0, 2**63, (nbytes + 7) // 8, dtype=np.int64)
    return words.view(np.uint8)[:nbytes]


def measure(nbytes: int, repeat: int) -> None:
    a = random_bytes(nbytes, 0)
    b = np.empty_like(a)
    b.fill(1)  # fault the pages in before timing
    cases = [
        ("_stage.crc32", lambda: _stage.crc32(a)),
        ("zlib.crc32", lambda: zlib.crc32(a)),
        ("hashlib.sha256", lambda: hashlib.sha256(a).digest()),
        ("np.copyto", lambda: np.copyto(b, a)),
        ("copy_crc32 threads=1", lambda: _stage.copy_crc32(b, a, threads=1)),
        ("copy_crc32 threads=2", lambda: _stage.copy_crc32(b, a, threads=2)),
    ]
    # correctness first
    expected = zlib.crc32(a)
    assert _stage.crc32(a) == expected
    for threads in (1, 2):
        b.fill(0)
        assert _stage.copy_crc32(b, a, threads=threads) == expected and np.array_equal(a, b)
    # rounds interleave the cases, so that a busy machine slows them alike; the best time is kept
    best = {name: float("inf") for name, _ in cases}
    for _ in range(repeat):
        for name, fn in cases:
            t = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t)
    rate = {name: nbytes / best[name] / 1e9 for name in best}
    print(f"\n{nbytes / 2**20:g} MiB (best of {repeat})")
    print(f"  {'':<22} {'best ms':>9}  {'GB/s':>7}")
    for name, _ in cases:
        print(f"  {name:<22} {best[name] * 1e3:9.2f}  {rate[name]:7.2f}")
    copyto = rate["np.copyto"]
    print(f"  ratio _stage.crc32 / zlib.crc32        {rate['_stage.crc32'] / rate['zlib.crc32']:6.2f}x")
    print(f"  ratio _stage.crc32 / hashlib.sha256    {rate['_stage.crc32'] / rate['hashlib.sha256']:6.2f}x")
    print(f"  ratio copy_crc32 threads=1 / np.copyto {rate['copy_crc32 threads=1'] / copyto:6.2f}x")
    print(f"  ratio copy_crc32 threads=2 / np.copyto {rate['copy_crc32 threads=2'] / copyto:6.2f}x")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mib", type=float, default=256, help="large buffer, MiB (default 256)")
    p.add_argument("--small-mib", type=float, default=8, help="cache-resident buffer, MiB (default 8; 0 skips)")
    p.add_argument("--repeat", type=int, default=7, help="timed rounds; the best time of each case is kept")
    p.add_argument("--impl", choices=["table", "pclmul", "vpclmul"], help="force a code path (default: the best)")
    args = p.parse_args(argv)
    if args.impl:
        _stage._set_implementation(args.impl)
    print(f"parity.trace._stage implementation: {_stage.implementation()}; cpus {os.cpu_count()}; "
          f"PARITY_CRC_PORTABLE={os.environ.get('PARITY_CRC_PORTABLE', '')!r}")
    for mib in (args.mib, args.small_mib):
        if mib > 0:
            measure(int(mib * 2**20), args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
