"""The CLI under hostile traces: `parity diff` and `parity show` exit 0, 1 or 2, never 3.

A mutated data byte may legitimately read as a divergence (exit 1: `load_trace` does not
re-checksum; `show --verify` does); a mutated manifest or header must be exit 2 naming the trace.
"""

import os
import shutil

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import parity
from parity.cli import EXIT_ERROR, main

from .harness import fuzz_settings

_SEED: dict[str, str] = {}


def _seed(tmp_root: str) -> str:
    """One small valid trace (several dtypes, a text stage), recorded once per session."""
    if "path" not in _SEED:
        path = os.path.join(tmp_root, "seed.trace")
        with parity.record(path, meta={"impl": "seed"}):
            parity.tap("x", np.arange(6.0).reshape(2, 3), axes=("a", "b"))
            parity.tap("h", np.linspace(-1, 1, 8, dtype=np.float16))
            parity.tap("n", np.int32(7))
            parity.tap("method", "lbfgs")
            for i in range(3):
                parity.tap("e", float(i), it=i)
        _SEED["path"] = path
    return _SEED["path"]


def _files(trace: str) -> list[str]:
    return sorted(os.path.relpath(os.path.join(dp, f), trace) for dp, _, fs in os.walk(trace) for f in fs)


mutation = st.tuples(st.integers(0, 10**6), st.integers(0, 10**6), st.binary(min_size=0, max_size=8),
                     st.sampled_from(["flip", "truncate", "insert", "replace"]))


@fuzz_settings(30)
@given(mutation)
def test_diff_and_show_never_exit_3(tmp_path_factory, capsys, mut):
    root = str(tmp_path_factory.getbasetemp())
    seed = _seed(root)
    case = str(tmp_path_factory.mktemp("case") / "cand.trace")
    shutil.copytree(seed, case)
    files = _files(case)
    which, where, payload, kind = mut
    target = os.path.join(case, files[which % len(files)])
    data = bytearray(open(target, "rb").read())
    pos = where % (len(data) + 1)
    if kind == "flip" and data:
        data[pos % len(data)] ^= 0xFF
    elif kind == "truncate":
        del data[pos:]
    elif kind == "insert":
        data[pos:pos] = payload
    else:
        data[pos:pos + len(payload)] = payload
    with open(target, "wb") as f:
        f.write(bytes(data))
    for argv in (["diff", seed, case], ["show", case, "--verify"]):
        code = main(argv)
        out = capsys.readouterr()
        text = out.out + out.err
        assert code in (0, 1, EXIT_ERROR), f"{argv} exited {code}: {text[-2000:]}"
        assert "Traceback" not in text
        if code == EXIT_ERROR:
            assert "cand.trace" in text, text[-2000:]
