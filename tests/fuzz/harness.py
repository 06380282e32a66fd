"""Shared fuzz harness: only ``ParityError`` may escape a reader, importer or config loader.

Every fuzz test feeds hostile bytes to one entry point through :func:`only_parity_errors`, which
fails the test on any other exception, on a case that runs past its time limit, or on one that
allocates more than its memory limit (Python and NumPy allocations, through ``tracemalloc``).

Budgets: CI runs :data:`EXAMPLES` cases per test (small); ``pytest --fuzz-long`` (or
``PARITY_FUZZ_LONG=1``) runs :data:`EXAMPLES_LONG`.
"""

from __future__ import annotations

import os
import signal
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, settings

from parity.errors import ParityError

EXAMPLES = 40
EXAMPLES_LONG = 3000
TIME_LIMIT_S = 10.0
MEMORY_LIMIT_BYTES = 256 * 1024 * 1024


def long_run() -> bool:
    return os.environ.get("PARITY_FUZZ_LONG", "0") == "1"


def fuzz_settings(examples: int | None = None) -> settings:
    """Hypothesis settings for a fuzz test: the CI budget, or the long one under ``--fuzz-long``."""
    n = EXAMPLES_LONG if long_run() else (examples or EXAMPLES)
    return settings(
        max_examples=n,
        deadline=None,
        derandomize=not long_run(),  # CI runs are reproducible; long runs explore
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                               HealthCheck.data_too_large],
        database=None,
    )


class _Timeout(BaseException):
    """Raised by the alarm inside a case that runs too long (BaseException: no reader catches it)."""


def only_parity_errors(fn: Callable[..., Any], *args: Any, time_limit: float = TIME_LIMIT_S,
                       memory_limit: int = MEMORY_LIMIT_BYTES, **kwargs: Any) -> ParityError | None:
    """Call ``fn(*args, **kwargs)``; return the ``ParityError`` it raised (or None when it succeeded).

    Fails (AssertionError) when any other exception escapes, when the call runs past
    ``time_limit`` seconds, or when it allocates more than ``memory_limit`` bytes at its peak.
    """
    def _alarm(signum, frame):
        raise _Timeout()

    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, time_limit)
    tracing = tracemalloc.is_tracing()
    if not tracing:
        tracemalloc.start()
    tracemalloc.reset_peak()
    start = time.perf_counter()
    error: ParityError | None = None
    try:
        fn(*args, **kwargs)
    except ParityError as e:
        error = e
    except _Timeout:
        raise AssertionError(f"{getattr(fn, '__name__', fn)} ran past {time_limit} s") from None
    except Exception as e:  # noqa: BLE001 - the point of the harness
        raise AssertionError(
            f"{getattr(fn, '__name__', fn)} let a raw {type(e).__name__} escape: {e!r}") from e
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        _, peak = tracemalloc.get_traced_memory()
        if not tracing:
            tracemalloc.stop()
    elapsed = time.perf_counter() - start
    assert elapsed < time_limit, f"{getattr(fn, '__name__', fn)} took {elapsed:.1f} s"
    assert peak <= memory_limit, f"{getattr(fn, '__name__', fn)} allocated {peak / 2**20:.0f} MiB at peak"
    return error
