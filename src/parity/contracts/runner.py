"""Run the outside world for ``parity contract check``: pytest collection (one subprocess for all
the node ids of a run), and, with ``--run``, the cited tests and commands, each with a timeout."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["WarmPytest", "CommandResult", "PytestOutcome", "collect_pytest", "run_pytest", "run_command", "argv_of"]

_LINE_BUDGET = 60_000  # characters of node ids per pytest invocation (well under any argv limit)
_ERROR_COLLECTING = re.compile(r"^(?:ERROR collecting |ERROR )(\S+?\.py)\b", re.M)
_OUTCOME = re.compile(r"^(PASSED|FAILED|ERROR|XFAIL|XPASS|SKIPPED)\s+(\S+)", re.M)
_TAIL = 2000


@dataclass(frozen=True)
class CommandResult:
    """What a command did: its exit status (None when it timed out or could not start).

    >>> r = run_command(".", "no-such-program --flag", timeout=10)
    >>> r.exit, r.error
    (None, 'cannot start (No such file or directory)')
    """

    command: str
    exit: int | None
    seconds: float
    timed_out: bool = False
    error: str | None = None
    output_tail: str = ""

    def to_dict(self) -> dict:
        return {"command": self.command, "exit": self.exit, "seconds": round(self.seconds, 3),
                "timed_out": self.timed_out, "error": self.error, "output_tail": self.output_tail}

    @classmethod
    def from_dict(cls, d: dict) -> CommandResult:
        return cls(d["command"], d.get("exit"), float(d.get("seconds", 0)), bool(d.get("timed_out")), d.get("error"),
                   d.get("output_tail", ""))


@dataclass(frozen=True)
class PytestOutcome:
    """Per cited node id: ``"ok"`` or a reason it does not hold (not collected, failed...).

    >>> out = collect_pytest(".", ["tests/test_gone.py::test_a"])  # a missing file: pytest is not even started
    >>> out.status, out.invocations
    ({'tests/test_gone.py::test_a': 'test file tests/test_gone.py does not exist'}, 0)
    """

    status: dict[str, str]
    invocations: int
    seconds: float


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.pop("PYTEST_ADDOPTS", None)
    env.pop("PYTEST_CURRENT_TEST", None)
    return env


def _batches(ids: list[str]) -> list[list[str]]:
    out: list[list[str]] = [[]]
    size = 0
    for i in ids:
        if out[-1] and size + len(i) > _LINE_BUDGET:
            out.append([])
            size = 0
        out[-1].append(i)
        size += len(i) + 1
    return [b for b in out if b]


_WARM = """\
import os, sys
if not os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD"):
    try:
        from importlib.metadata import entry_points
        for ep in entry_points(group="pytest11"):
            try:
                ep.load()
            except Exception:
                pass
    except Exception:
        pass
import pytest
args = [a for a in sys.stdin.read().split("\\0") if a]
sys.exit(pytest.main(args) if args else 0)
"""


class WarmPytest:
    """A pytest process started early, so that importing pytest and its plugins (often seconds)
    overlaps the reading of the contracts; it runs one ``pytest.main(args)`` once the node ids are
    known (:meth:`run`), or exits without running anything (:meth:`close`).

    >>> warm = WarmPytest(".")
    >>> warm.proc is not None  # pytest is importing in the background
    True
    >>> warm.close(); warm.proc is None  # nothing was needed after all: stopped, nothing run
    True
    """

    def __init__(self, root: str):
        self.root = root
        try:
            self.proc: subprocess.Popen[str] | None = subprocess.Popen(
                [sys.executable, "-c", _WARM], cwd=root, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True, env=_env())
        except OSError:
            self.proc = None

    def run(self, args: list[str], timeout: float) -> tuple[int | None, str]:
        proc, self.proc = self.proc, None
        if proc is None:
            return _pytest_cold(self.root, args, timeout)
        try:
            out, _ = proc.communicate("\0".join(args), timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
            return None, out or ""
        return proc.returncode, out or ""

    def close(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.kill()
            proc.communicate()


def _pytest(root: str, args: list[str], timeout: float, warm: WarmPytest | None = None) -> tuple[int | None, str]:
    if warm is not None and warm.proc is not None:
        return warm.run(["-p", "no:cacheprovider", f"--rootdir={root}", *args], timeout)
    return _pytest_cold(root, ["-p", "no:cacheprovider", f"--rootdir={root}", *args], timeout)


def _pytest_cold(root: str, args: list[str], timeout: float) -> tuple[int | None, str]:
    cmd = [sys.executable, "-m", "pytest", *args]
    try:
        p = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=timeout, env=_env(),
                           stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode("utf-8", "replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        return None, out
    return p.returncode, p.stdout + p.stderr


def _covered(cited: str, seen: set[str], prefixes: list[str]) -> bool:
    if cited in seen:
        return True
    return any(s.startswith(cited + "::") or s.startswith(cited + "[") for s in prefixes)


def collect_pytest(root: str, ids: Iterable[str], *, timeout: float = 120.0,
                   warm: WarmPytest | None = None) -> PytestOutcome:
    """Check that each pytest node id collects, with one ``pytest --collect-only`` for them all.

    The files the ids name are collected whole (``--continue-on-collection-errors``, so a module
    that fails to import is reported and never hides the others), and each id must name a
    collected test, a parametrized test without its ``[...]`` part, a class, or the file.
    Files that do not exist are reported without running pytest. ``warm`` (a :class:`WarmPytest`
    started earlier) runs the first batch.

    >>> collect_pytest(".", ["tests/test_gone.py"]).status
    {'tests/test_gone.py': 'test file tests/test_gone.py does not exist'}
    """
    t0 = time.perf_counter()
    want = sorted(set(ids))
    status: dict[str, str] = {}
    files: list[str] = []
    for i in want:
        f = i.split("::", 1)[0]
        if not os.path.isfile(os.path.join(root, f)):
            status[i] = f"test file {f} does not exist"
        elif f not in files:
            files.append(f)
    invocations = 0
    seen: set[str] = set()
    broken: dict[str, str] = {}
    for batch in _batches(files):
        invocations += 1
        code, out = _pytest(root, ["--collect-only", "-q", "--continue-on-collection-errors", *batch], timeout, warm)
        if code is None:
            for f in batch:
                broken[f] = f"could not be collected: pytest timed out after {timeout:g} s"
            continue
        seen.update(line.strip() for line in out.splitlines() if "::" in line and " " not in line.strip())
        for f in set(_ERROR_COLLECTING.findall(out)) & set(batch):
            broken[f] = "fails to collect (an import or syntax error in the test module)"
        if code not in (0, 1, 5) and not seen:
            for f in batch:
                broken.setdefault(f, f"could not be collected: pytest --collect-only exited {code}: {out.strip()[-300:]}")
    prefixes = sorted(seen)
    for i in want:
        if i in status:
            continue
        f = i.split("::", 1)[0]
        if f in broken:
            status[i] = f"test file {f} {broken[f]}"
        elif "::" not in i and any(s.startswith(f + "::") for s in prefixes):
            status[i] = "ok"
        elif _covered(i, seen, prefixes):
            status[i] = "ok"
        else:
            status[i] = "does not collect (no such test)"
    return PytestOutcome(status, invocations, time.perf_counter() - t0)


def run_pytest(root: str, ids: Iterable[str], *, timeout: float = 600.0) -> PytestOutcome:
    """Run the node ids (one ``pytest -rA`` for them all); each must pass (skips do not count).

    >>> import os; os.mkdir("tests")
    >>> _ = open("tests/test_t.py", "w").write("def test_ok():\\n    pass\\n\\ndef test_bad():\\n    assert 0\\n")
    >>> run_pytest(".", ["tests/test_t.py::test_ok", "tests/test_t.py::test_bad"]).status
    {'tests/test_t.py::test_bad': 'failed under --run (1 of 1 not passing)', 'tests/test_t.py::test_ok': 'ok'}
    """
    t0 = time.perf_counter()
    want = sorted(set(ids))
    status: dict[str, str] = {}
    invocations = 0
    for batch in _batches(want):
        invocations += 1
        code, out = _pytest(root, ["-q", "-rA", "--no-header", *batch], timeout)
        if code is None:
            for i in batch:
                status[i] = f"pytest timed out after {timeout:g} s"
            continue
        results: dict[str, list[str]] = {}
        for word, node in _OUTCOME.findall(out):
            results.setdefault(node, []).append(word)
        for i in batch:
            words = [w for node, ws in results.items() if node == i or node.startswith(i + "::") or node.startswith(i + "[")
                     for w in ws]
            bad = [w for w in words if w not in ("PASSED", "XFAIL")]
            if words and not bad:
                status[i] = "ok"
            elif bad:
                status[i] = f"{bad[0].lower()} under --run ({len(bad)} of {len(words)} not passing)"
            else:
                status[i] = f"did not run (pytest exited {code}; skipped or not collected)"
    return PytestOutcome(status, invocations, time.perf_counter() - t0)


def argv_of(command: str) -> list[str]:
    """Split a command line like a shell (no shell runs it); a leading ``python`` or ``python3``
    becomes the running interpreter.

    Example:
        >>> argv_of("python -m pytest -q 'tests/a b.py'")[1:]
        ['-m', 'pytest', '-q', 'tests/a b.py']
    """
    argv = shlex.split(command)
    if argv and argv[0] in ("python", "python3"):
        argv[0] = sys.executable
    return argv


def run_command(root: str, command: str, *, timeout: float, cwd: str | None = None) -> CommandResult:
    """Run one test command under ``root`` (or ``root/cwd``) with a timeout; never through a shell.

    >>> r = run_command(".", "python -c 'import sys; sys.exit(3)'", timeout=30)
    >>> r.exit, r.timed_out, r.error
    (3, False, None)
    """
    t0 = time.perf_counter()
    try:
        argv = argv_of(command)
    except ValueError as e:
        return CommandResult(command, None, 0.0, error=f"cannot be split into arguments ({e})")
    if not argv:
        return CommandResult(command, None, 0.0, error="empty command")
    where = os.path.normpath(os.path.join(root, cwd)) if cwd else root
    try:
        p = subprocess.run(argv, cwd=where, capture_output=True, timeout=timeout, env=_env(), stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        tail = (e.stdout or b"")[-_TAIL:].decode("utf-8", "replace")
        return CommandResult(command, None, time.perf_counter() - t0, timed_out=True, output_tail=tail)
    except OSError as e:
        return CommandResult(command, None, time.perf_counter() - t0, error=f"cannot start ({e.strerror or e})")
    out = (p.stdout + p.stderr)[-_TAIL:].decode("utf-8", "replace")
    return CommandResult(command, p.returncode, time.perf_counter() - t0, output_tail=out)
