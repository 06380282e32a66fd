"""Hostile bundles: a corrupt bundle.json, env.json or output is a UsageError naming the file
(exit 2), never a raw exception; a failed bundle command records 2 or 3, never 1."""

import json
import os

import click
import pytest

from parity.bundle import folder as bundle_mod
from parity.bundle import (bundle_command, close_bundle, invocation, new_bundle, open_bundle,
                           verify_bundle)
from parity.cli import EXIT_ERROR, EXIT_INTERNAL, main
from parity.errors import TraceFormatError, UsageError


@pytest.fixture
def b(tmp_path):
    return new_bundle("x", tmp_path, probe_torch=False)


def _marker(b):
    return os.path.join(b.path, "bundle.json")


@pytest.mark.parametrize("payload, expected", [
    (b"\xff\xfe not json", "UTF-8"),
    (b"[" * 50_000 + b"]" * 50_000, "nests"),
    (b'{"format": "parity-bundle", "schema_version": 1e999}', "non-finite"),
    (b'{"format": "parity-bundle", "schema_version": NaN}', "non-finite"),
    (b'{"format": "parity-bundle", "schema_version": ' + b"9" * 5000 + b"}", "digits"),
    (b'{"format": "parity-bundle"', "not valid JSON"),
    (b"[]", "format"),
    (b'{"format": "parity-bundle", "schema_version": "1"}', "schema_version"),
    (b'{"format": "parity-bundle", "schema_version": true}', "schema_version"),
    (b'{"format": "parity-bundle", "schema_version": 1, "closed": "yes"}', '"closed" must be a bool'),
    (b'{"format": "parity-bundle", "schema_version": 1, "name": {"a": 1}}', '"name" must be a str'),
])
def test_corrupt_bundle_json_is_a_usage_error_naming_it(b, payload, expected):
    with open(_marker(b), "wb") as f:
        f.write(payload)
    for fn in (open_bundle, close_bundle, verify_bundle):
        with pytest.raises(UsageError, match=expected) as e:
            fn(b.path)
        assert e.value.path == _marker(b) and "bundle.json" in str(e.value)


@pytest.mark.parametrize("verb", ["verify", "close"])
def test_cli_on_corrupt_bundle_json_exits_2_naming_it(b, capsys, verb):
    with open(_marker(b), "wb") as f:
        f.write(b"[" * 50_000)
    code = main(["bundle", verb, b.path])
    text = "".join(capsys.readouterr())
    assert code == EXIT_ERROR and "bundle.json" in text and "Traceback" not in text, text


@pytest.mark.parametrize("env_payload", [
    b'{"python": "3.11", "torch": [1], "git": "abc", "cpu": 5, "packages": null}',
    b"[" * 50_000,
    b"\xff",
    b"[]",
])
def test_close_survives_a_damaged_env_json(b, env_payload):
    with open(os.path.join(b.path, "env.json"), "wb") as f:
        f.write(env_payload)
    assert close_bundle(b.path).ok
    with open(os.path.join(b.path, "summary.md"), encoding="utf-8") as f:
        assert "# Evidence bundle: x" in f.read()


def test_close_survives_damaged_outputs_and_commands(b):
    with invocation(["diff", "a", "b"]), bundle_command(b.path, "diff") as cmd:
        cmd.write("json", '{"schema": "parity.diff", "summary": "oops", "passed": "no", "first_divergence": [1]}')
    with invocation(["diff", "a", "b"]), bundle_command(b.path, "diff") as cmd:
        cmd.write("json", "[" * 50_000)
    with open(os.path.join(b.path, "commands.txt"), "ab") as f:
        f.write(b"\xff\xfe garbage line\n")
    assert close_bundle(b.path).ok


def _exit_recorded(b, exc):
    with pytest.raises(type(exc)):
        with invocation(["diff"]), bundle_command(b.path, "diff"):
            raise exc
    return open_bundle(b.path).commands()[-1]["exit"]


@pytest.mark.parametrize("exc, code", [
    (TypeError("bug"), EXIT_INTERNAL),
    (KeyError("bug"), EXIT_INTERNAL),
    (RecursionError(), EXIT_INTERNAL),
    (OSError(28, "No space left on device"), EXIT_ERROR),
    (PermissionError(13, "Permission denied"), EXIT_ERROR),
    (TraceFormatError("bad", path="x"), EXIT_ERROR),
    (click.UsageError("no such option"), EXIT_ERROR),
    (SystemExit(1), 1),
    (SystemExit(0), 0),
])
def test_failed_bundle_command_records_the_cli_exit_status(b, exc, code):
    assert _exit_recorded(b, exc) == str(code)


@pytest.mark.parametrize("exc, code", [
    (UsageError("bad option"), EXIT_ERROR), (SystemExit("cannot read x"), EXIT_ERROR), (SystemExit(1), 1),
    (SystemExit(None), 0), (PermissionError(13, "denied"), EXIT_ERROR), (ZeroDivisionError(), EXIT_INTERNAL),
    (KeyboardInterrupt(), 130),
])
def test_the_bundle_records_the_exit_code_the_cli_returns(exc, code):
    from parity import exitcodes

    assert bundle_mod._exit_code(exc) == exitcodes.for_exception(exc) == code


def test_bundle_json_round_trips(b):
    close_bundle(b.path)
    with open(_marker(b), encoding="utf-8") as f:
        assert json.load(f)["closed"] is True
    assert verify_bundle(b.path).ok


def test_deeply_nested_folders_do_not_recurse(b):
    depth = 1100  # deeper than the recursion limit, within PATH_MAX (relative steps)
    cwd = os.getcwd()
    os.chdir(b.path)
    try:
        for _ in range(depth):
            os.mkdir("d")
            os.chdir("d")
        with open("leaf.txt", "w") as f:
            f.write("x")
        os.chdir(cwd)
        check = close_bundle(b.path)
        assert check.ok and check.checked >= 4
    finally:  # remove the tree without recursion (pytest's cleanup would recurse)
        os.chdir(b.path)
        levels = 0
        while os.path.isdir("d"):
            os.chdir("d")
            levels += 1
        if os.path.exists("leaf.txt"):
            os.remove("leaf.txt")
        for _ in range(levels):
            os.chdir("..")
            os.rmdir("d")
        os.chdir(cwd)
