"""parity.redact: one rule for bundles, trace metadata and terminal output.

Before: `parity capture run -- prog --password=hunter2 --token abc` stored both secrets in the
trace manifest (program.argv, command) and printed them on the terminal.
"""

import os
import sys

import numpy as np
import pytest

import parity
from parity import bundle
from parity.cli import main
from parity.redact import REDACTED, is_secret_name, redact_args, redact_mapping, redact_text

SECRETS = ("hunter2", "abcsecrettoken", "sk-live-42", "hf_xyzzy", "pw0rd")


def _files_text(root) -> str:
    out = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as f:
                out.append(f.read().decode("utf-8", "replace"))
    return "\n".join(out)


@pytest.mark.parametrize("argv, expected", [
    (["prog", "--password=hunter2", "--token", "abc"], ["prog", "--password=<redacted>", "--token", "<redacted>"]),
    (["--api-key", "k", "--secret=s", "--hf-token", "t", "--apiKey", "k2"],
     ["--api-key", REDACTED, "--secret=<redacted>", "--hf-token", REDACTED, "--apiKey", REDACTED]),
    (["OPENAI_API_KEY=sk", "GITHUB_TOKEN=t", "AWS_SECRET_ACCESS_KEY=s", "PASSWORD=p", "db.password=q"],
     ["OPENAI_API_KEY=<redacted>", "GITHUB_TOKEN=<redacted>", "AWS_SECRET_ACCESS_KEY=<redacted>", "PASSWORD=<redacted>",
      "db.password=<redacted>"]),
    (["--url", "https://bob:pw@example.com/x"], ["--url", "https://bob:<redacted>@example.com/x"]),
    (["-H", "Authorization: Bearer xyz"], ["-H", "Authorization: <redacted>"]),
    (["--token", "--steps", "3"], ["--token", "--steps", "3"]),  # a flag without a value hides no option
])
def test_redact_args(argv, expected):
    assert redact_args(argv) == expected


@pytest.mark.parametrize("argv", [
    ["-p", "8080", "--rtol", "1e-3", "-x"],
    ["--pad-token", "<pad>", "--max-tokens", "100", "--tokenizer", "bert", "--max-new-tokens", "8"],
    ["--author", "Bob", "TOKENIZERS_PARALLELISM=false", "OMP_NUM_THREADS=4", "sort_key=z", "PWD=/home/u"],
    ["https://example.com/x?y=1", "a b", "", "x=1"],
])
def test_ordinary_arguments_are_kept_exactly(argv):
    assert redact_args(argv) == argv


@pytest.mark.parametrize("text, secret", [
    ("Authorization: Bearer abc.def.ghi", "abc.def.ghi"),
    ("header: bearer sk-live-42", "sk-live-42"),
    ("Bearer abc", "abc"),
    ("connect postgres://u:hunter2@db/x", "hunter2"),
    ("GET /x?access_token=pw0rd&y=1", "pw0rd"),
    ('{"password": "hunter2", "user": "bob"}', "hunter2"),
    ("export HF_TOKEN=hf_xyzzy", "hf_xyzzy"),
    ("usage: prog --password hunter2 --steps 3", "hunter2"),
])
def test_redact_text(text, secret):
    out = redact_text(text)
    assert secret not in out and REDACTED in out


def test_redact_text_keeps_prose():
    for text in ("the bearer of bad news", "step 3: rtol=1e-3 ok", "tokens per second: 1000"):
        assert redact_text(text) == text


def test_redact_mapping():
    env = {"HF_TOKEN": "hf_xyzzy", "HOME": "/home/u", "DATABASE_URL": "postgres://u:hunter2@h/db",
           "nested": {"api_key": "sk-live-42", "n": 3}, "argv": ["p", "--password", "pw0rd"], "flag": True}
    out = redact_mapping(env)
    assert out["HOME"] == "/home/u" and out["nested"]["n"] == 3 and out["flag"] is True
    assert not any(s in repr(out) for s in SECRETS)
    deep: dict = {}
    d = deep
    for _ in range(5000):  # a hostile depth neither recurses without bound nor keeps the value
        d["x"] = {}
        d = d["x"]
    d["password"] = "hunter2"
    assert "hunter2" not in repr(redact_mapping(deep))  # no RecursionError; the deep part is replaced whole


def test_secret_names():
    assert is_secret_name("--password") and is_secret_name("db_passwd") and is_secret_name("clientSecret")
    assert not is_secret_name("--tokenizer") and not is_secret_name("--pad-token") and not is_secret_name("-p")


def test_bundle_uses_the_shared_rule():
    argv = ["capture", "run", "--", "prog", "--password=hunter2", "--token", "abc", "HF_TOKEN=x"]
    assert bundle.redact_command_line(argv) == redact_args(argv)
    assert not hasattr(bundle, "_SECRET_OPT")


_PROG = ("import sys; print('TRACE_PY: x=1 2 3'); print('args', sys.argv[1:], file=sys.stderr); "
         "sys.exit(int(sys.argv[-1]))")


@pytest.mark.parametrize("status", ["0", "1"])
def test_capture_run_never_stores_or_prints_secrets(tmp_path, capsys, status):
    out = tmp_path / "p.trace"
    argv = ["capture", "run", "--prefix", "TRACE_PY", "--out", str(out), "--", sys.executable, "-c", _PROG,
            "--password=hunter2", "--token", "abcsecrettoken", "--api-key", "sk-live-42", "HF_TOKEN=hf_xyzzy",
            "--url", "https://u:pw0rd@h/x", status]
    code = main(argv)
    text = capsys.readouterr()
    shown = text.out + text.err
    assert code == (0 if status == "0" else 2), shown
    trace = parity.load_trace(out)
    assert trace["x"].tolist() == [1.0, 2.0, 3.0]
    stored = _files_text(out)
    for secret in SECRETS:
        assert secret not in stored, secret
        assert secret not in shown, (secret, shown)
    assert trace.meta["program"]["argv"][-9:] == ["--password=<redacted>", "--token", REDACTED, "--api-key", REDACTED,
                                                  "HF_TOKEN=<redacted>", "--url", "https://u:<redacted>@h/x", status]
    if status == "1":
        assert "stderr:" in shown and REDACTED in shown


def test_record_stores_the_command_line_redacted(tmp_path):
    path = tmp_path / "r.trace"
    with parity.record(path, command=["train.py", "--token", "abcsecrettoken", "--steps", "3"]):
        parity.tap("a", np.ones(2))
    assert "abcsecrettoken" not in _files_text(path)
    assert parity.load_trace(path).manifest["command"] == ["train.py", "--token", REDACTED, "--steps", "3"]
