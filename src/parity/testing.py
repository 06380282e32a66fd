"""Golden-trace regression tests: compare what a test records against a trace kept beside it.

The pytest plugin (:mod:`parity.pytest_plugin`, installed with parity) gives every test a
``parity_trace`` fixture; this module holds the logic, usable without pytest too.

Goldens live beside the test file, in a folder named after the test module, in the house style of
pytest-regressions: ``tests/test_model.py::test_forward`` keeps
``tests/test_model/test_forward.trace``. A failing check writes the obtained trace beside the
golden (``test_forward.obtained.trace``) as evidence; ``pytest --parity-update`` writes or
refreshes the goldens instead of comparing.

Goldens are meant to be small (a few stages, small arrays): a golden larger than
``max_golden_bytes`` (default 2 MiB) is refused with a note on Git LFS.

Example (outside pytest):
    >>> import numpy as np, tempfile, os, parity
    >>> from parity.testing import assert_parity
    >>> d = tempfile.mkdtemp(); obtained = os.path.join(d, "run.trace")
    >>> with parity.record(obtained):
    ...     _ = parity.tap("y", np.arange(3.0))
    >>> golden = os.path.join(d, "golden", "y.trace")
    >>> assert_parity(obtained, golden, update=True).action
    'created'
    >>> assert_parity(obtained, golden).action
    'passed'
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from typing import Any

from .errors import UsageError

__all__ = ["assert_parity", "GoldenResult", "ParityAssertionError", "golden_path", "DEFAULT_MAX_GOLDEN_BYTES", "SESSION"]

#: Goldens above this size are refused (they belong in Git LFS, or should be smaller).
DEFAULT_MAX_GOLDEN_BYTES = 2 << 20


class ParityAssertionError(AssertionError):
    """A recorded trace does not match its golden (an ``AssertionError``: pytest shows the message).

    >>> _ = assert_parity("ref.trace", "goldens/forward.trace", update=True)
    >>> try:
    ...     assert_parity("cand.trace", "goldens/forward.trace", rtol=1e-4)
    ... except AssertionError as e:
    ...     print(str(e).splitlines()[0])
    parity: stage 'layers.0.attn_scores' diverges from the golden goldens/forward.trace (the first of 26 divergent stages, in pipeline order)
    """


@dataclass(frozen=True)
class GoldenResult:
    """What :func:`assert_parity` did: ``action`` is ``"passed"``, ``"created"`` or ``"updated"``.

    >>> assert_parity("ref.trace", "goldens/ref.trace", update=True)
    GoldenResult(action='created', golden='goldens/ref.trace', diff=None)
    >>> r = assert_parity("ref.trace", "goldens/ref.trace")
    >>> r.action, r.diff.passed
    ('passed', True)
    """

    action: str
    golden: str
    diff: Any = None  #: the :class:`~parity.TraceDiff`, when a comparison was made


def golden_path(test_file: str | os.PathLike[str], name: str) -> str:
    """``<dir of test_file>/<module stem>/<name>.trace`` (``name`` may already end in ``.trace``).

    >>> golden_path("/repo/tests/test_model.py", "forward")
    '/repo/tests/test_model/forward.trace'
    """
    if not name or os.sep in name or (os.altsep and os.altsep in name) or name in (".", "..") or "\0" in name:
        raise UsageError(f"golden name {name!r} must be a plain file name, not a path.")
    base = os.path.splitext(os.path.basename(os.fspath(test_file)))[0]
    stem = name[:-6] if name.endswith(".trace") else name
    return os.path.join(os.path.dirname(os.path.abspath(os.fspath(test_file))), base, stem + ".trace")


def _obtained_path(golden: str) -> str:
    return golden[:-6] + ".obtained.trace" if golden.endswith(".trace") else golden + ".obtained"


def _trace_bytes(path: str) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        total += sum(os.lstat(os.path.join(root, f)).st_size for f in files)
    return total


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _replace_dir(src: str, dst: str) -> None:
    """Copy trace directory ``src`` to ``dst`` atomically (a reader sees the old or the new one)."""
    parent = os.path.dirname(dst) or "."
    os.makedirs(parent, exist_ok=True)
    if os.path.islink(dst):
        raise UsageError(f"{dst}: is a symbolic link; parity never writes through one.")
    tmp = os.path.join(parent, f".{os.path.basename(dst)}.{uuid.uuid4().hex}.tmp")
    shutil.copytree(src, tmp, symlinks=True)
    old = None
    if os.path.exists(dst):
        old = os.path.join(parent, f".{os.path.basename(dst)}.{uuid.uuid4().hex}.old")
        os.rename(dst, old)
    os.rename(tmp, dst)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _failure_message(diff: Any, golden: str, obtained: str) -> str:
    from .report.text import describe_nothing_compared, format_float

    lines: list[str] = []
    first = diff.first_divergence
    if first is not None:
        n = len(diff.divergent)
        lines.append(f"parity: stage {first.key!r} diverges from the golden {golden}"
                     + (f" (the first of {n} divergent stages, in pipeline order)" if n > 1 else ""))
        m = first.metrics
        if m is not None:
            where = f" at {list(m.max_abs_index)}" if m.max_abs_index is not None else ""
            lines.append(f"  {m.mismatched:,} of {m.count:,} elements outside tolerance; max abs error "
                         f"{format_float(m.max_abs_err)}{where}: golden {format_float(m.max_abs_ref, 6)}, "
                         f"obtained {format_float(m.max_abs_cand, 6)}; max rel {format_float(m.max_rel_err)}")
        elif first.message:
            lines.append(f"  {first.message}")
        if first.tolerance is not None:
            lines.append("  tolerance: " + ", ".join(f"{k}={v:g}" for k, v in first.tolerance.to_dict().items()))
        for d in first.diagnoses[:2]:
            lines.append(f"  likely: {d.summary}")
    elif diff.nothing_compared:
        lines += [f"parity: nothing compared against the golden {golden}"] + describe_nothing_compared(diff)[:1]
    else:
        lines.append(f"parity: the stages differ from the golden {golden}")
    if diff.missing:
        lines.append(f"  {len(diff.missing)} golden stage(s) not recorded: " + ", ".join(s.key for s in diff.missing[:5])
                     + (" …" if len(diff.missing) > 5 else ""))
    if diff.extra:
        lines.append(f"  {len(diff.extra)} stage(s) recorded but not in the golden: "
                     + ", ".join(s.key for s in diff.extra[:5]) + (" …" if len(diff.extra) > 5 else ""))
    lines.append(f"  obtained trace written to {obtained} (parity diff {golden} {obtained} shows every stage)")
    lines.append("  if the change is intended, refresh the golden: pytest --parity-update")
    return "\n".join(lines)


#: Set by the pytest plugin: whether ``--parity-update`` was given, and what was written.
SESSION: dict[str, Any] = {"update": None, "updated": []}


def _update_default() -> bool:
    if SESSION["update"] is not None:
        return bool(SESSION["update"])
    return os.environ.get("PARITY_UPDATE_GOLDENS", "") not in ("", "0")


def assert_parity(obtained: Any, golden: str | os.PathLike[str], *, update: bool | None = None,
                  max_golden_bytes: int = DEFAULT_MAX_GOLDEN_BYTES, strict: bool = True,
                  **tolerances: Any) -> GoldenResult:
    """Compare the trace ``obtained`` against the golden trace ``golden``.

    Args:
        obtained: a trace path, a :class:`~parity.Trace`, or anything with a ``path`` attribute
            naming a closed trace (the ``parity_trace`` fixture, a ``TraceWriter``).
        golden: the golden trace directory, or a bare name: ``golden="forward"`` called from
            ``tests/test_model.py`` is ``tests/test_model/forward.trace`` (see :func:`golden_path`).
        update: write or refresh the golden from ``obtained`` instead of comparing. Default: what
            pytest was told (``--parity-update``), else the ``PARITY_UPDATE_GOLDENS`` environment
            variable.
        max_golden_bytes: refuse goldens larger than this.
        strict: stages present on one side only fail (default: a golden is the whole truth).
        **tolerances: ``rtol``, ``atol``, ``config``, ``stages``... as for :func:`parity.compare_traces`.

    Returns:
        A :class:`GoldenResult`.

    Raises:
        ParityAssertionError: the traces differ (the obtained trace is written beside the golden),
            or the golden does not exist and ``update`` is false.
        UsageError: ``obtained`` is not a trace, or the golden would be too large.

    >>> assert_parity("ref.trace", "goldens/ref.trace", update=True).action
    'created'
    >>> assert_parity("ref.trace", "goldens/ref.trace").action
    'passed'
    >>> assert_parity("cand.trace", "goldens/ref.trace", rtol=1e-4)
    Traceback (most recent call last):
    ...
    parity.testing.ParityAssertionError: parity: stage 'layers.0.attn_scores' diverges from the golden goldens/ref.trace ...
    """
    from .localize.divergence import compare_traces
    from .trace.reader import Trace, load_trace

    path = obtained.path if isinstance(obtained, Trace) or hasattr(obtained, "path") else obtained
    path = os.fspath(path)
    golden = os.fspath(golden)
    if os.sep not in golden and not (os.altsep and os.altsep in golden):
        import sys

        golden = golden_path(sys._getframe(1).f_code.co_filename, golden)
    from_session = update is None
    if from_session:
        update = _update_default()
    trace = load_trace(path)
    if not trace.complete:
        raise UsageError(f"{path}: the obtained trace is incomplete (the recording did not finish).")
    obtained_copy = _obtained_path(golden)
    if update:
        size = _trace_bytes(path)
        if size > max_golden_bytes:
            raise UsageError(f"{golden}: the golden would be {_human(size)}, over the {_human(max_golden_bytes)} limit. "
                             "Record fewer or smaller stages, or keep big goldens in Git LFS "
                             "(git lfs track '*.trace/data/*') and raise max_golden_bytes "
                             "(ini option parity_golden_max_bytes).")
        existed = os.path.isdir(golden)
        _replace_dir(path, golden)
        if os.path.isdir(obtained_copy) and not os.path.islink(obtained_copy):
            shutil.rmtree(obtained_copy)
        result = GoldenResult("updated" if existed else "created", golden)
        if from_session:  # listed in pytest's terminal summary
            SESSION["updated"].append(result)
        return result
    if not os.path.isdir(golden):
        _replace_dir(path, obtained_copy)
        raise ParityAssertionError(f"parity: golden trace {golden} does not exist.\n"
                                   f"  obtained trace written to {obtained_copy}\n"
                                   "  create the golden with: pytest --parity-update")
    diff = compare_traces(golden, trace, strict=strict, **tolerances)
    if not diff.passed:
        _replace_dir(path, obtained_copy)
        raise ParityAssertionError(_failure_message(diff, golden, obtained_copy))
    if os.path.isdir(obtained_copy) and not os.path.islink(obtained_copy):
        shutil.rmtree(obtained_copy)  # stale evidence of an earlier failure
    return GoldenResult("passed", golden, diff)
