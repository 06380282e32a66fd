"""Fixtures for the report tests: a fixed synthetic diff and traces recorded from fixed data."""

import os

import numpy as np
import pytest

import parity
from parity.compare.diff import Diagnosis, SideInfo, StageDiff, Status, TraceDiff
from parity.compare.metrics import StageMetrics
from parity.compare.tolerance import Tolerance

GOLDEN = os.path.join(os.path.dirname(__file__), "golden")


def metrics(**kw):
    """A StageMetrics of a passing f32 stage of 64 elements, fields overridable."""
    base = dict(count=64, mismatched=0, mismatched_fraction=0.0, max_abs_err=1e-7, max_abs_index=(0, 3), max_abs_ref=1.5,
                max_abs_cand=1.5000001, max_rel_err=6.7e-8, max_rel_index=(0, 3), max_rel_ref=1.5, max_rel_cand=1.5000001,
                rms_err=2e-8, cosine=1.0, sqnr_db=140.0, max_ulp=1.0, worst_fail_index=None, ref_nan=0, cand_nan=0,
                ref_inf=0, cand_inf=0, nan_mismatch=0, inf_mismatch=0, rtol=1.3e-6, atol=1e-5)
    base.update(kw)
    return StageMetrics(**base)


def side(key, shape, pos, dtype="F32", axes=None):
    return SideInfo(key, dtype, tuple(shape), tuple(axes) if axes else None, None, pos)


def synthetic_diff():
    """Every status and problem kind, fixed numbers, paths that do not exist (no arrays)."""
    tol = Tolerance(1.3e-6, 1e-5)
    bad = metrics(mismatched=40, mismatched_fraction=0.625, max_abs_err=0.25, max_abs_index=(1, 2), max_abs_ref=0.5,
                  max_abs_cand=0.75, max_rel_err=0.5, max_rel_index=(1, 2), rms_err=0.1, cosine=0.97, sqnr_db=12.5,
                  max_ulp=4194304.0, worst_fail_index=(1, 2))
    stages = (
        StageDiff("embedding", Status.PASS, side("embedding", (8, 8), 0), side("embedding", (8, 8), 0), metrics(), tol),
        StageDiff("layers.0.attn_scores", Status.FAIL, side("layers.0.attn_scores", (8, 8), 1),
                  side("layers.0.attn_scores", (8, 8), 1), bad, tol, problem="values",
                  message="40 / 64 elements (62.5%) outside tolerance; greatest absolute difference 0.25 at index (1, 2) "
                          "(up to 1.1e-05 allowed).",
                  notes=("units differ: None vs 'rad'",),
                  diagnoses=(Diagnosis("scale", "candidate = reference × 0.5 (residual 0.1 %)", {"factor": 0.5}),)),
        StageDiff("layers.0.attn_probs", Status.FAIL, side("layers.0.attn_probs", (8, 8), 2),
                  side("layers.0.attn_probs", (8, 8), 2), metrics(mismatched=3, mismatched_fraction=3 / 64,
                                                                   max_abs_err=0.01, cosine=0.999, sqnr_db=40.0), tol,
                  problem="values", message="3 / 64 elements (4.69%) outside tolerance."),
        StageDiff("layers.0.out", Status.FAIL, side("layers.0.out", (8, 8), 3), side("layers.0.out", (4, 16), 3),
                  problem="shape", message="shape (8, 8) != (4, 16) (same element count: declare a transform to map them; "
                                           "parity never flattens silently)."),
        StageDiff("layers.0.dropout", Status.EXPECTED, side("layers.0.dropout", (8, 8), 4), side("layers.0.dropout", (8, 8), 4),
                  metrics(mismatched=64, mismatched_fraction=1.0, max_abs_err=2.0, cosine=0.5, sqnr_db=0.5), tol,
                  problem="values", message="64 / 64 elements (100%) outside tolerance.",
                  expected_reason="dropout is random | by design <b>"),
        StageDiff("final_norm", Status.MISSING, side("final_norm", (8,), 5), None, message="present in the reference only."),
        StageDiff("debug.extra", Status.EXTRA, None, side("debug.extra", (2,), 5), message="present in the candidate only."),
    )
    return TraceDiff("runs/ref.trace", "runs/cand.trace", stages, strict=False, ref_complete=True, cand_complete=False,
                     ignored=1, config_source="parity.toml", tool_version="0.1.0")


@pytest.fixture
def synth():
    return synthetic_diff()


@pytest.fixture
def fixed_traces(tmp_path, monkeypatch):
    """Two traces from fixed data: the first divergence is the 2-D stage 'layers.0.mlp' (a few bumped elements).

    The current directory is ``tmp_path`` and the paths are relative, so rendered text does not
    depend on where the temporary directory is (long paths would wrap differently)."""
    monkeypatch.chdir(tmp_path)
    x = np.linspace(-1.0, 1.0, 48, dtype=np.float32).reshape(6, 8)
    y = (x * 3 + 0.5).astype(np.float32)
    y_bad = y.copy()
    y_bad[2, 5] += 0.5
    y_bad[4, 1] -= 0.25
    y_bad[0, 7] += 0.125
    z = np.tanh(y).astype(np.float32)
    z_bad = np.tanh(y_bad).astype(np.float32)
    paths = []
    for name, (yy, zz) in (("ref.trace", (y, z)), ("cand.trace", (y_bad, z_bad))):
        path = name
        with parity.record(path, command=["fixed"]):
            parity.tap("embedding", x, axes=("seq", "hidden"))
            parity.tap("layers.0.mlp", yy, axes=("seq", "hidden"))
            parity.tap("layers.0.act", zz, axes=("seq", "hidden"))
            parity.tap("head", zz.sum(axis=1))
        paths.append(path)
    return paths[0], paths[1]


def normalise(text, tmp_path):
    return text.replace(str(tmp_path), "<tmp>")


def check_golden(name, text):
    """Compare with tests/report/golden/NAME; PARITY_UPDATE_GOLDEN=1 rewrites the file instead."""
    path = os.path.join(GOLDEN, name)
    if os.environ.get("PARITY_UPDATE_GOLDEN"):
        os.makedirs(GOLDEN, exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    with open(path, encoding="utf-8") as f:
        expected = f.read()
    assert text == expected, f"{name} differs from the golden file (PARITY_UPDATE_GOLDEN=1 rewrites it after review)"
