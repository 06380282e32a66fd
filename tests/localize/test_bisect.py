"""parity bisect: a generated git history with one breaking commit among many."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

import parity
from parity.cli import main
from parity.errors import UsageError
from parity.localize.bisect import bisect, revisions_between

pytestmark = pytest.mark.skipif(subprocess.run(["git", "--version"], capture_output=True).returncode != 0,
                                reason="needs git")

CAPTURE = """
import sys
import numpy as np
import parity
from params import EPS, SCALE

out = sys.argv[1]
with parity.record(out):
    x = parity.tap("embed", np.linspace(-1, 1, 16))
    h = parity.tap("layers.0.norm", (x - x.mean()) / np.sqrt(x.var() + EPS))
    parity.tap("layers.1.out", np.tanh(h) * SCALE)
"""


def git(repo, *args):
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                   env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@e"})


def make_history(root, n=20, breaking=13, skipped=(), scale_bug=None):
    """A repo of n commits after the first; commit `breaking` changes EPS (a layer-norm bug)."""
    repo = root / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "capture.py").write_text(CAPTURE)
    (repo / "params.py").write_text("EPS = 1e-5\nSCALE = 1.0\n")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "initial")
    eps, scale = "1e-5", "1.0"
    for i in range(1, n + 1):
        if i == breaking:
            eps = "1e-1"
        if scale_bug is not None and i == scale_bug:
            scale = "1.5"
        body = f"EPS = {eps}\nSCALE = {scale}\n# commit {i}\n"
        if i in skipped:
            body += "raise SystemExit(3)  # this revision does not build\n"
        (repo / "params.py").write_text(body)
        (repo / f"notes{i}.txt").write_text(str(i))
        git(repo, "add", ".")
        git(repo, "commit", "-q", "-m", f"commit {i}")
    return repo


def reference_at(repo, rev, out):
    tree = repo.parent / f"ref-{rev}"
    git(repo, "worktree", "add", "--detach", str(tree), rev)
    subprocess.run([sys.executable, "capture.py", str(out)], cwd=tree, check=True,
                   env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    git(repo, "worktree", "remove", "--force", str(tree))
    return out


def command():
    return [sys.executable, "capture.py", "{out}"]


@pytest.fixture(autouse=True)
def _pythonpath(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(sys.path))


def test_finds_the_breaking_commit_in_log_n_captures(tmp_path):
    repo = make_history(tmp_path, n=20, breaking=13)
    ref = reference_at(repo, "main~20", tmp_path / "golden.trace")
    status_before = subprocess.run(["git", "-C", str(repo), "status", "--porcelain"], capture_output=True, text=True).stdout
    result = bisect(repo, "main~20", "main", ref, command())
    revs = revisions_between(str(repo), "main~20", "main")
    assert result.revisions == 20 and result.first_bad == revs[12]
    assert result.first_bad_subject == "commit 13"
    assert result.first_divergence == "layers.0.norm"  # the stage the bug is in
    assert result.captures <= math.ceil(math.log2(20)) + 1
    assert all(s.verdict in ("good", "bad") for s in result.steps)
    # the user's checkout is untouched and no worktree is left behind
    assert subprocess.run(["git", "-C", str(repo), "status", "--porcelain"], capture_output=True, text=True).stdout == status_before
    worktrees = subprocess.run(["git", "-C", str(repo), "worktree", "list"], capture_output=True, text=True).stdout
    assert len(worktrees.strip().splitlines()) == 1


def test_skipped_revisions_are_stepped_around(tmp_path):
    repo = make_history(tmp_path, n=16, breaking=9, skipped=(8, 10))
    ref = reference_at(repo, "main~16", tmp_path / "golden.trace")
    result = bisect(repo, "main~16", "main", ref, command())
    subjects = {s.subject: s.verdict for s in result.steps}
    assert result.first_bad is None or result.first_bad_subject == "commit 9"
    assert any(v == "skip" for v in subjects.values())
    if result.first_bad is None:  # both neighbours skipped: the candidates bracket it, as git bisect does
        assert len(result.candidates) >= 2


def test_stage_glob_bisects_one_stage(tmp_path):
    repo = make_history(tmp_path, n=16, breaking=14, scale_bug=5)
    ref = reference_at(repo, "main~16", tmp_path / "golden.trace")
    whole = bisect(repo, "main~16", "main", ref, command())
    assert whole.first_bad_subject == "commit 5" and whole.first_divergence == "layers.1.out"
    norm_only = bisect(repo, "main~16", "main", ref, command(), stage="layers.0.*")
    assert norm_only.first_bad_subject == "commit 14"


def test_cli_json_and_exit_code(tmp_path, capsys):
    repo = make_history(tmp_path, n=16, breaking=3)
    ref = reference_at(repo, "main~16", tmp_path / "golden.trace")
    code = main(["bisect", "main~16", "main", "--reference", str(ref), "--repo", str(repo), "--json", "--",
                 sys.executable, "capture.py", "{out}"])
    assert code == 1
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert doc["first_bad_subject"] == "commit 3" and doc["captures"] <= 5 and doc["revisions"] == 16
    assert [s["verdict"] for s in doc["steps"]].count("bad") >= 1
    assert "first bad revision" in captured.err


def test_usage_errors(tmp_path):
    repo = make_history(tmp_path, n=2, breaking=2)
    ref = reference_at(repo, "main~2", tmp_path / "golden.trace")
    with pytest.raises(UsageError, match="must contain"):
        bisect(repo, "main~2", "main", ref, [sys.executable, "capture.py"])
    with pytest.raises(UsageError, match="not an ancestor"):
        bisect(repo, "main", "main~2", ref, command())
    with pytest.raises(UsageError, match="failed"):
        bisect(repo, "nope", "main", ref, command())
    with pytest.raises(UsageError, match="reference"):
        bisect(repo, "main~2", "main", tmp_path / "missing.trace", command())
