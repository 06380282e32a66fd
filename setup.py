"""Build script for parity's optional C accelerators.

All project metadata lives in pyproject.toml; this file only declares the fused metrics kernel
``parity.compare._kernel`` (and, below, the trace-line import accelerators and the capture's CRC-32 /
staging-copy / file-writing module ``parity.trace._stage``, and the JSON report's writer
``parity.report._json``). Every one is optional: where no C compiler
is available the build carries on without them and each caller falls back to its NumPy or pure-Python
path, with identical results (slower).

``-ffp-contract=off`` keeps every multiply and add separately rounded (no FMA contraction), so the
kernel gives the same results as the NumPy path; never add ``-ffast-math`` (NaN tests are part of the
contract) or ``-march=native`` (the build may run on another machine; the kernel picks AVX2 at load
time where available).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "parity.compare._kernel",
            ["src/parity/compare/_kernel.c"],
            optional=True,
            extra_compile_args=["-O3", "-ffp-contract=off"],
        ),
        # Trace-line import: the line scanner and number parser (parity.importers.lines) and the
        # writer's batch entry renderer (parity.trace.writer). Optional too: without them both
        # modules take their pure-Python paths, with identical results.
        Extension("parity.importers._scan", ["src/parity/importers/_scan.c"], optional=True, extra_compile_args=["-O3"]),
        Extension("parity.trace._render", ["src/parity/trace/_render.c"], optional=True, extra_compile_args=["-O2"]),
        # CRC-32 (zlib polynomial) for trace checksums and the capture hook's fused copy + CRC; picks
        # PCLMULQDQ / VPCLMULQDQ at load time (no -march flag), a table path otherwise.
        Extension("parity.trace._stage", ["src/parity/trace/_stage.c"], optional=True, extra_compile_args=["-O3"]),
        # `parity diff --json`: each stage's indented JSON text, exactly as json.dumps writes it.
        Extension("parity.report._json", ["src/parity/report/_json.c"], optional=True, extra_compile_args=["-O2"]),
    ]
)
