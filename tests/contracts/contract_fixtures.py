"""Small fixture projects (Python and Rust) that contracts cite."""

import os
import textwrap

import numpy as np
import pytest

import parity


def write(root, rel, text):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(textwrap.dedent(text).lstrip("\n"))
    return path


@pytest.fixture
def py_project(tmp_path):
    """A Python project: src/scaler/ops.py, src/scaler/io.py and tests/test_ops.py."""
    root = str(tmp_path / "pyproj")
    write(root, "src/scaler/__init__.py", "")
    write(root, "src/scaler/ops.py", """
        THRESHOLD = 0.5

        def scale(x, k=2.0):
            return x * k

        class Normalizer:
            eps = 1e-6

            def apply(self, x):
                return x / (abs(x) + self.eps)
        """)
    write(root, "src/scaler/io.py", """
        def load_rows(path):
            return []
        """)
    write(root, "tests/test_ops.py", """
        import pytest

        def test_scale():
            assert 2 * 3 == 6

        @pytest.mark.parametrize("k", [1, 2])
        def test_scale_k(k):
            assert k > 0

        class TestNormalizer:
            def test_apply(self):
                assert True
        """)
    write(root, "pytest.ini", "[pytest]\n")
    return root


@pytest.fixture
def rust_project(tmp_path):
    """A Rust crate: src/diff.rs (Loader with load_tensor_apr_aprt) and src/lib.rs."""
    root = str(tmp_path / "rsproj")
    write(root, "Cargo.toml", '[package]\nname = "fixture"\nversion = "0.1.0"\n')
    write(root, "src/lib.rs", "pub mod diff;\npub mod stage;\n")
    write(root, "src/diff.rs", """
        pub struct Loader { path: String }

        impl Loader {
            pub fn load_tensor_apr_aprt(&self) -> Vec<f32> {
                let brace = "{"; // a brace in a string must not confuse the text rule
                vec![]
            }
        }

        pub fn run_diff(a: &[f32], b: &[f32]) -> f32 { 0.0 }
        """)
    write(root, "src/stage.rs", """
        pub fn parse_stage_list(s: &str) -> Vec<String> { vec![] }
        """)
    return root


def record(path, stages):
    with parity.record(path):
        for k, v in stages.items():
            parity.tap(k, v)
    return path


@pytest.fixture
def trace_pair(py_project):
    """ref.trace and cand.trace under the Python project: 'a' equal, 'b' off by 0.003."""
    x = np.linspace(-1, 1, 16)
    ref = record(os.path.join(py_project, "traces", "ref.trace"), {"a": x, "b": x * 2})
    cand = record(os.path.join(py_project, "traces", "cand.trace"), {"a": x.copy(), "b": x * 2 + 0.003})
    return "traces/ref.trace", "traces/cand.trace"


def contract(root, rel, text):
    return write(root, rel, text)
