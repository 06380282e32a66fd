"""compare_traces(ref, cand, config=None, **overrides): one schema (CompareConfig), overrides checked
against it, the same flags on every comparing verb, and local= returning the localization."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
from click.testing import CliRunner

import parity
from parity.cli import cli
from parity.compare.config import OVERRIDES, CompareConfig, as_config
from parity.compare.diff import compare_stages
from parity.errors import UsageError
from parity.localize.local import Localization


@pytest.fixture()
def demo(tmp_path):
    from parity.demo import write_demo_traces

    write_demo_traces(tmp_path)
    return str(tmp_path / "ref.trace"), str(tmp_path / "cand.trace"), str(tmp_path / "parity.toml")


def test_the_overrides_are_read_from_the_fields_of_compare_config():
    from_fields = [name for f in dataclasses.fields(CompareConfig) for name in f.metadata["overrides"]]
    assert list(OVERRIDES) == from_fields
    assert {"rtol", "atol", "stages", "aliases", "ignore", "expected", "strict", "rename", "transforms"} <= set(OVERRIDES)
    assert all(OVERRIDES[k] for k in OVERRIDES)  # every override documented
    assert "``rename``" in (parity.compare_traces.__doc__ or "")  # the docstring lists them from the schema
    assert "renames`` ([rename]; rename)" in (CompareConfig.__doc__ or "")


def test_an_unknown_override_is_a_usage_error_naming_it_and_the_valid_ones(demo):
    ref, cand, _ = demo
    for call in (lambda: parity.compare_traces(ref, cand, rtoll=1e-3),
                 lambda: compare_stages(ref, cand, rtol=1e-3, tolerance=1),
                 lambda: CompareConfig().merged(ignores=["x"])):
        with pytest.raises(UsageError) as e:
            call()
        msg = str(e.value)
        assert ("'rtoll'" in msg or "'tolerance'" in msg or "'ignores'" in msg) and "rtol, atol" in msg and "transforms" in msg


def test_overrides_go_on_top_of_the_config_file(demo):
    ref, cand, toml = demo
    cfg = as_config(toml, rtol=1e-2, ignore=["layers.1.*"])
    assert cfg.tolerance.overrides == {"rtol": 1e-2, "atol": 1e-6} and cfg.source == toml
    loose = parity.compare_traces(ref, cand, toml, rtol=1.0, atol=1.0)
    tight = parity.compare_traces(ref, cand, config=toml)
    assert loose.passed and not tight.passed
    none_given = parity.compare_traces(ref, cand, toml, rtol=None, strict=None)  # None leaves a field alone
    assert none_given.to_dict() == tight.to_dict()


def test_every_keyword_call_of_today_still_works(demo):
    ref, cand, toml = demo
    d = parity.compare_traces(ref, cand, config=toml, rtol=1e-4, atol=1e-6, stages={"logits": {"rtol": 1e-2}},
                              aliases={}, ignore=["timing.*"], expected={"layers.1.*": "known"}, strict=False,
                              rename={}, transforms={}, diagnose=True, progress=None, noise_floor=None)
    assert d.first_divergence.key == "layers.0.attn_scores" and d.expected
    assert d.first_divergence.diagnoses  # the front door diagnoses


def test_the_old_import_path_warns_that_it_does_not_diagnose(demo):
    ref, cand, _ = demo
    from parity.compare import compare_traces as old

    with pytest.warns(DeprecationWarning, match="without diagnoses"):
        d = old(ref, cand)
    assert d.first_divergence.key == "layers.0.attn_scores" and d.first_divergence.diagnoses == ()
    assert parity.compare_traces(ref, cand).to_dict()["stages"][0] == d.to_dict()["stages"][0]


def _run(bug: float) -> None:
    h = parity.tap("a", np.linspace(1, 2, 8))
    h = parity.tap("b", h * (1 + bug))
    parity.tap("c", np.exp(h * 20))


def test_local_returns_the_localization(tmp_path):
    p = lambda n: str(tmp_path / n)  # noqa: E731
    with parity.record(p("ref.trace")):
        _run(0.0)
    with parity.record(p("cand.trace")):
        _run(1e-8)
    with parity.replay(p("ref.trace"), p("local.trace")):
        _run(1e-8)
    loc = parity.compare_traces(p("ref.trace"), p("cand.trace"), local=p("local.trace"), rtol=1e-7, atol=0)
    assert isinstance(loc, Localization) and not loc
    assert (loc.plain_first, loc.culprit, loc.stage("c").label, loc.passes) == ("c", "b", "propagated", 2)
    with pytest.raises(UsageError, match="rtoll"):
        parity.compare_traces(p("ref.trace"), p("cand.trace"), local=p("local.trace"), rtoll=1)


@pytest.mark.parametrize("verb, flags", [
    ("diff", ["--config", "--rtol", "--atol", "--strict", "--tolerances"]),
    ("localize", ["--config", "--rtol", "--atol", "--tolerances"]),
    ("bisect", ["--config", "--rtol", "--atol"]),
    ("calibrate", ["--config"]),
])
def test_the_comparing_verbs_share_one_set_of_flags(verb, flags):
    from parity.commands.compare_flags import FLAGS

    out = CliRunner().invoke(cli, [verb, "--help"]).output
    for flag in flags:
        assert flag in out
    for name in ("rtol", "atol"):
        if f"--{name}" in flags:
            assert OVERRIDES[name].split(" (")[0][1:] in " ".join(out.split())  # the override's own doc
    assert set(FLAGS) >= {f.lstrip("-") for f in flags}


def test_diff_flags_reach_compare_traces(demo):
    ref, cand, toml = demo
    r = CliRunner().invoke(cli, ["diff", ref, cand, "--config", toml, "--rtol", "1", "--atol", "1", "--json"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, ["diff", ref, cand, "--config", toml, "--json"])
    assert r.exit_code == 1 and os.path.basename(toml) in r.output
