"""The parity pytest plugin (entry point ``pytest11``, active once parity is installed).

Gives every test a ``parity_trace`` fixture that records stages and checks them against a
golden trace kept beside the test file::

    def test_forward(parity_trace):
        with parity_trace:                  # tap() calls inside are recorded
            model_forward(x)                # instrumented with parity.tap(...)
        parity_trace.check(rtol=1e-5)       # golden: tests/test_model/test_forward.trace

    def test_two_goldens(parity_trace):
        with parity_trace.record():
            parity.tap("y", f(x))
        parity_trace.check(golden="f_small")

Options: ``pytest --parity-update`` writes or refreshes the goldens instead of comparing (the
terminal summary lists them); ini ``parity_golden_max_bytes`` (default 2 MiB) bounds a golden.
On failure the obtained trace is written beside the golden (``NAME.obtained.trace``) and the
message names the first divergent stage, the number of elements outside tolerance, the worst
element and where the evidence is.

This module imports nothing heavy at pytest start-up: parity loads when a test uses the fixture.
"""

from __future__ import annotations

import os
import re
from typing import Any

import pytest

def pytest_addoption(parser: pytest.Parser) -> None:
    """Add ``--parity-update`` and the ini option ``parity_golden_max_bytes`` (default 2 MiB).

    >>> config = getfixture("pytestconfig")  # a pytest run with this plugin loaded
    >>> config.getoption("--parity-update"), config.getini("parity_golden_max_bytes")
    (False, '2097152')
    """
    group = parser.getgroup("parity", "parity golden traces")
    group.addoption("--parity-update", action="store_true", default=False,
                    help="write or refresh golden traces instead of comparing against them.")
    parser.addini("parity_golden_max_bytes", "largest golden trace parity writes (bytes; default 2 MiB)",
                  default=str(2 << 20))


def pytest_configure(config: pytest.Config) -> None:
    """Tell :mod:`parity.testing` whether this run writes goldens (``--parity-update``).

    >>> from parity import testing
    >>> pytest_configure(getfixture("pytestconfig"))  # this run was not given --parity-update
    >>> testing.SESSION["update"]
    False
    """
    import sys

    update = bool(config.getoption("--parity-update", default=False))
    if update or "parity.testing" in sys.modules:  # a plain pytest run never imports parity here
        from parity import testing

        testing.SESSION["update"] = update


def pytest_unconfigure(config: pytest.Config) -> None:
    """Forget the run's ``--parity-update`` (later calls fall back to ``PARITY_UPDATE_GOLDENS``).

    >>> from parity import testing
    >>> config = getfixture("pytestconfig")
    >>> pytest_unconfigure(config); testing.SESSION["update"] is None
    True
    >>> pytest_configure(config)  # back to this run's setting
    """
    import sys

    testing = sys.modules.get("parity.testing")
    if testing is not None:
        testing.SESSION["update"] = None


class ParityTrace:
    """A trace recorded by one test, and its check against the test's golden.

    Attributes:
        path: where the obtained trace is recorded (in the test's temporary directory).
        golden: the default golden (``<test dir>/<module>/<test name>.trace``).

    >>> t = getfixture("parity_trace")
    >>> with t:
    ...     _ = parity.tap("y", np.arange(3.0))
    >>> parity.load_trace(t.path).keys(), os.path.basename(t.path)
    (['y'], 'obtained.trace')
    """

    def __init__(self, request: pytest.FixtureRequest, tmp_path: Any):
        self._request = request
        self.path = os.path.join(os.fspath(tmp_path), "obtained.trace")
        name = re.sub(r"[^A-Za-z0-9_.+-]+", "_", request.node.name).strip("._") or "golden"
        self._default = name
        self._recording: Any = None
        from parity.testing import golden_path

        self.golden = golden_path(request.node.path, name)

    def record(self, **kwargs: Any) -> Any:
        """``parity.record(self.path, **kwargs)``: a context manager recording every tap inside."""
        import parity

        kwargs.setdefault("meta", {"test": self._request.node.nodeid})
        return parity.record(self.path, **kwargs)

    def __enter__(self) -> Any:
        self._recording = self.record()
        return self._recording.__enter__()

    def __exit__(self, *exc: Any) -> Any:
        recording, self._recording = self._recording, None
        return recording.__exit__(*exc)

    def check(self, golden: str | None = None, **tolerances: Any) -> Any:
        """Compare the recorded trace with the golden (``golden``: a name beside the test file).

        Tolerances and options are those of :func:`parity.testing.assert_parity`.
        """
        from parity.testing import assert_parity, golden_path

        config = self._request.config
        target = self.golden if golden is None else golden_path(self._request.node.path, golden)
        tolerances.setdefault("max_golden_bytes", int(config.getini("parity_golden_max_bytes")))
        return assert_parity(self.path, target, **tolerances)  # update: as --parity-update says


@pytest.fixture
def parity_trace(request: pytest.FixtureRequest, tmp_path: Any) -> ParityTrace:
    """Record stages in this test and check them against its golden trace (see :class:`ParityTrace`).

    >>> t = getfixture("parity_trace")  # in a test: def test_forward(parity_trace): ...
    >>> os.path.relpath(t.golden, os.path.dirname(__file__))
    'pytest_plugin/parity.pytest_plugin.parity_trace.trace'
    """
    return ParityTrace(request, tmp_path)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """List the goldens ``--parity-update`` wrote, in a "parity goldens" section.

    >>> from parity import testing
    >>> class Reporter:
    ...     def section(self, title): print("==", title, "==")
    ...     def write_line(self, line): print(line)
    >>> config = getfixture("pytestconfig")
    >>> testing.SESSION["updated"].append(testing.GoldenResult("created", str(config.rootpath / "tests/t/f.trace")))
    >>> pytest_terminal_summary(Reporter(), 0, config)
    == parity goldens ==
    created: tests/t/f.trace
    """
    import sys

    testing = sys.modules.get("parity.testing")  # imported only if some test used it
    updated = testing.SESSION["updated"] if testing is not None else []
    if updated:
        terminalreporter.section("parity goldens")
        for result in updated:
            terminalreporter.write_line(f"{result.action}: {os.path.relpath(result.golden, str(config.rootpath))}")
        del updated[:]
