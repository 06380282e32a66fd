"""Evidence bundles: layout, no collisions, exact command lines, no secrets, verify catches every change."""

import datetime as dt
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import parity
import parity.bundle as bundle_pkg
import parity.bundle.folder as bundle_mod  # where new_bundle looks collect_environment and the clock up
from parity.bundle import (
    BundleCheck, bundle_command, close_bundle, collect_environment, invocation, new_bundle, open_bundle,
    redact_command_line, verify_bundle,
)
from parity.cli import main
from parity.errors import UsageError

SECRETS = {"AWS_SECRET_ACCESS_KEY": "aws-Zq8v1-SECRET-4711", "HF_TOKEN": "hf_pLanted7Token0xBEEF",
           "MY_PASSWORD": "correct-horse-9931-battery", "GITHUB_TOKEN": "ghp_planted_AAAA1111"}


@pytest.fixture
def traces(make_trace):
    ref = make_trace("ref.trace", {"a": np.ones((4, 3)), "b": np.arange(6.0).reshape(2, 3)})
    cand = make_trace("cand.trace", {"a": np.ones((4, 3)), "b": np.arange(6.0).reshape(2, 3) * 1.5})
    return ref, cand


@pytest.fixture
def fast_env(monkeypatch):
    # Importing torch to ask about CUDA costs a second or two; the CLI tests below do it once via subprocess.
    real = bundle_mod.collect_environment
    monkeypatch.setattr(bundle_mod, "collect_environment", lambda **kw: real(**{**kw, "probe_torch": False}))


def _all_bytes(root):
    out = {}
    for dirpath, _, names in os.walk(root):
        for n in names:
            with open(os.path.join(dirpath, n), "rb") as f:
                out[os.path.relpath(os.path.join(dirpath, n), root)] = f.read()
    return out


def test_new_bundle_layout(tmp_path, fast_env):
    b = new_bundle("rope-bug", tmp_path, device="cuda:0", dtype="bf16")
    rel = os.path.relpath(b.path, tmp_path).split(os.sep)
    assert rel[:2] == ["reports", "rope-bug"] and len(rel) == 3
    dt.datetime.strptime(rel[2], "%Y%m%dT%H%M%SZ")  # a UTC stamp
    assert sorted(os.listdir(b.path)) == ["bundle.json", "commands.txt", "env.json"]
    info = json.loads(open(os.path.join(b.path, "bundle.json")).read())
    assert info["format"] == "parity-bundle" and info["name"] == "rope-bug" and info["closed"] is False
    env = json.loads(open(os.path.join(b.path, "env.json")).read())
    assert env["run"] == {"device": "cuda:0", "dtype": "bf16"}
    assert set(env) == {"recorded_at", "parity", "python", "packages", "torch", "run", "platform", "cpu",
                        "memory_bytes", "git", "settings"}
    assert env["packages"]["numpy"] == np.__version__
    assert set(env["settings"]) == set(bundle_pkg.ENV_SETTINGS)


def test_git_sha_and_dirty_flag(tmp_path, fast_env):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path / "repo"
    repo.mkdir()
    run = lambda *a: subprocess.run(["git", *a], cwd=repo, check=True, capture_output=True)  # noqa: E731
    run("init", "-q")
    (repo / "f.txt").write_text("x")
    run("add", "f.txt")
    run("-c", "user.email=a@b.c", "-c", "user.name=t", "commit", "-q", "-m", "m")
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    assert collect_environment(cwd=str(repo), probe_torch=False)["git"] == {"sha": sha, "dirty": False}
    (repo / "f.txt").write_text("changed")
    assert collect_environment(cwd=str(repo), probe_torch=False)["git"] == {"sha": sha, "dirty": True}
    assert collect_environment(cwd=str(tmp_path), probe_torch=False)["git"] is None


def test_same_second_bundles_never_collide(tmp_path, fast_env, monkeypatch):
    fixed = dt.datetime(2025, 3, 1, 12, 0, 0, tzinfo=dt.timezone.utc)
    monkeypatch.setattr(bundle_mod, "_utc_now", lambda: fixed)
    made = [new_bundle("same", tmp_path) for _ in range(3)]
    names = [os.path.basename(b.path) for b in made]
    assert names == ["20250301T120000Z", "20250301T120000Z-2", "20250301T120000Z-3"]
    # the first bundle is untouched by the later ones
    with invocation(["show", "x"]), bundle_command(made[0].path, "show") as cmd:
        cmd.write("txt", "first")
    assert [c["line"] for c in made[0].commands()] == ["parity show x"]
    assert made[1].commands() == [] and made[2].commands() == []


def test_bad_names_and_non_bundles_are_refused(tmp_path, fast_env):
    for bad in ("../escape", "a/b", ".hidden", "", "-rf", "x" * 101):
        with pytest.raises(UsageError, match="must be one folder name"):
            new_bundle(bad, tmp_path)
    assert not (tmp_path / "reports").exists()
    with pytest.raises(UsageError, match="is not an evidence bundle"):
        open_bundle(tmp_path)
    (tmp_path / "reports").mkdir(exist_ok=True)
    (tmp_path / "reports" / "taken").write_text("a file, not a folder")
    with pytest.raises(UsageError, match="reports/taken must be a directory"):
        new_bundle("taken", tmp_path)


def test_cli_bundle_flow_records_exact_command_lines(traces, tmp_path, monkeypatch, capsys, fast_env):
    ref, cand = traces
    monkeypatch.chdir(tmp_path)
    assert main(["bundle", "new", "inv"]) == 0
    path = capsys.readouterr().out.strip()
    assert path.startswith(os.path.join("reports", "inv", ""))
    diff_argv = ["diff", ref, cand, "--rtol", "1e-3", "--bundle", path]
    assert main(diff_argv) == 1
    assert main(["show", ref, "--bundle", path]) == 0
    assert main(["diff", ref, ref + "-missing", "--bundle", path]) == 2  # a failing command is on record too
    capsys.readouterr()
    lines = [ln for ln in open(os.path.join(path, "commands.txt")).read().splitlines() if not ln.startswith("#")]
    assert lines == ["parity bundle new inv", "parity " + " ".join(diff_argv), f"parity show {ref} --bundle {path}",
                     f"parity diff {ref} {ref}-missing --bundle {path}"]
    cmds = open_bundle(path).commands()
    assert [(c["index"], c["exit"]) for c in cmds] == [(1, "0"), (2, "1"), (3, "0"), (4, "2")]
    assert cmds[1]["outputs"] == ["02-diff.json", "02-diff.md", "02-diff.html", "02-diff.txt"]
    doc = json.loads(open(os.path.join(path, "02-diff.json")).read())
    assert doc["first_divergence"] == "b"
    assert "Worst" in open(os.path.join(path, "02-diff.md")).read()
    assert "first divergence" in open(os.path.join(path, "02-diff.txt")).read()
    assert main(["bundle", "close", path]) == 0
    summary = open(os.path.join(path, "summary.md")).read()
    assert "divergence found: 1 pass, 1 fail; first divergence `b`" in summary
    assert main(["bundle", "verify", path]) == 0
    assert "ok: all 9 files listed in" in capsys.readouterr().out
    # sealed: no more commands
    assert main(["show", ref, "--bundle", path]) == 2
    assert "bundle is closed" in capsys.readouterr().err


def test_sha256_file_is_sha256sum_compatible(traces, tmp_path, fast_env):
    if shutil.which("sha256sum") is None:
        pytest.skip("sha256sum is not installed")
    b = new_bundle("x", tmp_path)
    with invocation(["show", traces[0]]), bundle_command(b.path, "show") as cmd:
        cmd.write("txt", "table")
    close_bundle(b.path)
    r = subprocess.run(["sha256sum", "-c", "--quiet", "sha256.txt"], cwd=b.path, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.fixture
def closed(tmp_path, fast_env):
    b = new_bundle("v", tmp_path)
    with invocation(["diff", "a", "b"]), bundle_command(b.path, "diff") as cmd:
        cmd.write("json", '{"x": 1}\n')
        cmd.write("md", "# report\n")
    assert close_bundle(b.path)
    assert verify_bundle(b.path) == BundleCheck(b.path, 6)
    return b.path


def test_verify_catches_a_changed_byte(closed, capsys):
    p = os.path.join(closed, "01-diff.json")
    data = bytearray(open(p, "rb").read())
    data[3] ^= 0x01
    open(p, "wb").write(bytes(data))
    check = verify_bundle(closed)
    assert not check and check.changed == ("01-diff.json",) and not (check.missing or check.added)
    assert main(["bundle", "verify", closed]) == 1
    assert "changed: 01-diff.json" in capsys.readouterr().out


def test_verify_catches_a_removed_and_an_added_file(closed, capsys):
    os.remove(os.path.join(closed, "01-diff.md"))
    open(os.path.join(closed, "notes.txt"), "w").write("sneaked in")
    os.makedirs(os.path.join(closed, "sub"))
    open(os.path.join(closed, "sub", "x.bin"), "wb").write(b"\0")
    check = verify_bundle(closed)
    assert check.missing == ("01-diff.md",) and check.added == ("notes.txt", "sub/x.bin") and check.changed == ()
    assert main(["bundle", "verify", closed]) == 1
    out = capsys.readouterr().out
    assert "missing: 01-diff.md" in out and "added: notes.txt" in out and "1 missing, 2 added" in out


def test_verify_never_reads_outside_the_bundle(closed, tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("secret")
    sums = os.path.join(closed, "sha256.txt")
    with open(sums, "a") as f:
        f.write(f"{'0' * 64}  ../../../outside.txt\n{'0' * 64}  /etc/passwd\nnot a checksum line\n")
    os.symlink(outside, os.path.join(closed, "link.txt"))
    check = verify_bundle(closed)
    assert len(check.malformed) == 3 and check.added == ("link.txt",) and not check.changed


def test_outputs_never_follow_planted_links_or_overwrite(tmp_path, fast_env):
    b = new_bundle("l", tmp_path)
    target = tmp_path / "victim.txt"
    target.write_text("keep me")
    os.symlink(target, os.path.join(b.path, "01-diff.json"))
    with pytest.raises(UsageError, match="already exists in the bundle"):
        with invocation(["diff"]), bundle_command(b.path, "diff") as cmd:
            cmd.write("json", "overwrite attempt")
    assert target.read_text() == "keep me"
    with pytest.raises(UsageError, match="links or special files"):
        close_bundle(b.path)


def test_redaction_of_secret_options():
    assert redact_command_line(["capture", "run", "--token", "abc", "--api-key=xyz", "--password", "p", "--rtol", "1e-3",
                                "-x"]) == ["capture", "run", "--token", "<redacted>", "--api-key=<redacted>", "--password",
                                           "<redacted>", "--rtol", "1e-3", "-x"]


def test_secrets_in_the_environment_never_reach_a_bundle(traces, tmp_path, monkeypatch, capsys):
    for k, v in SECRETS.items():
        monkeypatch.setenv(k, v)
    ref, cand = traces
    monkeypatch.chdir(tmp_path)
    # in process (torch is probed for real here, as a user's run would)
    assert main(["bundle", "new", "leak", "--device", "cpu"]) == 0
    path1 = capsys.readouterr().out.strip()
    assert main(["diff", ref, cand, "--bundle", path1]) == 1
    assert main(["show", ref, "--bundle", path1]) == 0
    assert main(["bundle", "close", path1]) == 0
    # and as separate processes, the way the console script runs
    env = {**os.environ, **SECRETS}
    exe = [sys.executable, "-m", "parity.cli"]
    path2 = subprocess.run([*exe, "bundle", "new", "leak"], env=env, capture_output=True, text=True, check=True).stdout.strip()
    r = subprocess.run([*exe, "diff", ref, cand, "--bundle", path2], env=env, capture_output=True, text=True)
    assert r.returncode == 1, r.stderr
    subprocess.run([*exe, "bundle", "close", path2], env=env, check=True, capture_output=True)
    files = {**{f"1/{k}": v for k, v in _all_bytes(path1).items()}, **{f"2/{k}": v for k, v in _all_bytes(path2).items()}}
    assert len(files) == 2 * 10 - 1  # bundle 2 has no show output
    for name, data in files.items():
        for var, secret in SECRETS.items():
            assert secret.encode() not in data, f"{var} leaked into {name}"
            assert var.encode() not in data, f"the name {var} leaked into {name}"
    env1 = json.loads(files["1/env.json"])
    assert env1["torch"]["installed"] is (importlib.util.find_spec("torch") is not None)


def test_a_sharded_trace_is_pinned_by_its_shard_index_and_every_rank_manifest(tmp_path):
    from parity.bundle import new_bundle
    from parity.trace.sharded import prepare_sharded, shard_placement
    from parity.trace.writer import TraceWriter

    path = str(tmp_path / "tp.trace")
    for r in range(3):
        with TraceWriter(prepare_sharded(path, r, 3), meta={"shard": {"rank": r, "world_size": 3}}) as w:
            w.add("h", np.full((2, 4), float(r)), provenance={"shard": shard_placement(1, 4 * r, [2, 12], r, 3)})
    assert parity.load_trace(path)["h"].shape == (2, 12)
    cmd = new_bundle("b", str(tmp_path), probe_torch=False).begin_command("capture-run", "parity capture run ...")
    cmd.write_traces([path], "captured\n")
    assert cmd.outputs == ["01-capture-run.txt", "01-capture-run-manifest-shards.json",
                           "01-capture-run-manifest-rank0.json", "01-capture-run-manifest-rank1.json",
                           "01-capture-run-manifest-rank2.json"]
    for name, src in zip(cmd.outputs[1:], ["shards.json"] + [f"rank-0000{r}.trace/manifest.json" for r in range(3)]):
        with open(os.path.join(cmd.bundle.path, name), "rb") as a, open(os.path.join(path, src), "rb") as b:
            assert a.read() == b.read()
