"""Fuzz the comparison config loader and tap(): only ParityErrors escape, recordings stay whole.

* ``load_config`` gets a valid config mutated (byte flips, truncation, insertions of hostile
  tokens: deep brackets, huge numbers, NaN, invalid UTF-8, bad regexes and templates) and fully
  random bytes; it must return a config or raise a ``ConfigError`` naming the file.
* ``CompareConfig.from_dict`` gets random TOML-like documents.
* ``tap()`` gets random names and index values inside a recording; only ``StageKeyError`` /
  ``UsageError`` may escape, and the trace must load complete with every good stage.
"""

import os

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import parity
from parity.compare.config import CompareConfig, load_config
from parity.errors import ConfigError, StageKeyError, UsageError

from .harness import fuzz_settings, only_parity_errors

SEED = rb'''strict = false

[tolerance]
rtol = 1e-5
atol = 1e-12

[tolerance.stages]
"layers.*.attn_probs" = { rtol = 1e-3 }
"logits" = { rtol = 1e-2, cosine_min = 0.999, sqnr_min_db = 40 }

[rename]
'^model\.layers\.(\d+)\.' = 'layers.\1.'
'(?P<n>mlp)$' = '\g<n>_out'

[aliases]
attn_weights = "attn_probs"

[transforms]
"logits" = { slice = { seq = -1 } }
"rot_angle" = { scale = "pi/180", units = "rad" }
"emb" = [{ reshape = [2, -1] }, { cast = "bf16" }]

[ignore]
stages = ["timing.*"]

[expected]
"layers.*.rope_cache" = "bf16 RoPE"
'''

HOSTILE = [b"[" * 5000, b"{a=" * 3000, b"]" * 100, b"1e999", b"nan", b"-inf", b"9" * 5000, b"\xff\xfe", b"\xc3",
           b"\x00", b"'''", b'"""', b"\\", b"\\2", b"\\g<nope>", b"(" * 300, b"a{99999999999}", b"[a", b"#",
           b"\n[tolerance]\n", b" = ", b'"', b"'", b"a" + b".a" * 3000 + b" = 1\n", b"\r", b"\xed\xa0\x80"]

mutation = st.lists(st.tuples(st.sampled_from(["flip", "truncate", "insert", "replace", "hostile"]),
                              st.integers(0, 10**6), st.binary(min_size=0, max_size=6), st.sampled_from(HOSTILE)),
                    min_size=1, max_size=3)


def _mutate(data: bytes, muts) -> bytes:
    buf = bytearray(data)
    for kind, where, payload, hostile in muts:
        pos = where % (len(buf) + 1)
        if kind == "flip" and buf:
            buf[pos % len(buf)] ^= 1 << (where % 8)
        elif kind == "truncate":
            del buf[pos:]
        elif kind == "insert":
            buf[pos:pos] = payload
        elif kind == "replace":
            buf[pos:pos + len(payload)] = payload
        else:
            buf[pos:pos] = hostile
    return bytes(buf)


def _check_load(path: str) -> None:
    err = only_parity_errors(load_config, path)
    if err is not None:
        assert isinstance(err, ConfigError), repr(err)
        assert err.path == path and path in str(err), str(err)


def test_the_seed_loads(tmp_path):
    cfg = tmp_path / "seed.toml"
    cfg.write_bytes(SEED)
    config = load_config(cfg)
    assert len(config.renames) == 2 and len(config.transforms) == 3


@fuzz_settings(60)
@given(mutation)
def test_mutated_configs_raise_only_config_errors(tmp_path_factory, muts):
    path = str(tmp_path_factory.mktemp("cfg") / "c.toml")
    with open(path, "wb") as f:
        f.write(_mutate(SEED, muts))
    _check_load(path)


@fuzz_settings(30)
@given(st.binary(max_size=512))
def test_random_bytes_raise_only_config_errors(tmp_path_factory, data):
    path = str(tmp_path_factory.mktemp("cfg") / "r.toml")
    with open(path, "wb") as f:
        f.write(data)
    _check_load(path)


_REGEX_ATOMS = ["(", ")", "(?P<n>", "(?P<n>a)", "[", "]", "\\", "\\d+", "a", ".", "*", "+", "?", "{2}", "{99999999999}",
                "|", "^", "$", "(?=", "(?<=a+)", "\\1", "\\g<n>", "\\2", "\\q", "\\g<1", "\\0", "x"]
regex_text = st.lists(st.sampled_from(_REGEX_ATOMS), max_size=8).map("".join)


@fuzz_settings(60)
@given(regex_text, regex_text)
def test_rename_patterns_and_templates_are_checked_at_load(pattern, repl):
    err = only_parity_errors(CompareConfig.from_dict, {"rename": {pattern: repl}}, source="c.toml")
    if err is None:  # loaded: then applying it can never raise re.error
        config = CompareConfig.from_dict({"rename": {pattern: repl}}, source="c.toml")
        for key in ("model.layers.3.mlp", "a", "n", "x.y"):
            only_parity_errors(config.rename_candidate, key)
    else:
        assert isinstance(err, ConfigError) and err.path == "c.toml"


toml_leaf = st.one_of(st.none(), st.booleans(), st.integers(-(10**30), 10**30), st.floats(allow_nan=True),
                      st.text(max_size=12), st.sampled_from(["pi/180", "0:4", "[..., -1]", "bf16", "\\2", "("]))
toml_doc = st.recursive(toml_leaf, lambda kids: st.one_of(st.lists(kids, max_size=3),
                                                          st.dictionaries(st.text(max_size=8), kids, max_size=3)),
                        max_leaves=12)
sections = st.sampled_from(["tolerance", "aliases", "ignore", "expected", "rename", "transforms", "strict", "bogus"])


@fuzz_settings(60)
@given(st.dictionaries(sections, toml_doc, max_size=4))
def test_random_documents_raise_only_config_errors(doc):
    err = only_parity_errors(CompareConfig.from_dict, doc, source="c.toml")
    if err is not None:
        assert isinstance(err, ConfigError) and err.path == "c.toml", repr(err)


index_value = st.one_of(st.integers(), st.integers(-(10**30), 10**30), st.floats(allow_nan=True, allow_infinity=True),
                        st.booleans(), st.text(max_size=10), st.none(), st.binary(max_size=3))
tap_name = st.one_of(st.text(max_size=12), st.sampled_from(["x", "a.b", "a[i=1]", "a#2", "../x", "a..b"]),
                     st.integers(), st.none())
index_name = st.text(min_size=1, max_size=5).filter(lambda k: k not in ("name", "value"))  # tap's own parameters
calls = st.lists(st.tuples(tap_name, st.dictionaries(index_name, index_value, max_size=2)),
                 min_size=1, max_size=6)


@fuzz_settings(40)
@given(calls)
def test_tap_raises_only_key_errors_and_keeps_the_recording(tmp_path_factory, batch):
    path = str(tmp_path_factory.mktemp("tap") / "t.trace")
    good = 0
    with parity.record(path):
        parity.tap("first", np.arange(3.0))
        for name, indices in batch:
            def one(name=name, indices=indices):
                parity.tap(name, np.ones(2), **indices)
            err = only_parity_errors(one)
            if err is None:
                good += 1
            else:
                assert isinstance(err, (StageKeyError, UsageError)), repr(err)
        parity.tap("last", np.ones(1))
    trace = parity.load_trace(path)
    assert trace.complete and trace.verify() == []
    keys = trace.keys()
    assert keys[0] == "first" and keys[-1].startswith("last") and len(keys) == good + 2
    assert os.path.isdir(path)
