"""Localize a divergence: where it shows first, what likely explains it, which stage introduces it.

The layer above :mod:`parity.compare` (which judges stages) and below :mod:`parity.report`
(which renders): it reads the per-stage results and locates the cause.

* :mod:`parity.localize.divergence`: :func:`parity.compare_traces`, the comparison with its
  diagnoses (and event traces, and ``local=``): the front door.
* :mod:`parity.localize.diagnose`: likely explanations of a divergent stage (scale factor,
  transpose, NaN origin, rounding-level noise...), given to the comparison engine.
* :mod:`parity.localize.local`: local versus propagated error (a replayed capture): the culprit.
* :mod:`parity.localize.sets`: many inputs, aggregated per stage.
* :mod:`parity.localize.calibrate`: noise floors from pairs of high/low precision captures.
* :mod:`parity.localize.bisect`: the first revision of a git history at which parity broke.
"""

from .divergence import compare_traces
from .local import Localization, localize

__all__ = ["compare_traces", "localize", "Localization"]
