"""Alignment suggestions: which unmatched candidate stage is which unmatched reference stage.

Two sides of a port rarely name everything alike (``pix0_vector`` vs ``pix0_vector_meters``,
``layers.0.attn.out`` vs ``blocks.0.attention.output``). :func:`suggest_alignment` proposes, for
each stage present on one side only, its counterpart on the other side, with a confidence and the
evidence, from two independent kinds of clue:

* **names**: the names are split into lower-case tokens (separators, ``camelCase`` and digits);
  trailing unit tokens (``_meters``, ``_A_inv``, ``_deg``...) are dropped; equal token lists are a
  strong clue, similar ones (a fuzzy ratio, among names that share a rare token) a weaker one;
* **content**: the same values in the same shape, the same values times a constant (a unit
  change: the factor is reported, ``1e-10`` or ``pi/180`` spelled out), the same values transposed
  (any axis permutation) or reshaped (same order, another shape).

Content matching never compares all pairs: every stage is reduced to a *sketch* (16 values at
fixed positions, divided by the stage's RMS), candidate sketches are sorted by one projection, and
a reference stage is only verified against the few candidates whose projection falls in a narrow
window and whose whole sketch agrees. Cost: one pass over each unmatched stage plus
``O(n log n)``, whatever the number of stages.

:func:`aliases_toml` turns accepted suggestions into a config fragment: ``[aliases]`` for names,
and the ``[transforms]`` (``scale``, ``permute``, ``reshape``) that content matching found.

Example:
    >>> import numpy as np, tempfile, os, parity
    >>> from parity.compare.suggest import suggest_alignment
    >>> d = tempfile.mkdtemp(); r, c = os.path.join(d, "r.trace"), os.path.join(d, "c.trace")
    >>> v = np.array([0.1, -0.0333, 0.2])
    >>> with parity.record(r):
    ...     _ = parity.tap("pix0_vector", v); _ = parity.tap("rot_deg", np.array([30.0, 45.0, 60.0]))
    >>> with parity.record(c):
    ...     _ = parity.tap("pix0_vector_meters", v + 6e-9); _ = parity.tap("angles", np.radians([30.0, 45.0, 60.0]))
    >>> for s in suggest_alignment(r, c):
    ...     print(s.ref_key, "<->", s.cand_key, s.relation, s.scale_text)
    pix0_vector <-> pix0_vector_meters same None
    rot_deg <-> angles scale pi/180
"""

from __future__ import annotations

import difflib
import functools
import itertools
import json
import math
import os
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ParityError
from ..trace.dtypes import to_float64
from ..trace.keys import split_key
from ..trace.reader import Stage, Trace, load_trace
from .config import CompareConfig

__all__ = ["AlignSuggestion", "suggest_alignment", "aliases_toml", "name_tokens", "unmatched_keys", "alignment_hint"]

#: Trailing name tokens that only state a unit (``pix0_vector_meters`` → ``pix0 vector``).
UNIT_TOKENS = frozenset("""
    m meter meters metre metres mm cm um nm pm km angstrom angstroms ang a inv per
    rad rads radian radians deg degree degrees mrad urad
    s sec secs second seconds ms us ns ps fs min hr hz khz mhz ghz
    ev kev mev gev j kj joule joules kcal mol k kelvin au bohr hartree ry
    px pix pixel pixels si cgs g kg mg n pa kpa bar atm w kw v mv
""".split())

_SKETCH = 16  # sketch length (values at fixed positions)
_CONTENT_RTOL = 1e-3  # relative RMS residual up to which values count as "close"
_NAME_RATIO = 0.75  # fuzzy-ratio floor for a name clue


@dataclass(frozen=True)
class AlignSuggestion:
    """One proposed pair: candidate stage ``cand_key`` is reference stage ``ref_key``.

    Attributes:
        ref_key, cand_key: the two stage keys.
        confidence: 0 to 1; above 0.8 both clues agree, or one of them is unambiguous.
        by: the clues that support it: ``("name",)``, ``("content",)`` or both.
        relation: what the content check found: ``"same"`` values, ``"scale"`` (candidate ≈
            ``scale`` × reference), ``"transpose"`` (candidate ≈ reference transposed by
            ``permute``), ``"reshape"`` (same values in the same order, another shape), or
            ``"name"`` (no content evidence).
        scale: the factor of a ``"scale"`` relation (candidate / reference).
        permute: the axis order of a ``"transpose"`` relation: candidate ≈ ``ref.transpose(permute)``.
        max_rel: largest element-wise relative error after the relation is applied.
        evidence: a human-readable line, e.g. ``"same shape (3,), max rel 6e-08"``.
        ambiguous: other candidate stages that fit equally well (lower the confidence).

    >>> s = suggest_alignment("ref.trace", "cand.trace")
    >>> s  # the demo pair shares every key: nothing to align
    []
    """

    ref_key: str
    cand_key: str
    confidence: float
    by: tuple[str, ...]
    relation: str
    evidence: str
    scale: float | None = None
    permute: tuple[int, ...] | None = None
    max_rel: float | None = None
    ambiguous: tuple[str, ...] = field(default_factory=tuple)
    ref_shape: tuple[int, ...] | None = None
    cand_shape: tuple[int, ...] | None = None

    @property
    def scale_text(self) -> str | None:
        """The factor as a config would spell it: ``"1e-10"``, ``"pi/180"``, or ``repr``."""
        return None if self.scale is None else _scale_text(self.scale)

    def to_dict(self) -> dict[str, Any]:
        return {"ref": self.ref_key, "cand": self.cand_key, "confidence": round(self.confidence, 3),
                "by": list(self.by), "relation": self.relation, "evidence": self.evidence,
                "scale": self.scale, "permute": list(self.permute) if self.permute is not None else None,
                "max_rel": self.max_rel, "ambiguous": list(self.ambiguous),
                "ref_shape": list(self.ref_shape) if self.ref_shape is not None else None,
                "cand_shape": list(self.cand_shape) if self.cand_shape is not None else None}

    def describe(self) -> str:
        """``pix0_vector ↔ pix0_vector_meters (0.95, name+content): same shape (3,), max rel 6e-08``."""
        return f"{self.ref_key} ↔ {self.cand_key} ({self.confidence:.2f}, {'+'.join(self.by)}): {self.evidence}"


# -- names ------------------------------------------------------------------------------------------
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])|(?<=[A-Za-z])(?=[0-9])|(?<=[0-9])(?=[A-Za-z])")
_SEP = re.compile(r"[._\-:@+\s]+")


def name_tokens(name: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(tokens, dropped_units)`` of a stage name: lower case, split at separators, camelCase
    and digit boundaries, trailing unit tokens dropped (never all of them; kept as written).

    >>> name_tokens("pix0_vector_meters")
    (('pix', '0', 'vector'), ('meters',))
    >>> name_tokens("Fdet_A_inv")
    (('fdet',), ('A', 'inv'))
    """
    # a chunk that is a unit as written (meV, GHz, keV) is not split at its capitals
    parts = [p for chunk in _SEP.split(name) if chunk
             for p in ([chunk] if chunk.lower() in UNIT_TOKENS else _CAMEL.split(chunk)) if p]
    tokens = [p.lower() for p in parts]
    dropped: list[str] = []
    while len(tokens) > 1 and tokens[-1] in UNIT_TOKENS:
        tokens.pop()
        dropped.insert(0, parts.pop())
    return tuple(tokens), tuple(dropped)


@dataclass
class _Side:
    key: str
    stage: Stage
    name: str
    rest: str  # indices and occurrence, as text: aliases keep them
    tokens: tuple[str, ...]
    units: tuple[str, ...]


def _side(stage: Stage) -> _Side:
    name, _, _ = split_key(stage.key)
    tokens, units = name_tokens(name)
    return _Side(stage.key, stage, name, stage.key[len(name):], tokens, units)


def _name_clues(refs: Sequence[_Side], cands: Sequence[_Side]) -> dict[tuple[int, int], tuple[float, str]]:
    """(ref index, cand index) → (score, evidence) for names that look alike."""
    clues: dict[tuple[int, int], tuple[float, str]] = {}
    by_tokens: dict[tuple[tuple[str, ...], str], list[int]] = defaultdict(list)
    for j, c in enumerate(cands):
        by_tokens[(c.tokens, c.rest)].append(j)
    df = Counter(t for c in cands for t in set(c.tokens))
    index: dict[str, list[int]] = defaultdict(list)
    for j, c in enumerate(cands):
        for t in set(c.tokens):
            index[t].append(j)
    common = max(50, len(cands) // 20)  # a token on more names than this says little
    for i, r in enumerate(refs):
        exact = by_tokens.get((r.tokens, r.rest), [])
        for j in exact:
            c = cands[j]
            units = [u for u in (r.units, c.units) if u]
            why = "names equal after normalizing case and separators"
            if units:
                why = "names equal but for the unit suffix " + " / ".join("_" + "_".join(u) for u in units)
            clues[(i, j)] = (0.9 if len(exact) == 1 else 0.6, why)
        if exact:
            continue
        # fuzzy: only among names sharing a rare token (never all pairs)
        rare = sorted((t for t in set(r.tokens) if 0 < df[t] <= common), key=lambda t: df[t])[:3]
        seen = {j for t in rare for j in index[t] if cands[j].rest == r.rest}
        a = " ".join(r.tokens)
        for j in seen:
            b = " ".join(cands[j].tokens)
            ratio = difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()
            if ratio >= _NAME_RATIO:
                clues[(i, j)] = (0.7 * ratio, f"similar names ({ratio:.0%} alike)")
    return clues


# -- content ----------------------------------------------------------------------------------------
@dataclass
class _Sketch:
    values: np.ndarray  # _SKETCH values at fixed flat positions, divided by the RMS
    rms: float


def _load(trace: Trace, stage: Stage, max_bytes: int) -> np.ndarray | None:
    """The stage as float64, or None when content says nothing (text, empty, non-finite, constant, too big)."""
    info = stage.dtype_info
    size = math.prod(stage.shape)
    if stage.kind != "tensor" or info is None or size < 2 or size * info.itemsize > max_bytes:
        return None
    try:
        x = to_float64(np.asarray(trace.array(stage)), info)
    except (ParityError, TypeError, ValueError):  # a dtype that cannot be widened here: no content clue
        return None
    if not np.isfinite(x).all():
        return None
    if float(np.ptp(x)) == 0.0:
        return None  # constant: it would match every constant of the same size
    return x


@functools.lru_cache(maxsize=1024)
def _positions(size: int) -> np.ndarray:
    k = min(_SKETCH, size)
    return np.unique(np.linspace(0, size - 1, k).round().astype(np.int64))


def _sketch(x: np.ndarray) -> _Sketch:
    flat = x.reshape(-1)
    rms = math.sqrt(float(np.dot(flat, flat)) / flat.size)
    return _Sketch(flat[_positions(flat.size)] / rms, rms)


_WEIGHTS = np.cos(np.arange(_SKETCH) * 1.7 + 0.3)  # a fixed projection: spreads sketches along a line


def _project(v: np.ndarray) -> float:
    return float(np.dot(v, _WEIGHTS[: v.size]))


_ELEMENT_TOL = 0.03  # sketch values (in RMS units) of "close" stages differ by at most this
_WINDOW = _ELEMENT_TOL * float(np.abs(_WEIGHTS).sum())  # hence their projections by at most this


class _Index:
    """Candidate sketches grouped by shape, sorted by projection, for windowed look-ups."""

    def __init__(self) -> None:
        self._pending: dict[tuple[int, ...], list[tuple[float, int, np.ndarray]]] = defaultdict(list)
        self._groups: dict[tuple[int, ...], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def add(self, shape: tuple[int, ...], j: int, sk: _Sketch) -> None:
        self._pending[shape].append((_project(sk.values), j, sk.values))

    def freeze(self) -> None:
        for shape, rows in self._pending.items():
            rows.sort(key=lambda t: t[0])
            self._groups[shape] = (np.array([t[0] for t in rows]), np.array([t[1] for t in rows]),
                                   np.stack([t[2] for t in rows]))
        self._pending.clear()

    def shapes(self) -> Iterable[tuple[int, ...]]:
        return self._groups.keys()

    def lookup(self, shape: tuple[int, ...], values: np.ndarray) -> list[int]:
        """Candidates whose sketch is within tolerance of ``values`` or of ``-values``."""
        group = self._groups.get(shape)
        if group is None:
            return []
        proj, ids, vals = group
        out: list[int] = []
        for v in (values, -values):  # a negative factor flips every sign
            p = _project(v)
            lo, hi = np.searchsorted(proj, p - _WINDOW, "left"), np.searchsorted(proj, p + _WINDOW, "right")
            if hi > lo:
                close = np.max(np.abs(vals[lo:hi] - v), axis=1) <= _ELEMENT_TOL
                out += [int(j) for j in ids[lo:hi][close] if int(j) not in out]
        return out


def _scale_text(c: float) -> str:
    sign = "-" if c < 0 else ""
    a = abs(c)
    for text, value in (("pi/180", math.pi / 180), ("180/pi", 180 / math.pi)):
        if math.isclose(a, value, rel_tol=1e-6):
            return sign + text
    e = round(math.log10(a))
    if e != 0 and math.isclose(a, 10.0 ** e, rel_tol=1e-6):
        return f"{sign}1e{e}"
    if math.isclose(a, 1.0, rel_tol=1e-6):
        return sign + "1"
    return repr(c)


def _verify(r: np.ndarray, c: np.ndarray, permute: tuple[int, ...] | None, reshape: bool) -> tuple[str, float, float] | None:
    """(relation, scale, max rel) when ``c`` is ``r`` up to a factor (after the permutation), else None."""
    rr = r.transpose(permute) if permute is not None else r
    rr = rr.reshape(c.shape) if reshape else rr
    rf, cf = rr.reshape(-1), c.reshape(-1)
    denom = float(np.dot(rf, rf))
    if denom == 0.0:
        return None
    scale = float(np.dot(rf, cf)) / denom
    if scale == 0.0 or not math.isfinite(scale):
        return None
    same = math.isclose(scale, 1.0, rel_tol=10 * _CONTENT_RTOL)
    fitted = rf if same else rf * scale
    resid = float(np.linalg.norm(fitted - cf)) / max(float(np.linalg.norm(cf)), 1e-300)
    if resid > _CONTENT_RTOL:
        return None
    ref_mag = np.abs(fitted)
    floor = max(float(ref_mag.max()) * 1e-12, 1e-300)
    max_rel = float(np.max(np.abs(fitted - cf) / np.maximum(ref_mag, floor)))
    relation = "transpose" if permute is not None else "reshape" if reshape else "same" if same else "scale"
    return relation, (1.0 if same else scale), max_rel


def _shape_text(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _content_clues(ref: Trace, cand: Trace, refs: Sequence[_Side], cands: Sequence[_Side],
                   max_bytes: int) -> dict[tuple[int, int], tuple[float, str, str, float, tuple[int, ...] | None, float]]:
    """(ref index, cand index) → (score, evidence, relation, scale, permute, max_rel)."""
    index, flat_index = _Index(), _Index()
    for j, c in enumerate(cands):
        x = _load(cand, c.stage, max_bytes)
        if x is not None:
            sk = _sketch(x)
            index.add(tuple(c.stage.shape), j, sk)
            flat_index.add((x.size,), j, sk)
    index.freeze()
    flat_index.freeze()
    shapes_by_sorted: dict[tuple[int, ...], list[tuple[int, ...]]] = defaultdict(list)
    for shape in index.shapes():
        shapes_by_sorted[tuple(sorted(shape))].append(shape)
    clues: dict[tuple[int, int], tuple[float, str, str, float, tuple[int, ...] | None, float]] = {}
    for i, r in enumerate(refs):
        x = _load(ref, r.stage, max_bytes)
        if x is None:
            continue
        shape = tuple(r.stage.shape)
        tries: list[tuple[tuple[int, ...] | None, bool, np.ndarray]] = [(None, False, x)]
        if len(shape) >= 2:  # transposes: every axis order whose shape some candidate has
            wanted = set(shapes_by_sorted.get(tuple(sorted(shape)), ()))
            for perm in itertools.islice(itertools.permutations(range(len(shape))), 1, 720):
                pshape = tuple(shape[a] for a in perm)
                if pshape in wanted or (pshape == shape and len(set(shape)) < len(shape)):
                    tries.append((perm, False, x.transpose(perm)))
        base = _sketch(x)
        for perm, _, arr in tries:
            sk = base if perm is None else _sketch(arr)
            for j in index.lookup(tuple(arr.shape), sk.values):
                cx = _load(cand, cands[j].stage, max_bytes)
                got = None if cx is None else _verify(x, cx, perm, False)
                if got is not None:
                    clues.setdefault((i, j), _content_clue(got, perm, shape, cx.shape))
        for j in flat_index.lookup((x.size,), base.values):  # same order, another shape
            if tuple(cands[j].stage.shape) == shape or (i, j) in clues:
                continue
            cx = _load(cand, cands[j].stage, max_bytes)
            got = None if cx is None else _verify(x, cx, None, True)
            if got is not None:
                clues[(i, j)] = _content_clue(got, None, shape, cx.shape)
    return clues


def _content_clue(got: tuple[str, float, float], perm: tuple[int, ...] | None, rshape: tuple[int, ...],
                  cshape: tuple[int, ...]) -> tuple[float, str, str, float, tuple[int, ...] | None, float]:
    relation, scale, max_rel = got
    if relation == "same":
        return 0.85, f"same shape {_shape_text(rshape)}, max rel {max_rel:.2g}", relation, scale, None, max_rel
    if relation == "scale":
        return (0.8, f"same shape {_shape_text(rshape)}, candidate = {_scale_text(scale)} × reference "
                f"(a unit change?), max rel {max_rel:.2g} after scaling", relation, scale, None, max_rel)
    if relation == "transpose":
        factor = "" if scale == 1.0 else f" × {_scale_text(scale)}"
        return (0.8, f"transposed: reference {_shape_text(rshape)} with axes {list(perm or ())} is the candidate "
                f"{_shape_text(cshape)}{factor}, max rel {max_rel:.2g}", relation, scale, perm, max_rel)
    factor = "" if scale == 1.0 else f" × {_scale_text(scale)}"
    return (0.7, f"same values in the same order, reshaped {_shape_text(rshape)} → {_shape_text(cshape)}{factor}, "
            f"max rel {max_rel:.2g}", relation, scale, None, max_rel)


# -- public -----------------------------------------------------------------------------------------
def unmatched_keys(ref: Trace, cand: Trace, config: CompareConfig | None = None) -> tuple[list[str], list[str]]:
    """``(reference keys without a counterpart, candidate keys without one)``, after the config's
    renames and aliases, each in its trace's order.

    >>> t = parity.load_trace("ref.trace")
    >>> unmatched_keys(t, parity.load_trace("cand.trace"))
    ([], [])
    """
    cfg = config or CompareConfig()
    mapped = {k: cfg.rename_candidate(k) for k in cand.keys()}
    targets = set(mapped.values())
    ref_keys = set(ref.keys())
    return ([k for k in ref.keys() if k not in targets and not cfg.is_ignored(k)],
            [k for k, m in mapped.items() if m not in ref_keys and not cfg.is_ignored(k)])


def suggest_alignment(ref: str | os.PathLike[str] | Trace, cand: str | os.PathLike[str] | Trace,
                      config: CompareConfig | str | os.PathLike[str] | None = None, *, content: bool = True,
                      max_stage_bytes: int = 256 << 20, min_confidence: float = 0.4) -> list[AlignSuggestion]:
    """Propose a counterpart for every stage present on one side only.

    Args:
        ref, cand: the traces (paths or :class:`~parity.Trace`).
        config: renames and aliases already applied (a :class:`CompareConfig` or a TOML path);
            only stages still unmatched after it are considered.
        content: also match by values (reads each unmatched stage once). ``False``: names only.
        max_stage_bytes: stages larger than this are matched by name only.
        min_confidence: suggestions below it are dropped.

    Returns:
        One-to-one suggestions (each stage in at most one), in the reference's order.

    Raises:
        TraceError: a trace cannot be read. ConfigError: the config is invalid.

    >>> from parity.compare.config import CompareConfig
    >>> cfg = CompareConfig.from_dict({"rename": {"^embedding$": "embed"}})  # break one name
    >>> [(s.ref_key, s.cand_key, s.by) for s in suggest_alignment("ref.trace", "cand.trace", cfg)]
    [('embedding', 'embedding', ('name', 'content'))]
    """
    from .config import load_config

    rt = ref if isinstance(ref, Trace) else load_trace(ref)
    ct = cand if isinstance(cand, Trace) else load_trace(cand)
    cfg = load_config(config) if isinstance(config, (str, os.PathLike)) else config
    ref_left, cand_left = unmatched_keys(rt, ct, cfg)
    if not ref_left or not cand_left:
        return []
    refs = [_side(rt.stage(k)) for k in ref_left]
    cands = [_side(ct.stage(k)) for k in cand_left]
    names = _name_clues(refs, cands)
    contents = _content_clues(rt, ct, refs, cands, max_stage_bytes) if content else {}
    # content matches of one reference stage with several candidates are ambiguous
    per_ref: dict[int, list[int]] = defaultdict(list)
    for (i, j) in contents:
        per_ref[i].append(j)
    scored = []
    for pair in set(names) | set(contents):
        conf, suggestion = _score_pair(pair, refs, cands, names, contents, per_ref, rt, ct, content, max_stage_bytes)
        if conf >= min_confidence:
            scored.append((conf, pair[0], pair[1], suggestion))
    return _one_to_one(scored)


def _score_pair(pair: tuple[int, int], refs: list, cands: list, names: dict, contents: dict, per_ref: dict[int, list[int]],
                rt: Trace, ct: Trace, content: bool, max_stage_bytes: int) -> tuple[float, AlignSuggestion]:
    """The confidence of one (reference, candidate) pair from its name and content clues, and the suggestion."""
    i, j = pair
    r, c = refs[i], cands[j]
    by, parts, conf = [], [], 0.0
    relation, scale, perm, max_rel = "name", None, None, None
    ambiguous: tuple[str, ...] = ()
    if pair in contents:
        score, why, relation, sc, perm, max_rel = contents[pair]
        others = [cands[k].key for k in per_ref[i] if k != j]
        if others:
            score *= 0.6
            ambiguous = tuple(others[:5])
        by.append("content")
        parts.append(why)
        conf = score
        scale = sc if relation in ("scale", "transpose", "reshape") and sc != 1.0 else None
    if pair in names:
        nscore, nwhy = names[pair]
        by.insert(0, "name")
        parts.insert(0, nwhy)
        conf = 1 - (1 - conf) * (1 - nscore)
        if pair not in contents:
            rs, cs = tuple(r.stage.shape), tuple(c.stage.shape)
            if r.stage.kind == c.stage.kind and rs == cs:
                differ = content and _both_loadable(rt, ct, r.stage, c.stage, max_stage_bytes)
                parts.append(f"same shape {_shape_text(rs)}" + (", values differ" if differ else ""))
                if differ:
                    conf *= 0.7
            else:
                parts.append(f"but shapes differ: {_shape_text(rs)} vs {_shape_text(cs)}")
                conf *= 0.5
    if ambiguous:
        parts.append("also fits " + ", ".join(ambiguous))
    conf = min(conf, 0.99)
    return conf, AlignSuggestion(r.key, c.key, conf, tuple(by), relation, "; ".join(parts), scale, perm, max_rel,
                                 ambiguous, tuple(r.stage.shape), tuple(c.stage.shape))


def _one_to_one(scored: list[tuple[float, int, int, AlignSuggestion]]) -> list[AlignSuggestion]:
    """The best-scored pairs with each stage in at most one, in the reference's order."""
    scored.sort(key=lambda t: (-t[0], t[1], t[2]))
    used_r, used_c, chosen = set(), set(), []
    for _conf, i, j, s in scored:
        if i in used_r or j in used_c:
            continue
        used_r.add(i)
        used_c.add(j)
        chosen.append((i, s))
    return [s for _, s in sorted(chosen, key=lambda t: t[0])]


def _both_loadable(rt: Trace, ct: Trace, rs: Stage, cs: Stage, max_bytes: int) -> bool:
    return _load(rt, rs, max_bytes) is not None and _load(ct, cs, max_bytes) is not None


def _toml_str(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)  # a JSON string is a valid TOML basic string


def aliases_toml(suggestions: Sequence[AlignSuggestion], *, header: str | None = None) -> str:
    """A config fragment that applies ``suggestions``: ``[aliases]`` plus the ``[transforms]``
    that content matching found (a unit factor, a transpose, a reshape).

    Aliases rename names and keep indices, so one alias covers every indexed key of a name; a
    pair whose indices differ cannot be written as an alias and is left as a comment.

    Example:
        >>> s = AlignSuggestion("rot_deg", "angles", 0.8, ("content",), "scale", "…", scale=math.pi / 180)
        >>> print(aliases_toml([s]))
        [aliases]
        # rot_deg <- angles (0.80, content): …
        "angles" = "rot_deg"
        <BLANKLINE>
        [transforms]
        "rot_deg" = { scale = "180/pi" }
        <BLANKLINE>
    """
    aliases: dict[str, tuple[str, str]] = {}
    comments: list[str] = []
    transforms: list[str] = []
    for s in suggestions:
        rname, ridx, rocc = split_key(s.ref_key)
        cname, cidx, cocc = split_key(s.cand_key)
        note = f"# {s.ref_key} <- {s.cand_key} ({s.confidence:.2f}, {'+'.join(s.by)}): {s.evidence}"
        if ridx != cidx or rocc != cocc:
            comments.append(note + " (indices differ: not expressible as an alias)")
            continue
        if cname != rname:
            if cname in aliases and aliases[cname][0] != rname:
                comments.append(note + f" (conflicts with {cname} = {aliases[cname][0]})")
                continue
            aliases.setdefault(cname, (rname, note))
        steps = []
        if s.relation == "transpose" and s.permute is not None:
            inverse = [int(a) for a in np.argsort(s.permute)]
            steps.append(f"permute = {inverse}")
        if s.relation == "reshape" and s.ref_shape is not None:
            steps.append(f"reshape = {list(s.ref_shape)}")
        if s.scale is not None and s.scale != 1.0:
            steps.append(f"scale = {_toml_str(_scale_text(1.0 / s.scale))}")
        if steps:
            transforms.append(f"{_toml_str(s.ref_key)} = {{ {', '.join(steps)} }}")
    out = [header] if header else []
    out.append("[aliases]")
    for cname, (rname, note) in aliases.items():
        out += [note, f"{_toml_str(cname)} = {_toml_str(rname)}"]
    out += comments
    out.append("")
    if transforms:
        out += ["[transforms]"] + transforms + [""]
    return "\n".join(out)


def alignment_hint(result, config: str | None, limit: int = 5) -> list[str]:
    """A few lines proposing counterparts for the stages of a diff ``result`` present on one side
    only (``[]`` if none): what ``parity diff`` prints after its table.

    >>> alignment_hint(parity.compare_traces("ref.trace", "ref.trace"), None)
    []
    """
    if not (result.missing and result.extra):
        return []
    suggestions = suggest_alignment(result.ref_path, result.cand_path, config, max_stage_bytes=64 << 20,
                                    min_confidence=0.6)
    if not suggestions:
        return []
    lines = [f"hint: {len(suggestions)} unmatched stage(s) look like pairs "
             f"(parity align {result.ref_path} {result.cand_path} --write aliases.toml saves them):"]
    lines += [f"  {s.describe()}" for s in suggestions[:limit]]
    if len(suggestions) > limit:
        lines.append(f"  … and {len(suggestions) - limit} more (parity align lists them all)")
    return lines
