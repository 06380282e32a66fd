"""Hostile comparison configs: every bad file is a ConfigError naming the file, the line or the
section and key, and what was expected; checked when the config is loaded, never later."""

import numpy as np
import pytest

from parity import compare_traces, record, tap
from parity.compare.config import CompareConfig, load_config
from parity.errors import ConfigError
from parity.limits import MAX_NESTING


def _load(tmp_path, data: bytes):
    cfg = tmp_path / "c.toml"
    cfg.write_bytes(data)
    with pytest.raises(ConfigError) as e:
        load_config(cfg)
    assert e.value.path == str(cfg)
    assert str(cfg) in str(e.value)
    return str(e.value)


def test_invalid_utf8_names_the_file_and_line(tmp_path):
    msg = _load(tmp_path, b'[tolerance]\nrtol = 1e-3\n[aliases]\nx = "\xff"\n')
    assert "line 4" in msg and "UTF-8" in msg


def test_invalid_utf8_at_the_start(tmp_path):
    assert "UTF-8" in _load(tmp_path, b"\xff\xfe[tolerance]\n")


@pytest.mark.parametrize("opener, closer", [(b"[", b"]"), (b"{b=", b"}")])
def test_deep_nesting_is_refused_before_parsing(tmp_path, opener, closer):
    msg = _load(tmp_path, b"[tolerance]\nx = " + opener * 5000 + b"1" + closer * 5000 + b"\n")
    assert "line 2" in msg and str(MAX_NESTING) in msg


def test_nesting_inside_strings_and_comments_does_not_count(tmp_path, make_trace):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[expected]\n"a" = "' + "[" * 200 + '"  # ' + "{" * 200 + "\n"
                   "\"b\" = '''" + "[" * 200 + "'''\n")
    config = load_config(cfg)
    assert config.expected["a"] == "[" * 200 and config.expected["b"] == "[" * 200


def test_deep_dotted_keys_are_refused(tmp_path):
    assert "nest deeper" in _load(tmp_path, b"a" + b".a" * 5000 + b" = 1\n")


def test_huge_integer_literal(tmp_path):
    msg = _load(tmp_path, b"[tolerance]\nrtol = " + b"9" * 5000 + b"\n")
    assert "line 2" in msg and "digits" in msg


@pytest.mark.parametrize("text, expected", [
    ('[tolerance]\nrtol = "abc"', ["[tolerance]", "rtol", "must be a number", "'abc'"]),
    ("[tolerance]\natol = -1e-3", ["[tolerance]", "atol", "non-negative"]),
    ("[tolerance]\nrtol = nan", ["rtol", "finite"]),
    ("[tolerance]\nrtol = inf", ["rtol", "finite"]),
    ("[tolerance]\ncosine_min = -inf", ["cosine_min", "finite"]),
    ("[tolerance]\nrtol = { a = 1 }", ["rtol", "must be a number", "a table"]),
    ("[tolerance]\nrtol = true", ["rtol", "must be a number", "boolean"]),
    ("tolerance = 3", ["[tolerance] must be a table"]),
    ('[tolerance.stages]\n"x" = 1', ['[tolerance.stages] "x"', "must be a table"]),
    ('[tolerance.stages]\n"x" = { rtol = "big" }', ['[tolerance.stages] "x"', "rtol", "must be a number"]),
    ("[tolerance]\nstages = [1]", ["[tolerance.stages]", "an array"]),
    ("[aliases]\nx = { a = 1 }", ["[aliases]", '"x"', "a table"]),
    ('[aliases]\nx = "a/b"', ["[aliases]", '"a/b"', "not a stage name"]),
    ('[expected]\n"x" = 3', ["[expected]", '"x"', "reason"]),
    ("[ignore]\nstages = \"x\"", ["[ignore] stages", "list of glob patterns"]),
    ("[ignore]\nstage = [\"x\"]", ["[ignore]", "unknown key"]),
    ('strict = "yes"', ["strict", "true or false"]),
    ('[transforms]\n"x" = { side = ["a"], scale = 2 }', ['[transforms] "x"']),
    ('[transforms]\n"x" = { slice = { "' + "9" * 5000 + '" = 1 } }', ['[transforms] "x"']),
    ("[unknown]\na = 1", ["unknown section"]),
])
def test_wrong_types_name_file_key_and_expectation(tmp_path, text, expected):
    msg = _load(tmp_path, text.encode() + b"\n")
    for part in expected:
        assert part in msg, (part, msg)


@pytest.mark.parametrize("pattern, repl, expected", [
    ("a(.*)", r"\2", "invalid group reference 2"),
    ("a(.*)", r"\g<nope>", "nope"),
    ("(?P<layer>[0-9]+)", r"\g<lay", "missing >"),
    ("a", r"x\q", "bad escape"),
    ("a", "x\\", "bad escape"),
])
def test_rename_replacement_is_checked_at_load(tmp_path, pattern, repl, expected):
    toml = '[rename]\n"' + pattern.replace("\\", "\\\\") + '" = "' + repl.replace("\\", "\\\\") + '"\n'
    msg = _load(tmp_path, toml.encode())
    assert "[rename]" in msg and pattern in msg and expected in msg


@pytest.mark.parametrize("pattern, expected", [
    ("(", "is not a valid regular expression"),
    ("a{99999999999}", "is not a valid regular expression"),
    ("(" * 2000 + ")" * 2000, "nest deeper"),
])
def test_rename_pattern_is_checked_at_load(tmp_path, pattern, expected):
    msg = _load(tmp_path, ('[rename]\n"' + pattern + '" = "x"\n').encode())
    assert "[rename]" in msg and expected in msg


def test_valid_rename_templates_still_load(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[rename]\n"^model\\\\.layers\\\\.(\\\\d+)\\\\." = "layers.\\\\1."\n'
                   '"(?P<n>mlp)$" = "\\\\g<n>_out"\n"^x$" = "\\\\g<0>y"\n')
    assert len(load_config(cfg).renames) == 3


def test_bad_rename_in_keyword_overrides_fails_before_comparing(tmp_path):
    ref = tmp_path / "r.trace"
    with record(ref):
        tap("a", np.ones(2))
    with pytest.raises(ConfigError, match="invalid group reference"):
        compare_traces(ref, ref, rename={"a(.*)": r"\2"})
    with pytest.raises(ConfigError, match="rtol"):
        compare_traces(ref, ref, rtol=float("nan"))


def test_from_dict_checks_numbers_too():
    with pytest.raises(ConfigError, match="rtol must be a finite non-negative number; this integer is too large") as e:
        CompareConfig.from_dict({"tolerance": {"rtol": 10**400}}, source="cfg.toml")
    assert e.value.path == "cfg.toml"


def test_from_dict_refuses_non_tables():
    with pytest.raises(ConfigError, match="a table of sections"):
        CompareConfig.from_dict(["tolerance"])  # type: ignore[arg-type]


def test_unreadable_config_paths(tmp_path):
    with pytest.raises(ConfigError, match="cannot be read|not a regular file") as e:
        load_config(tmp_path)
    assert e.value.path == str(tmp_path)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml")
