"""Bisection over history: the first revision at which parity (or one stage) broke.

:func:`bisect` takes a good and a bad revision of a git repository, a reference trace and a
capture command, and binary-searches the revisions between them. Each tested revision is
checked out in a temporary ``git worktree`` (the user's checkout is never touched), the command
runs there with ``{out}`` replaced by a fresh trace path, and the trace is diffed against the
reference. A command that fails, times out or writes no readable trace marks the revision
"skip", as in ``git bisect``: the search then tries a neighbour. Only the revisions on the
ancestry path from good to bad are searched, in first-parent order.

The number of captures is at most ``ceil(log2(n))`` for ``n`` revisions after the good one (plus
one per skipped revision).

Example (the CLI):
    parity bisect v1.2 HEAD --reference golden.trace -- python capture.py --out {out}
"""

from __future__ import annotations

import math
import os
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..compare.config import check_overrides
from ..compare.tolerance import glob_to_regex
from ..errors import ParityError, UsageError
from .divergence import compare_traces

__all__ = ["BisectStep", "BisectResult", "bisect", "revisions_between"]


@dataclass(frozen=True)
class BisectStep:
    """One tested revision.

    Attributes:
        revision: the full commit hash; subject: its first message line.
        verdict: ``"good"`` (parity holds for the checked stages), ``"bad"`` or ``"skip"``.
        exit_code: the capture command's exit status (``None`` if it could not start or timed out).
        first_divergence: the first divergent stage of the diff (bad revisions).
        reason: why a revision was skipped, or a one-line summary of the diff.
        seconds: wall time of the capture and the diff.

    >>> BisectStep("ab12", "fix eps", "bad", 0, "layers.1.norm").to_dict()["first_divergence"]
    'layers.1.norm'
    """

    revision: str
    subject: str
    verdict: str
    exit_code: int | None
    first_divergence: str | None = None
    reason: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"revision": self.revision, "subject": self.subject, "verdict": self.verdict,
                "exit_code": self.exit_code, "first_divergence": self.first_divergence, "reason": self.reason,
                "seconds": round(self.seconds, 3)}


@dataclass(frozen=True)
class BisectResult:
    """The outcome of :func:`bisect`.

    Attributes:
        first_bad: the first bad revision, or ``None`` when skipped revisions hide it (then
            ``candidates`` lists the revisions it may be).
        good, bad: the revisions given (full hashes).
        revisions: how many revisions lie after ``good`` up to ``bad``.
        steps: every capture, in the order run.
        candidates: the revisions the first bad one may be (one, when found).

    >>> r = BisectResult("g0", "b9", revisions=9, first_bad="c4", candidates=("c4",))
    >>> r.to_dict()["first_bad"], r.bound
    ('c4', 4)
    """

    good: str
    bad: str
    revisions: int
    first_bad: str | None
    steps: tuple[BisectStep, ...] = ()
    candidates: tuple[str, ...] = ()
    first_bad_subject: str = ""
    first_divergence: str | None = None

    @property
    def captures(self) -> int:
        """Number of captures run."""
        return len(self.steps)

    @property
    def bound(self) -> int:
        """``ceil(log2(n))``: the captures a search without skips needs at most."""
        return math.ceil(math.log2(self.revisions)) if self.revisions > 1 else 0

    def to_dict(self) -> dict[str, Any]:
        return {"schema": "parity.bisect", "schema_version": 1, "good": self.good, "bad": self.bad,
                "revisions": self.revisions, "first_bad": self.first_bad, "first_bad_subject": self.first_bad_subject,
                "first_divergence": self.first_divergence, "candidates": list(self.candidates),
                "captures": self.captures, "bound": self.bound, "steps": [s.to_dict() for s in self.steps]}


def _git(repo: str, *args: str) -> str:
    try:
        out = subprocess.run(["git", "-C", repo, *args], capture_output=True, text=True, timeout=120)
    except FileNotFoundError as e:
        raise UsageError("parity bisect needs git on the PATH.") from e
    if out.returncode != 0:
        raise UsageError(f"git {' '.join(args)} failed: {out.stderr.strip() or out.stdout.strip()}", path=repo)
    return out.stdout


def revisions_between(repo: str, good: str, bad: str) -> list[str]:
    """Full hashes after ``good`` up to ``bad`` (inclusive), oldest first, on the ancestry path.

    Raises:
        UsageError: not a git repository, an unknown revision, or ``good`` is not an ancestor of ``bad``.

    >>> revisions_between(".", "HEAD", "HEAD")
    Traceback (most recent call last):
    parity.errors.UsageError: ...
    """
    g = _git(repo, "rev-parse", "--verify", f"{good}^{{commit}}").strip()
    b = _git(repo, "rev-parse", "--verify", f"{bad}^{{commit}}").strip()
    if subprocess.run(["git", "-C", repo, "merge-base", "--is-ancestor", g, b]).returncode != 0:
        raise UsageError(f"{good} is not an ancestor of {bad}; give an older good revision.", path=repo)
    revs = _git(repo, "rev-list", "--reverse", "--first-parent", "--ancestry-path", f"{g}..{b}").split()
    if not revs:
        raise UsageError(f"no revision lies between {good} and {bad}.", path=repo)
    return revs


def _subject(repo: str, rev: str) -> str:
    return _git(repo, "log", "-1", "--format=%s", rev).strip()


Check = Callable[[str], tuple[str, str | None, str]]


def _capture(repo: str, rev: str, command: Sequence[str], workdir: str, timeout: float | None,
             check: Check) -> BisectStep:
    start = time.monotonic()
    subject = _subject(repo, rev)
    tree = os.path.join(workdir, f"wt-{rev[:12]}")
    out = os.path.join(workdir, f"{rev[:12]}.trace")
    _git(repo, "worktree", "add", "--detach", "--force", tree, rev)
    try:
        argv = [a.replace("{out}", out) for a in command]
        try:
            proc = subprocess.run(argv, cwd=tree, capture_output=True, timeout=timeout)
        except FileNotFoundError:
            return BisectStep(rev, subject, "skip", None, reason=f"cannot run {argv[0]!r}", seconds=time.monotonic() - start)
        except subprocess.TimeoutExpired:
            return BisectStep(rev, subject, "skip", None, reason=f"timed out after {timeout:g} s",
                              seconds=time.monotonic() - start)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
            return BisectStep(rev, subject, "skip", proc.returncode, reason=f"capture exited {proc.returncode}: {tail[0][:200]}",
                              seconds=time.monotonic() - start)
        verdict, first, reason = check(out)
        return BisectStep(rev, subject, verdict, proc.returncode, first, reason, time.monotonic() - start)
    finally:
        subprocess.run(["git", "-C", repo, "worktree", "remove", "--force", tree], capture_output=True)
        shutil.rmtree(tree, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)


def _checker(reference: str, stage: str | None, config: Any, tolerances: dict[str, Any]) -> Check:
    rx = glob_to_regex(stage) if stage else None

    def check(trace: str) -> tuple[str, str | None, str]:
        if not os.path.isdir(trace):
            return "skip", None, "the capture wrote no trace at {out}"
        try:
            diff = compare_traces(reference, trace, config=config, **tolerances)
        except ParityError as e:
            return "skip", None, f"cannot compare: {e}"
        if rx is None:
            first = diff.first_divergence
            if diff.passed:
                return "good", None, "parity holds"
            return "bad", first.key if first else None, (f"first divergence {first.key}" if first else diff.verdict.replace("_", " "))
        chosen = [s for s in diff.stages if rx.match(s.key)]
        if not chosen:
            return "bad", None, f"no stage matches {stage}"
        bad = [s for s in chosen if not s.passed]
        if bad:
            return "bad", bad[0].key, f"{bad[0].key} {bad[0].status}"
        return "good", None, f"{len(chosen)} stage(s) matching {stage} hold"

    return check


def bisect(repo: str | os.PathLike[str], good: str, bad: str, reference: str | os.PathLike[str],
           command: Sequence[str] | str, *, stage: str | None = None, config: Any = None, timeout: float | None = None,
           on_step: Callable[[BisectStep], None] | None = None, **tolerances: Any) -> BisectResult:
    """Find the first revision between ``good`` and ``bad`` whose capture diverges from ``reference``.

    Args:
        repo: a directory inside the git repository.
        good, bad: revisions (any git revision syntax); ``good`` must be an ancestor of ``bad``.
            Both are trusted, as in ``git bisect``: neither is captured.
        reference: the reference trace.
        command: the capture command (argv list, or a string split like a shell would); ``{out}``
            stands for the trace path to write. It runs in a worktree of the tested revision.
        stage: a stage glob: only these stages decide good/bad (default: the whole diff).
        config, **tolerances: as for :func:`parity.compare_traces` (``rtol``, ``atol``... any of
            :data:`parity.compare.config.OVERRIDES`), checked before the first capture.
        timeout: seconds per capture (a capture that runs longer is "skip").
        on_step: called after each capture (progress).

    Raises:
        UsageError: not a git repository, unknown revisions, an empty command, no ``{out}``, an
            unknown comparison option.

    >>> bisect(".", "HEAD~1", "HEAD", "ref.trace", ["python", "capture.py"])
    Traceback (most recent call last):
    parity.errors.UsageError: the capture command must contain {out}, the trace path to write.
    >>> bisect(".", "HEAD~1", "HEAD", "ref.trace", "python capture.py {out}", rtoll=1)
    Traceback (most recent call last):
    parity.errors.UsageError: unknown comparison option 'rtoll'; ...
    """
    check_overrides(tolerances)
    repo = os.path.abspath(os.fspath(repo))
    reference = os.path.abspath(os.fspath(reference))
    argv = shlex.split(command) if isinstance(command, str) else list(command)
    if not argv:
        raise UsageError("parity bisect needs a capture command after --.")
    if not any("{out}" in a for a in argv):
        raise UsageError("the capture command must contain {out}, the trace path to write.")
    if not os.path.isdir(os.path.join(reference)):
        raise UsageError("no such reference trace.", path=reference)
    top = _git(repo, "rev-parse", "--show-toplevel").strip()
    revs = revisions_between(top, good, bad)
    check = _checker(reference, stage, config, tolerances)
    steps: list[BisectStep] = []
    verdicts: dict[int, str] = {}
    lo, hi = -1, len(revs) - 1  # revs[lo] good (-1: the good revision itself), revs[hi] bad
    with tempfile.TemporaryDirectory(prefix="parity-bisect-") as workdir:
        try:
            while hi - lo > 1:
                mid = _next_probe(lo, hi, verdicts)
                if mid is None:
                    break  # every revision in (lo, hi) was skipped
                step = _capture(top, revs[mid], argv, workdir, timeout, check)
                steps.append(step)
                verdicts[mid] = step.verdict
                if on_step is not None:
                    on_step(step)
                if step.verdict == "good":
                    lo = mid
                elif step.verdict == "bad":
                    hi = mid
        finally:
            subprocess.run(["git", "-C", top, "worktree", "prune"], capture_output=True)
    candidates = tuple(revs[i] for i in range(lo + 1, hi + 1))
    first = revs[hi] if len(candidates) == 1 else None
    bad_step = next((s for s in steps if s.revision == first), None)
    return BisectResult(_git(top, "rev-parse", f"{good}^{{commit}}").strip(), revs[-1], len(revs), first,
                        tuple(steps), candidates, _subject(top, first) if first else "",
                        bad_step.first_divergence if bad_step else None)


def _next_probe(lo: int, hi: int, verdicts: dict[int, str]) -> int | None:
    """The untested, unskipped index nearest the middle of (lo, hi), or None."""
    mid = (lo + hi) // 2
    for off in range(0, hi - lo):
        for i in (mid + off, mid - off):
            if lo < i < hi and verdicts.get(i) != "skip" and i not in verdicts:
                return i
    return None
