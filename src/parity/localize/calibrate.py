"""``parity calibrate``: measure the noise floor of a precision from pairs of reference captures.

Give pairs of captures of the same computation on the same inputs, one at a higher precision
(float64, say) and one at the candidate's precision (bfloat16, say). For each stage, the error of
the low-precision capture against the high-precision one is what rounding alone produces; the
largest over the pairs becomes the stage's floor (:class:`~parity.compare.floor.NoiseFloor`).
``parity diff --tolerances FILE`` then passes a stage whose error is within ``margin`` times its
floor, and reports, per stage, how many times the floor the observed error is.

Example:
    >>> import numpy as np, tempfile, os, parity
    >>> d = tempfile.mkdtemp(); hi, lo = os.path.join(d, "hi.trace"), os.path.join(d, "lo.trace")
    >>> x = np.linspace(0, 1, 64)
    >>> with parity.record(hi):
    ...     _ = parity.tap("y", np.sin(x))
    >>> with parity.record(lo):
    ...     _ = parity.tap("y", np.sin(x.astype(np.float16)).astype(np.float16))
    >>> floor = calibrate([(hi, lo)])
    >>> 1e-5 < floor.stages["y"].rel_rms < 1e-3, floor.margin
    (True, 3.0)
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from .divergence import compare_traces
from ..compare.floor import DEFAULT_MARGIN, NoiseFloor, StageFloor, relative_rms
from ..errors import UsageError

__all__ = ["calibrate"]


def calibrate(pairs: Sequence[tuple[str | os.PathLike[str], str | os.PathLike[str]]], *, margin: float = DEFAULT_MARGIN,
              config: str | os.PathLike[str] | None = None) -> NoiseFloor:
    """Per-stage noise floors from ``(high precision, low precision)`` trace pairs.

    Only stages present on both sides of a pair, as tensors of one shape, with finite values on
    the high-precision side, are measured; a stage's floor is the largest error over the pairs.

    Raises:
        UsageError: no pair, or no stage could be measured.
        TraceFormatError: a trace cannot be read.

    >>> floor = calibrate([("ref.trace", "cand.trace")], margin=2.0)  # float64 vs float32: the float32 floor
    >>> floor.margin, floor.pairs, len(floor.stages)
    (2.0, 1, 31)
    """
    if not pairs:
        raise UsageError("parity calibrate needs at least one HI LO pair of traces.")
    floors: dict[str, StageFloor] = {}
    for hi, lo in pairs:
        diff = compare_traces(hi, lo, config=config, rtol=0.0, atol=0.0, diagnose=False)
        for sd in diff.compared:
            m = sd.metrics
            if m is None or m.count == 0 or m.nan_mismatch or m.inf_mismatch:
                continue
            new = StageFloor(relative_rms(m.sqnr_db), float(m.rms_err), float(m.max_abs_err))
            old = floors.get(sd.key)
            if old is not None:
                rel_max = None if old.rel_rms is None or new.rel_rms is None else max(old.rel_rms, new.rel_rms)
                new = StageFloor(rel_max, max(old.rms, new.rms), max(old.max_abs, new.max_abs))
            floors[sd.key] = new
    if not floors:
        raise UsageError("no stage could be measured: the pairs share no tensor stage of one shape with finite values.")
    return NoiseFloor(floors, float(margin), len(pairs))
