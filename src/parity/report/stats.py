"""Summary statistics of a stored stage (what ``parity show`` prints), in bounded memory."""

from __future__ import annotations

import numpy as np

from ..trace.dtypes import to_float64
from ..trace.reader import Stage, Trace

__all__ = ["stage_statistics"]


def stage_statistics(trace: Trace, stage: Stage, chunk: int = 1 << 20) -> dict[str, float | int]:
    """min, max, mean, std (finite values only) and NaN / Inf counts of a stage, in bounded memory.

    Values are read ``chunk`` elements at a time and widened to float64, so a stage larger than
    memory is summarised without loading it whole. Text stages give ``{}``.

    >>> t = parity.load_trace("ref.trace")
    >>> st = stage_statistics(t, t.stage("embedding"))
    >>> sorted(st), st["nan"], st["min"] <= st["mean"] <= st["max"]
    (['inf', 'max', 'mean', 'min', 'nan', 'std'], 0, True)
    """
    arr = trace.array(stage)
    if isinstance(arr, str):
        return {}
    info = stage.dtype_info
    flat = arr.reshape(-1)
    n = nan = inf = 0
    s = ss = 0.0
    lo, hi = np.inf, -np.inf
    for start in range(0, flat.size, chunk):
        x = to_float64(flat[start:start + chunk], info)
        bad_nan = np.isnan(x)
        bad_inf = np.isinf(x)
        nan += int(bad_nan.sum())
        inf += int(bad_inf.sum())
        x = x[~(bad_nan | bad_inf)]
        if x.size:
            n += x.size
            s += float(x.sum())
            ss += float(np.dot(x, x))
            lo, hi = min(lo, float(x.min())), max(hi, float(x.max()))
    mean = s / n if n else float("nan")
    var = max(ss / n - mean * mean, 0.0) if n else float("nan")
    return {"min": lo if n else float("nan"), "max": hi if n else float("nan"), "mean": mean, "std": var ** 0.5,
            "nan": nan, "inf": inf}
