"""``parity contract new``: a contract whose claims are a trace pair's stages at the tolerances
that hold now."""

from __future__ import annotations

import math
import os
import re
from typing import Any

from ..errors import UsageError

__all__ = ["scaffold_contract", "nice_ceil"]


def nice_ceil(x: float) -> float:
    """The smallest of 1, 2, 5 × 10^k that is at least ``x`` (0 stays 0).

    Example:
        >>> nice_ceil(0.0031), nice_ceil(2e-7), nice_ceil(5.0), nice_ceil(0.0)
        (0.005, 2e-07, 5.0, 0.0)
    """
    if x <= 0 or not math.isfinite(x):
        return 0.0 if x <= 0 else x
    k = math.floor(math.log10(x))
    for base in (1, 2, 5, 10):
        v = float(f"{base}e{k}")
        if v >= x:
            return v
    return float(f"1e{k + 1}")


def _ident(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._:-]+", "-", text).strip("-.:_")
    return (s or "stage")[:190]


def _rel(path: str, root: str) -> str:
    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(root))
    if rel.startswith(".."):
        raise UsageError(f"{path} is outside --root {root}; contract evidence paths are relative to the repository root.")
    return rel.replace(os.sep, "/")


def scaffold_contract(ref: str, cand: str, *, root: str = ".", config: str | None = None,
                      contract_id: str | None = None) -> dict[str, Any]:
    """Compare ``ref`` and ``cand`` and write one claim per compared stage, at a tolerance that holds.

    A stage within its current tolerance keeps it (status ``discharged``). A stage outside it gets
    ``rtol: 0`` and ``atol`` rounded up (1, 2, 5 × 10^k) from its max absolute error, then the
    pair is compared again at those tolerances to confirm; a stage that cannot hold at any
    tolerance (a NaN or Inf mismatch, a cosine floor from the config) stays ``proposed`` with the
    reason. Stages on one side only are listed in the description.

    Returns:
        The contract as a dict in our schema (write it with :func:`~parity.contracts.emit.dump_yaml`).

    Example:
        >>> import numpy as np, tempfile, parity
        >>> d = tempfile.mkdtemp(); r, c = os.path.join(d, "r.trace"), os.path.join(d, "c.trace")
        >>> for path, eps in ((r, 0.0), (c, 0.003)):
        ...     with parity.record(path):
        ...         _ = parity.tap("a", np.ones(4)); _ = parity.tap("b", np.ones(4) + eps)
        >>> doc = scaffold_contract(r, c, root=d)
        >>> [(x["id"], x["status"], x["evidence"]["parity"][0].get("atol")) for x in doc["claims"]]
        [('stage-a', 'discharged', 1e-07), ('stage-b', 'discharged', 0.005)]
    """
    from ..localize.divergence import compare_traces
    from ..results import Status

    ref_rel, cand_rel = _rel(ref, root), _rel(cand, root)
    cfg_rel = _rel(config, root) if config else None
    diff = compare_traces(ref, cand, config=config, diagnose=False)
    holds = (Status.PASS, Status.EXPECTED)
    plan, loosened = _plan(diff, holds)
    if loosened:  # confirm the loosened stages hold at the tolerances proposed for them
        again = compare_traces(ref, cand, config=config, stages={_glob_literal(k): v for k, v in loosened.items()},
                               diagnose=False)
        for s in again.stages:
            if s.key in loosened and s.status not in holds:
                loosened[s.key] = {}
    evidence: dict[str, Any] = {"ref": ref_rel, "cand": cand_rel}
    if cfg_rel:
        evidence["config"] = cfg_rel
    claims = _claims(plan, loosened, evidence)
    one_sided = [s.key for s in diff.stages if s.ref is None or s.cand is None]
    desc = (f"Scaffolded by `parity contract new` from {ref_rel} (reference) and {cand_rel} (candidate): "
            f"{len(claims)} compared stages, each at the tolerance that held when it was written.")
    if one_sided:
        desc += f" Stages on one side only (no claim): {', '.join(one_sided[:20])}" + (" ..." if len(one_sided) > 20 else "") + "."
    doc: dict[str, Any] = {"parity_contract": 1,
                           "id": contract_id or _ident(f"{os.path.basename(ref_rel)}-vs-{os.path.basename(cand_rel)}"),
                           "version": "1", "description": desc, "claims": claims}
    return doc


def _glob_literal(key: str) -> str:
    """``key`` as a stage pattern that matches only itself (glob characters bracketed)."""
    return re.sub(r"([*?\[\]])", r"[\1]", key)


_Plan = list[tuple[str, dict[str, Any], str | None]]


def _plan(diff: Any, holds: tuple[str, ...]) -> tuple[_Plan, dict[str, dict[str, float]]]:
    """``(key, tolerance fields, why it cannot hold or None)`` per compared stage, and the stages
    whose tolerance had to be loosened (``rtol`` 0, ``atol`` rounded up from the max error).
    ``holds``: the statuses of a stage within its tolerance."""
    loosened: dict[str, dict[str, float]] = {}
    plan: _Plan = []
    for s in diff.stages:
        if s.ref is None or s.cand is None:
            continue
        tol = s.tolerance.to_dict() if s.tolerance is not None else {}
        note = None
        if s.status in holds:
            fields = {k: tol[k] for k in ("rtol", "atol", "cosine_min", "sqnr_min_db") if k in tol}
        else:
            m = s.metrics
            if m is None or m.nan_mismatch or m.inf_mismatch or not math.isfinite(m.max_abs_err):
                fields = {k: tol[k] for k in ("rtol", "atol") if k in tol}
                note = (f"does not hold at any tolerance: {m.nan_mismatch} NaN and {m.inf_mismatch} Inf mismatches"
                        if m is not None else f"cannot be compared ({s.problem or s.message})")
            else:
                fields = {"rtol": 0.0, "atol": max(nice_ceil(m.max_abs_err), 0.0)}
                for k in ("cosine_min", "sqnr_min_db"):
                    if k in tol:
                        fields[k] = tol[k]
                loosened[s.key] = fields
        plan.append((s.key, fields, note))
    return plan, loosened


def _claims(plan: _Plan, loosened: dict[str, dict[str, float]], evidence: dict[str, Any]) -> list[dict[str, Any]]:
    """One claim per planned stage (unique ids ``stage-KEY``), ``discharged`` when it holds."""
    claims: list[dict[str, Any]] = []
    used: set[str] = set()
    for key, fields, note in plan:
        cid = base = "stage-" + _ident(key)
        n = 2
        while cid in used:
            cid, n = f"{base}-{n}", n + 1
        used.add(cid)
        if key in loosened and not loosened[key]:
            note = "does not hold even with atol at its max error (a cosine or SQNR floor fails)"
        ev: dict[str, Any] = {**evidence, **fields, "stages": [_glob_literal(key)]}
        tol_text = ", ".join(f"{k} {v:g}" for k, v in fields.items())
        claim: dict[str, Any] = {"id": cid, "statement": f"stage {key} of the candidate matches the reference within {tol_text}",
                                 "status": "proposed" if note else "discharged"}
        if note:
            claim["statement"] = f"stage {key} of the candidate matches the reference"
        claim["evidence"] = {"parity": [ev]}
        if note:
            claim["evidence"]["notes"] = [note]
        claims.append(claim)
    return claims
