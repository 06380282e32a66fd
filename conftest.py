"""Root conftest: fixtures for the runnable examples (doctests) in ``src/parity``.

pytest collects every ``>>>`` example in the package (``--doctest-modules`` over ``src/parity``,
see pyproject.toml). Each example runs in a fresh temporary directory that already holds the
demo pair, so examples can name files without creating them first:

- ``ref.trace``  the demo's float64 reference (31 stages)
- ``cand.trace`` the demo's float32 port, first divergent at ``layers.0.attn_scores``
- ``parity.toml`` the demo's tolerance config

``np`` and ``parity`` are already imported in every example's namespace.
"""

import numpy as np
import pytest
from _pytest.doctest import DoctestItem


@pytest.fixture(autouse=True)
def _doctest_workdir(request, tmp_path, monkeypatch):
    if not isinstance(request.node, DoctestItem):
        yield
        return
    import parity
    from parity.demo import write_demo_traces

    monkeypatch.chdir(tmp_path)
    write_demo_traces(tmp_path)
    ns = request.node.dtest.globs
    ns.setdefault("np", np)
    ns.setdefault("parity", parity)
    yield
