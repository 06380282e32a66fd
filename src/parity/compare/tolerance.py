"""Tolerances: a per-dtype default table (as torch.testing) and per-stage overrides by glob.

A stage passes element-wise when ``|c - r| <= atol + rtol * |r|``. The defaults come from the
*looser* of the two stored dtypes, so a float32 reference against a bfloat16 candidate is judged
at bfloat16 precision. Optional floors on cosine similarity and SQNR add stage-level checks.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from ..errors import ConfigError
from ..results import Tolerance
from ..trace.dtypes import DTYPES

__all__ = ["Tolerance", "DEFAULT_TOLERANCES", "default_tolerance", "ToleranceRules", "glob_to_regex"]


#: (rtol, atol) by safetensors dtype code; floats follow torch.testing.assert_close.
DEFAULT_TOLERANCES: dict[str, tuple[float, float]] = {
    "F64": (1e-7, 1e-7),
    "F32": (1.3e-6, 1e-5),
    "F16": (1e-3, 1e-5),
    "BF16": (1.6e-2, 1e-5),
    "F8_E4M3": (1.25e-1, 1e-3),
    "F8_E5M2": (2.5e-1, 1e-3),
}


def default_tolerance(ref_dtype: str | None, cand_dtype: str | None) -> Tolerance:
    """The looser default of the two stored dtypes (exact for integers and bools).

    >>> default_tolerance("F32", "BF16")
    Tolerance(rtol=0.016, atol=1e-05, cosine_min=None, sqnr_min_db=None, correlation_min=None)
    """
    pairs = [DEFAULT_TOLERANCES.get(d or "", (0.0, 0.0)) for d in (ref_dtype, cand_dtype)]
    return Tolerance(max(p[0] for p in pairs), max(p[1] for p in pairs))


@functools.lru_cache(maxsize=4096)
def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """Compile a stage glob: ``*`` matches any run of characters, ``?`` one; all else is literal.

    Brackets are literal (unlike fnmatch) so ``k_frac[phi_tic=*]`` does what it says.

    >>> bool(glob_to_regex("layers.*.attn").match("layers.3.attn")), bool(glob_to_regex("layers.?").match("layers.10"))
    (True, False)
    """
    out = []
    for ch in pattern:
        out.append(".*" if ch == "*" else "." if ch == "?" else re.escape(ch))
    return re.compile("^" + "".join(out) + "$")


_FIELDS = {"rtol", "atol", "cosine_min", "sqnr_min_db", "correlation_min"}


def _check_fields(where: str, d: Mapping[str, object]) -> dict[str, float]:
    unknown = set(d) - _FIELDS
    if unknown:
        raise ConfigError(f"{where}: unknown tolerance field(s) {sorted(unknown)}; expected some of {sorted(_FIELDS)}.")
    out = {}
    for k, v in d.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(f"{where}: {k} must be a number, not {v!r}.")
        if v != v or v in (float("inf"), float("-inf")):
            raise ConfigError(f"{where}: {k} must be a finite number, not {v!r}.")
        if k in ("rtol", "atol") and v < 0:
            raise ConfigError(f"{where}: {k} must be a non-negative number, not {v!r}.")
        out[k] = float(v)
    return out


@dataclass(frozen=True)
class ToleranceRules:
    """Global overrides plus per-stage overrides by glob pattern (later patterns win).

    Attributes:
        overrides: fields applied to every stage on top of the dtype default.
        stages: ``(pattern, fields)`` in declaration order.

    >>> rules = ToleranceRules.build({"rtol": 1e-3}, {"logits": {"atol": 0.1}})
    >>> rules.for_stage("logits", "F32", "F32").to_dict()
    {'rtol': 0.001, 'atol': 0.1}
    """

    overrides: Mapping[str, float] = field(default_factory=dict)
    stages: tuple[tuple[str, Mapping[str, float]], ...] = ()

    @classmethod
    def build(cls, overrides: Mapping[str, object] | None = None,
              stages: Mapping[str, Mapping[str, object]] | None = None) -> ToleranceRules:
        """Validate and build rules from plain mappings (e.g. a parsed TOML table)."""
        g = _check_fields("[tolerance]", overrides or {})
        s = []
        for pattern, fields in (stages or {}).items():
            if not isinstance(fields, Mapping):
                raise ConfigError(f'[tolerance.stages] "{pattern}" must be a table like {{ rtol = 1e-3 }}.')
            s.append((str(pattern), _check_fields(f'[tolerance.stages] "{pattern}"', fields)))
        return cls(g, tuple(s))

    def for_stage(self, key: str, ref_dtype: str | None, cand_dtype: str | None) -> Tolerance:
        """The tolerance that applies to stage ``key`` (one object for every stage with the same
        dtypes and the same matching patterns: a trace of a million stages resolves a few)."""
        matched = self.matching(key)
        cache = self.__dict__.get("_resolved")
        if cache is None:
            cache = {}
            object.__setattr__(self, "_resolved", cache)  # not a field: equality and repr ignore it
        tol = cache.get((ref_dtype, cand_dtype, matched))
        if tol is None:
            tol = replace(default_tolerance(ref_dtype, cand_dtype), **self.overrides)
            for i in matched:
                tol = replace(tol, **self.stages[i][1])
            cache[(ref_dtype, cand_dtype, matched)] = tol
        return tol

    def matching(self, key: str) -> tuple[int, ...]:
        """The positions in :attr:`stages` of the patterns that match ``key`` (what
        :meth:`for_stage` reads of the key).

        >>> ToleranceRules.build(stages={"a.*": {"atol": 1}, "*.b": {"atol": 2}}).matching("a.b")
        (0, 1)
        """
        return tuple(i for i, (pattern, _) in enumerate(self.stages) if glob_to_regex(pattern).match(key)) if self.stages else ()

    def check_patterns(self, keys: Iterable[str]) -> None:
        """Raise :class:`ConfigError` for a stage pattern that matches none of ``keys``."""
        keys = list(keys)
        for pattern, _ in self.stages:
            rx = glob_to_regex(pattern)
            if not any(rx.match(k) for k in keys):
                sample = ", ".join(keys[:5]) + (" ..." if len(keys) > 5 else "")
                raise ConfigError(f'tolerance pattern "{pattern}" matches no stage (stages: {sample}).')


assert set(DEFAULT_TOLERANCES) <= set(DTYPES)
