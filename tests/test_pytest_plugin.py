"""The pytest plugin: golden traces beside the test file, --parity-update, evidence on failure."""

import os

import numpy as np
import pytest

import parity
from parity.errors import UsageError
from parity.testing import ParityAssertionError, assert_parity, golden_path

pytest_plugins = ["pytester"]

TEST_FILE = """
import numpy as np
import parity

SCALE = {scale}

def test_forward(parity_trace):
    with parity_trace:
        x = parity.tap("x", np.arange(64.0).reshape(8, 8))
        parity.tap("y", np.tanh(x / 10) * SCALE)
    parity_trace.check(rtol=1e-6, atol=0)

def test_named(parity_trace):
    with parity_trace.record():
        parity.tap("z", np.ones(3))
    parity_trace.check(golden="ones")
"""


def write_tests(pytester, scale):
    return pytester.makepyfile(test_model=TEST_FILE.format(scale=scale))


def test_update_then_pass(pytester):
    write_tests(pytester, 1.0)
    missing = pytester.runpytest()
    missing.assert_outcomes(failed=2)
    missing.stdout.fnmatch_lines(["*golden trace *test_model*test_forward.trace does not exist*",
                                  "*pytest --parity-update*"])
    created = pytester.runpytest("--parity-update")
    created.assert_outcomes(passed=2)
    created.stdout.fnmatch_lines(["*parity goldens*", "created: test_model*test_forward.trace",
                                  "created: test_model*ones.trace"])
    assert (pytester.path / "test_model" / "test_forward.trace" / "manifest.json").is_file()
    assert not (pytester.path / "test_model" / "test_forward.obtained.trace").exists()  # evidence cleaned
    pytester.runpytest().assert_outcomes(passed=2)


def test_failure_writes_obtained_trace_and_names_the_stage(pytester):
    write_tests(pytester, 1.0)
    pytester.runpytest("--parity-update").assert_outcomes(passed=2)
    write_tests(pytester, 1.001)
    result = pytester.runpytest()
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines([
        "*parity: stage 'y' diverges from the golden *test_forward.trace*",
        "*63 of 64 elements outside tolerance; max abs error * at [[]7, 7[]]: golden *, obtained *",
        "*tolerance: rtol=1e-06, atol=0*",
        "*obtained trace written to *test_forward.obtained.trace*",
        "*pytest --parity-update*",
    ])
    obtained = pytester.path / "test_model" / "test_forward.obtained.trace"
    assert parity.load_trace(obtained)["y"][7, 7] == pytest.approx(np.tanh(6.3) * 1.001)
    # accepting the change refreshes the golden and removes the evidence
    updated = pytester.runpytest("--parity-update")
    updated.stdout.fnmatch_lines(["updated: test_model*test_forward.trace"])
    assert not obtained.exists()
    pytester.runpytest().assert_outcomes(passed=2)


def test_missing_stage_fails(pytester):
    write_tests(pytester, 1.0)
    pytester.runpytest("--parity-update")
    pytester.makepyfile(test_model="""
import numpy as np, parity
def test_forward(parity_trace):
    with parity_trace:
        parity.tap("x", np.arange(64.0).reshape(8, 8))
    parity_trace.check()
""")
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*1 golden stage(s) not recorded: y*"])


def test_size_guard(pytester):
    pytester.makeini("[pytest]\nparity_golden_max_bytes = 1000\n")
    pytester.makepyfile(test_big="""
import numpy as np, parity
def test_big(parity_trace):
    with parity_trace:
        parity.tap("w", np.zeros(100_000))
    parity_trace.check()
""")
    result = pytester.runpytest("--parity-update")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*over the 1000 B limit*Git LFS*"])
    assert not (pytester.path / "test_big" / "test_big.trace").exists()


def test_assert_parity_without_pytest(tmp_path):
    run = tmp_path / "run.trace"
    with parity.record(run):
        parity.tap("a", np.ones(4))
    golden = tmp_path / "g" / "a.trace"
    with pytest.raises(ParityAssertionError, match="does not exist"):
        assert_parity(run, golden, update=False)
    assert (tmp_path / "g" / "a.obtained.trace").is_dir()
    assert assert_parity(run, golden, update=True).action == "created"
    assert assert_parity(parity.load_trace(run), golden, update=False).action == "passed"
    with parity.record(run):
        parity.tap("b", np.ones(4))
    with pytest.raises(ParityAssertionError, match="nothing compared"):
        assert_parity(run, golden, update=False)


def test_bare_golden_name_resolves_beside_the_caller(tmp_path):
    run = tmp_path / "run.trace"
    with parity.record(run):
        parity.tap("a", np.ones(2))
    res = assert_parity(run, "bare_name_golden", update=True)
    try:
        assert res.golden == golden_path(__file__, "bare_name_golden")
        assert os.path.dirname(res.golden) == os.path.join(os.path.dirname(__file__), "test_pytest_plugin")
    finally:
        import shutil
        shutil.rmtree(os.path.dirname(res.golden))


def test_golden_names_are_not_paths():
    with pytest.raises(UsageError, match="plain file name"):
        golden_path(__file__, "../escape")
