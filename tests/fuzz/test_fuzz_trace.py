"""load_trace under hostile traces: a mutated manifest, journal or data file is a ParityError or
a readable trace, never a raw exception, a hang or a huge allocation.

Each case copies a small valid trace (complete, or an interrupted capture with a journal), mutates
one file (byte flips, truncation, insertion of hostile tokens, replacement of a JSON value), then
opens it, reads every stage and verifies the checksums, through ``only_parity_errors``.
"""

import json
import os
import shutil

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import parity
from parity.trace import TraceWriter, load_trace

from .harness import fuzz_settings, only_parity_errors

_SEEDS: dict[str, str] = {}

HOSTILE = [b"1e999", b"-1e999", b"NaN", b"Infinity", b"-Infinity", b"[" * 5000, b"{" * 5000, b'{"a":' * 3000,
           b"9" * 5000, b"-1", b"0", b"null", b"true", b"[]", b"{}", b'""', b'"', b"\\", b"\\u0000", b"\xff\xfe",
           b"\x00", b"\n", b",", b":", b"]", b"}", b'"../../etc/passwd"', b'"/etc/passwd"', b"1.5", b"18446744073709551616",
           b'"data/000000.safetensors"', b'"F64"', b'"text"', b'"tensor"', b"[1e999]", b"[-1]", b"[null]"]


def _seed(root: str, kind: str) -> str:
    """A small valid trace, made once per session: "complete", "journaled" (interrupted) or "indexed"."""
    if kind not in _SEEDS:
        path = os.path.join(root, f"seed-{kind}.trace")
        if kind == "complete":
            with parity.record(path, meta={"impl": "seed", "n": [1, 2.5, {"x": None}]}):
                parity.tap("x", np.arange(6.0).reshape(2, 3), axes=("a", "b"), units="m")
                parity.tap("h", np.linspace(-1, 1, 8, dtype=np.float16))
                parity.tap("n", np.int32(7))
                parity.tap("method", "lbfgs")
                for i in range(3):
                    parity.tap("e", float(i), it=i)
        elif kind == "indexed":  # a stage index (index.safetensors) instead of the manifest's stages
            with TraceWriter(path, index=True, buffer_bytes=64) as w:
                w.add("x", np.arange(6.0).reshape(2, 3), axes=("a", "b"), units="m")
                w.add_batch([f"it.{i}" for i in range(4)] + ["note"], [(2,), (), (1, 1), (3,), "done"],
                            np.arange(7, dtype=np.float32), provenance={"line": [1, 2, 3, 4, 5]})
                w.add("e", np.int8(3), indices={"step": 2})
                w.add("e", np.int16([1, 2]), indices={"mode": "fast"})
                w.add("x", np.ones(2, np.float16))
        else:
            w = TraceWriter(path, buffer_bytes=1)
            w.add("y", np.arange(2.0), provenance={"line": 3})
            w.add("t", "text")
            w.add("y", np.ones((2, 2), np.float32))
            w._journal.flush()  # what a killed capture leaves
            w._journal.close()
        _SEEDS[kind] = path
    return _SEEDS[kind]


def _files(trace: str) -> list[str]:
    return sorted(os.path.relpath(os.path.join(dp, f), trace) for dp, _, fs in os.walk(trace) for f in fs
                  if not f.endswith(".tmp"))


def _open_read_verify(path: str) -> None:
    t = load_trace(path)
    for s in t:
        v = t.array(s)
        if not isinstance(v, str):
            np.asarray(v).tobytes()
    t.verify()
    repr(t), t.meta, t.complete


def _case(tmp_path_factory, kind: str) -> str:
    seed = _seed(str(tmp_path_factory.getbasetemp()), kind)
    case = str(tmp_path_factory.mktemp("case") / "c.trace")
    shutil.copytree(seed, case, symlinks=True)
    return case


def _mutate(data: bytearray, how: str, where: int, payload: bytes) -> bytes:
    pos = where % (len(data) + 1)
    if how == "flip" and data:
        data[pos % len(data)] ^= 1 << (where % 8)
    elif how == "truncate":
        del data[pos:]
    elif how == "insert":
        data[pos:pos] = payload
    else:
        data[pos:pos + len(payload)] = payload
    return bytes(data)


payloads = st.one_of(st.sampled_from(HOSTILE), st.binary(max_size=12))
mutations = st.lists(st.tuples(st.sampled_from(["flip", "truncate", "insert", "replace"]),
                               st.integers(0, 10**6), payloads), min_size=1, max_size=4)


def _fuzz_file(tmp_path_factory, kind: str, pick, muts) -> None:
    case = _case(tmp_path_factory, kind)
    target = pick(case)
    data = bytearray(open(target, "rb").read())
    for how, where, payload in muts:
        data = bytearray(_mutate(data, how, where, payload))
    with open(target, "wb") as f:
        f.write(bytes(data))
    err = only_parity_errors(_open_read_verify, case)
    if err is not None and err.path is not None:
        assert "c.trace" in err.path, err


@fuzz_settings()
@given(st.sampled_from(["complete", "journaled", "indexed"]), mutations)
def test_mutated_manifest(tmp_path_factory, kind, muts):
    _fuzz_file(tmp_path_factory, kind, lambda c: os.path.join(c, "manifest.json"), muts)


@fuzz_settings()
@given(mutations)
def test_mutated_journal(tmp_path_factory, muts):
    _fuzz_file(tmp_path_factory, "journaled", lambda c: os.path.join(c, "journal.jsonl"), muts)


@fuzz_settings()
@given(st.sampled_from(["complete", "journaled", "indexed"]), st.integers(0, 100), mutations)
def test_mutated_data_file(tmp_path_factory, kind, which, muts):
    def pick(case):
        data = [f for f in _files(case) if f.startswith("data")]
        return os.path.join(case, data[which % len(data)])
    _fuzz_file(tmp_path_factory, kind, pick, muts)


@fuzz_settings()
@given(st.integers(0, 100), st.integers(0, 10**6), payloads)
def test_mutated_data_header_values(tmp_path_factory, which, where, payload):
    """Replace one JSON value of a data file's header (keeping its length field right)."""
    import re
    import struct
    case = _case(tmp_path_factory, "complete")
    data_files = [f for f in _files(case) if f.startswith("data")]
    target = os.path.join(case, data_files[which % len(data_files)])
    raw = open(target, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = raw[8:8 + n]
    values = list(re.finditer(rb'-?[0-9]+|"[^"]*"', header))
    m = values[where % len(values)]
    header = header[:m.start()] + payload + header[m.end():]
    with open(target, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header + raw[8 + n:])
    only_parity_errors(_open_read_verify, case)


def _json_paths(doc, prefix=()):
    """Every (path, value) in a parsed JSON document."""
    out = [(prefix, doc)]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _json_paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _json_paths(v, prefix + (i,))
    return out


@fuzz_settings()
@given(st.sampled_from(["complete", "journaled"]), st.integers(0, 10**6), st.sampled_from(HOSTILE[:21] + HOSTILE[26:]))
def test_manifest_value_replaced_by_a_hostile_token(tmp_path_factory, kind, where, token):
    """Structured: one value of the manifest (a shape, an offset, a key...) becomes a hostile token."""
    case = _case(tmp_path_factory, kind)
    mpath = os.path.join(case, "manifest.json")
    doc = json.load(open(mpath))
    paths = [p for p, _ in _json_paths(doc) if p]
    path = paths[where % len(paths)]
    node = doc
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = "@@HOSTILE@@"
    text = json.dumps(doc, indent=1).encode().replace(b'"@@HOSTILE@@"', token)
    with open(mpath, "wb") as f:
        f.write(text)
    err = only_parity_errors(_open_read_verify, case)
    if err is not None and err.path is not None:
        assert "c.trace" in err.path, err


@fuzz_settings()
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode)))
def test_random_manifest(tmp_path_factory, raw):
    case = _case(tmp_path_factory, "complete")
    with open(os.path.join(case, "manifest.json"), "wb") as f:
        f.write(raw)
    err = only_parity_errors(_open_read_verify, case)
    assert err is not None and "c.trace" in str(err)


def _reseal_index(case: str) -> None:
    """Make the manifest agree with the (mutated) index file's size and CRC-32, so that the checks
    of its columns, not its checksum, meet the mutation."""
    import zlib
    raw = open(os.path.join(case, "index.safetensors"), "rb").read()
    mpath = os.path.join(case, "manifest.json")
    doc = json.load(open(mpath))
    doc["index"].update(bytes=len(raw), crc32=f"{zlib.crc32(raw):08x}")
    with open(mpath, "w") as f:
        json.dump(doc, f)


@fuzz_settings()
@given(st.booleans(), mutations)
def test_mutated_stage_index(tmp_path_factory, reseal, muts):
    """Byte mutations of index.safetensors: caught by its CRC, or (resealed) by its column checks."""
    case = _case(tmp_path_factory, "indexed")
    target = os.path.join(case, "index.safetensors")
    data = bytearray(open(target, "rb").read())
    for how, where, payload in muts:
        data = bytearray(_mutate(data, how, where, payload))
    with open(target, "wb") as f:
        f.write(bytes(data))
    if reseal:
        _reseal_index(case)
    err = only_parity_errors(_open_read_verify, case)
    if err is not None and err.path is not None:
        assert "c.trace" in err.path, err


@fuzz_settings()
@given(st.sampled_from(["keys", "dtype", "ndim", "dims", "file", "begin", "end", "meta", "meta_json"]),
       st.integers(0, 10**6), st.integers(-2**40, 2**40))
def test_stage_index_column_value(tmp_path_factory, column, where, value):
    """Structured: one value of one column of the index changes (the index resealed)."""
    import struct
    case = _case(tmp_path_factory, "indexed")
    target = os.path.join(case, "index.safetensors")
    raw = bytearray(open(target, "rb").read())
    (n,) = struct.unpack("<Q", raw[:8])
    col = json.loads(raw[8:8 + n])[column]
    begin, end = col["data_offsets"]
    size = {"I64": 8, "I32": 4, "U8": 1}[col["dtype"]]
    count = (end - begin) // size
    if count:
        at = 8 + n + begin + (where % count) * size
        raw[at:at + size] = (value % (1 << (8 * size))).to_bytes(size, "little")
        with open(target, "wb") as f:
            f.write(bytes(raw))
        _reseal_index(case)
    err = only_parity_errors(_open_read_verify, case)
    if err is not None and err.path is not None:
        assert "c.trace" in err.path, err
