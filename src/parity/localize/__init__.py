"""Localize a divergence: which stage introduces error, and since when.

* :mod:`parity.localize.diagnose`: likely explanations of a divergent stage (scale factor,
  transpose, NaN origin, rounding-level noise...).
* :mod:`parity.localize.bisect`: the first revision of a git history at which parity broke.
"""
