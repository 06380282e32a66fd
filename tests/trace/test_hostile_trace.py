"""Hostile traces: every corrupt manifest, journal or data file is a TraceFormatError naming the
file (and the stage, tensor or journal line at fault), never a raw exception; no link out of the
trace directory is followed unless asked; a writer never writes through a link.

Each case starts from a trace written with the public API, then mutates one of its files.
"""

import json
import os
import struct

import numpy as np
import pytest

import parity
from parity.errors import ParityError, TraceError, TraceFormatError
from parity.trace import TraceWriter, load_trace


# -- seeds -------------------------------------------------------------------------------------

@pytest.fixture
def trace(tmp_path):
    """A complete trace: a tensor "x", a text stage "t", a second occurrence "x#1"."""
    path = str(tmp_path / "h.trace")
    with parity.record(path):
        parity.tap("x", np.arange(3.0))
        parity.tap("t", "hello")
        parity.tap("x", np.ones((2, 2), np.float32))
    return path


@pytest.fixture
def journaled(tmp_path):
    """An interrupted capture: no final manifest, two stages in the journal (one shard each)."""
    path = str(tmp_path / "j.trace")
    w = TraceWriter(path, buffer_bytes=1)
    w.add("y", np.arange(2.0))
    w.add("z", np.arange(4.0))
    w._journal.flush()  # what a kill leaves behind
    assert load_trace(path).keys() == ["y", "z"]
    yield path
    w._journal.close()


def _manifest(path):
    return os.path.join(path, "manifest.json")


def _journal(path):
    return os.path.join(path, "journal.jsonl")


def _data(path, n=0):
    return os.path.join(path, "data", f"{n:06d}.safetensors")


def _read_doc(path):
    with open(_manifest(path), "rb") as f:
        return json.loads(f.read())


def _write(file, data: bytes):
    with open(file, "wb") as f:
        f.write(data)


def _write_doc(path, doc, replace=()):
    text = json.dumps(doc, indent=1)
    for old, new in replace:
        text = text.replace(old, new)
    _write(_manifest(path), text.encode())


def _raises(path, *needles, error=TraceFormatError):
    """load_trace(path) raises ``error`` (not a subclass of anything else), naming each needle."""
    with pytest.raises(ParityError) as e:
        t = load_trace(path)
        for s in t:  # reading the values is part of it
            t.array(s)
    assert isinstance(e.value, error), f"{type(e.value).__name__}: {e.value}"
    text = str(e.value)
    for needle in needles:
        assert needle in text, f"{needle!r} not in {text!r}"
    return text


# -- 1. JSON: nesting, non-finite numbers, huge integers -----------------------------------------

@pytest.mark.parametrize("opening", ["[", "{\"a\":"])
def test_deeply_nested_manifest_is_refused_before_parsing(trace, opening):
    _write(_manifest(trace), (opening * 5000).encode() + b"1" + (("]" if opening == "[" else "}") * 5000).encode())
    _raises(trace, "manifest.json", "nests JSON", "5000 deep")


def test_nesting_inside_strings_is_not_counted(trace):
    doc = _read_doc(trace)
    doc["meta"] = {"brackets": "[" * 5000, "escaped": '\\"[[[' * 100}
    _write_doc(trace, doc)
    assert load_trace(trace).meta["brackets"] == "[" * 5000


def test_nesting_just_under_the_limit_is_read(trace):
    from parity.limits import MAX_NESTING
    doc = _read_doc(trace)
    deep = 0
    for _ in range(MAX_NESTING - 2):  # the manifest object and meta add two levels
        deep = [deep]
    doc["meta"] = {"deep": deep}
    _write_doc(trace, doc)
    assert load_trace(trace).meta["deep"] == deep
    doc["meta"] = {"deep": [deep]}
    _write_doc(trace, doc)
    _raises(trace, "manifest.json", "nests JSON")


def test_deeply_nested_journal_line_names_the_line(journaled):
    with open(_journal(journaled), "ab") as f:
        f.write(b"[" * 5000 + b"]" * 5000 + b"\n")
    _raises(journaled, "journal.jsonl", "line 5", "nests JSON")


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999", "-1e999"])
def test_non_finite_number_in_a_stage_names_the_stage(trace, literal):
    doc = _read_doc(trace)
    doc["stages"][0]["provenance"]["weird"] = "@@"
    _write_doc(trace, doc, replace=[('"@@"', literal)])
    _raises(trace, "manifest.json", "stage 'x'", literal)


@pytest.mark.parametrize("literal", ["NaN", "1e999"])
def test_non_finite_number_in_meta_is_refused(trace, literal):
    doc = _read_doc(trace)
    doc["meta"] = {"v": "@@"}
    _write_doc(trace, doc, replace=[('"@@"', literal)])
    _raises(trace, "manifest.json", '"meta"', literal)


def test_five_thousand_digit_integer_is_refused(trace):
    doc = _read_doc(trace)
    doc["stages"][0]["shape"] = ["@@"]
    _write_doc(trace, doc, replace=[('"@@"', "9" * 5000)])
    _raises(trace, "manifest.json", "more than 4300 digits")


def test_five_thousand_digit_integer_is_refused_with_the_int_limit_lifted(trace):
    import sys
    doc = _read_doc(trace)
    doc["meta"] = {"n": "@@"}
    _write_doc(trace, doc, replace=[('"@@"', "9" * 5000)])
    old = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    try:
        _raises(trace, "manifest.json", "more than 4300 digits")
    finally:
        sys.set_int_max_str_digits(old)


def test_twenty_five_digit_shape_is_out_of_range(trace):
    doc = _read_doc(trace)
    doc["stages"][0]["shape"] = [10**25]
    _write_doc(trace, doc)
    _raises(trace, "manifest.json", "stage 'x'", "shape must be a list of non-negative integers")


def test_manifest_that_is_not_utf8(trace):
    _write(_manifest(trace), b'{"format": "\xff\xfe"}')
    _raises(trace, "manifest.json", "not UTF-8")


@pytest.mark.parametrize("literal", ["NaN", "1e999"])
def test_non_finite_number_in_journal_names_the_line(journaled, literal):
    with open(_journal(journaled), "ab") as f:
        f.write(b'{"stage": {"key": "w", "kind": "text", "text": "a", "occurrence": ' + literal.encode() + b"}}\n")
    _raises(journaled, "journal.jsonl", "line 5", literal)


# -- 2. field types and ranges --------------------------------------------------------------------

BAD_STAGE_FIELDS = [
    # (stage #, field, value, message fragment)
    (0, "shape", ["@1e999"], "shape must be a list of non-negative integers, got [1e999]"),
    (0, "shape", [None], "shape must be a list of non-negative integers, got [None]"),
    (0, "shape", [-1], "shape must be a list of non-negative integers, got [-1]"),
    (0, "shape", "abc", "shape must be a list of non-negative integers, got 'abc'"),
    (0, "shape", [3.0], "shape must be a list of non-negative integers, got [3.0]"),
    (0, "shape", [True, 3], "shape must be a list of non-negative integers"),
    (0, "shape", {"a": 1}, "shape must be a list of non-negative integers"),
    (2, "occurrence", "@NaN", "occurrence must be a non-negative integer, got NaN"),
    (2, "occurrence", [1], "occurrence must be a non-negative integer, got [1]"),
    (2, "occurrence", True, "occurrence must be a non-negative integer, got True"),
    (2, "occurrence", -2, "occurrence must be a non-negative integer, got -2"),
    (0, "dtype", 5, "dtype must be one of"),
    (0, "dtype", "F99", "dtype must be one of"),
    (0, "dtype", None, "dtype must be one of"),
    (0, "file", 5, "file must be the name of a data file, got 5"),
    (0, "file", ["data/000000.safetensors"], "file must be the name of a data file"),
    (0, "file", "data/000009.safetensors", "which the manifest does not list"),
    (0, "axes", "ab", "axes must be a list of strings, got 'ab'"),
    (0, "axes", [1], "axes must be a list of strings"),
    (0, "axes", ["a", "b"], "axes ['a', 'b'] do not match shape (3,)"),
    (0, "units", 5, "units must be a string"),
    (0, "indices", [1], "indices must be an object"),
    (0, "indices", {"i": [1]}, "indices must be an object of strings, numbers and booleans"),
    (0, "provenance", "here", "provenance must be an object"),
    (0, "kind", 5, "unknown kind 5"),
    (0, "kind", "blob", "unknown kind 'blob'"),
    (1, "text", 5, "text stage without text"),
]


@pytest.mark.parametrize("pos, field, value, message", BAD_STAGE_FIELDS,
                         ids=[f"{f}={v!r}" for _, f, v, _ in BAD_STAGE_FIELDS])
def test_bad_stage_field_names_file_stage_and_expectation(trace, pos, field, value, message):
    doc = _read_doc(trace)
    key = doc["stages"][pos]["key"]
    replace = []
    if isinstance(value, list) and value and isinstance(value[0], str) and value[0].startswith("@"):
        replace = [(f'"{value[0]}"', value[0][1:])]
    elif isinstance(value, str) and value.startswith("@"):
        replace = [(f'"{value}"', value[1:])]
    doc["stages"][pos][field] = value
    _write_doc(trace, doc, replace=replace)
    _raises(trace, "manifest.json", f"stage {key!r}", message)


@pytest.mark.parametrize("key", [5, None, ["x"], "../x", "a b"])
def test_bad_stage_key(trace, key):
    doc = _read_doc(trace)
    doc["stages"][0]["key"] = key
    _write_doc(trace, doc)
    _raises(trace, "manifest.json", "stage #0")


@pytest.mark.parametrize("entry", [[1], "x", 5, None])
def test_stage_entry_that_is_not_an_object(trace, entry):
    doc = _read_doc(trace)
    doc["stages"][1] = entry
    _write_doc(trace, doc)
    _raises(trace, "manifest.json", "stage #1", "expected a stage entry")


@pytest.mark.parametrize("field, value, message", [
    ("stages", {"a": 1}, '"stages" must be a list'),
    ("files", [1], '"files" must be an object'),
    ("meta", [1], '"meta" must be an object'),
    ("complete", "yes", '"complete" must be true or false'),
    ("schema_version", True, "schema_version True"),
    ("schema_version", "1", "schema_version '1'"),
    ("incomplete_reason", 5, '"incomplete_reason" must be a string'),
])
def test_bad_top_level_field(trace, field, value, message):
    doc = _read_doc(trace)
    doc[field] = value
    _write_doc(trace, doc)
    _raises(trace, "manifest.json", message)


@pytest.mark.parametrize("info, message", [
    ({"bytes": 208, "crc32": 5}, "crc32 must be 8 lowercase hex digits"),
    ({"bytes": 208, "crc32": "zz"}, "crc32 must be 8 lowercase hex digits"),
    ({"bytes": "208", "crc32": "00000000"}, "bytes must be a non-negative integer"),
    ({"bytes": -1, "crc32": "00000000"}, "bytes must be a non-negative integer"),
    ({"bytes": 7, "crc32": "00000000"}, "manifest says 7"),
    ({"bytes": 208, "sha256": [1]}, "sha256 must be 64 lowercase hex digits"),
    ([1], "expected an object with bytes and crc32"),
])
def test_bad_file_entry(trace, info, message):
    doc = _read_doc(trace)
    if isinstance(info, dict) and info.get("bytes") == 208:
        info["bytes"] = doc["files"]["data/000000.safetensors"]["bytes"]
    doc["files"]["data/000000.safetensors"] = info
    _write_doc(trace, doc)
    _raises(trace, "data/000000.safetensors", message)


@pytest.mark.parametrize("line, message", [
    (b"[1, 2]", "expected a JSON object"),
    (b'"stage"', "expected a JSON object"),
    (b"42", "expected a JSON object"),
    (b"null", "expected a JSON object"),
    (b"{not json", "is not valid JSON"),
    (b'{"other": 1}', 'expected a "file" or a "stage" record'),
    (b'{"stage": [1]}', '"stage" must be a stage entry'),
    (b'{"stage": {"kind": "text"}}', "the stage entry has no key"),
    (b'{"file": "../../etc/passwd", "bytes": 1, "crc32": "00000000"}', "data files must be named"),
    (b'{"file": "data/000007.safetensors", "bytes": "x", "crc32": "00000000"}', "bytes must be a non-negative"),
])
def test_bad_journal_line_names_the_line(journaled, line, message):
    with open(_journal(journaled), "ab") as f:
        f.write(line + b"\n")
    _raises(journaled, "journal.jsonl", "line 5", message)


def test_bad_field_of_a_journaled_stage_names_the_line(journaled):
    with open(_journal(journaled)) as f:
        lines = f.read().splitlines()
    rec = json.loads(lines[1])
    rec["stage"]["shape"] = [-1]
    lines[1] = json.dumps(rec)
    _write(_journal(journaled), ("\n".join(lines) + "\n").encode())
    _raises(journaled, "journal.jsonl", "line 2", "stage 'y'", "shape must be a list of non-negative integers")


def test_unfinished_last_journal_line_is_ignored(journaled):
    with open(_journal(journaled), "ab") as f:
        f.write(b'{"stage": {"key": "w", "ki')  # the writer was killed mid-line
    assert load_trace(journaled).keys() == ["y", "z"]


# -- 3. safetensors headers -------------------------------------------------------------------------

def _header(obj) -> bytes:
    return obj if isinstance(obj, bytes) else json.dumps(obj).encode()


def _write_data(path, header, data_len=24, prefix_len=None):
    raw = _header(header)
    n = len(raw) if prefix_len is None else prefix_len
    _write(_data(path), struct.pack("<Q", n) + raw + b"\0" * data_len)


@pytest.fixture
def one(tmp_path):
    """A trace of a single F64 stage "a" of shape (3,): 24 data bytes."""
    path = str(tmp_path / "one.trace")
    with parity.record(path):
        parity.tap("a", np.arange(3.0))
    return path


def test_well_formed_replacement_header_reads(one):
    _write_data(one, {"a": {"dtype": "F64", "shape": [3], "data_offsets": [0, 24]}})
    doc = _read_doc(one)
    doc["files"]["data/000000.safetensors"]["bytes"] = os.path.getsize(_data(one))
    _write_doc(one, doc)
    assert load_trace(one)["a"].tolist() == [0.0, 0.0, 0.0]


HOSTILE_HEADERS = [
    (b'{"a":{"dtype":"F64","shape":[1e999],"data_offsets":[0,1e999]}}', "shape must be a list"),
    (b'{"a":{"dtype":"F64","shape":[3],"data_offsets":[0,1e999]}}', "data_offsets must be two non-negative"),
    (b'{"a":{"dtype":"F64","shape":[3],"data_offsets":[NaN,24]}}', "data_offsets must be two non-negative"),
    ({"a": {"dtype": "F64", "shape": [-3], "data_offsets": [0, 24]}}, "shape must be a list"),
    ({"a": {"dtype": "F64", "shape": ["3"], "data_offsets": [0, 24]}}, "shape must be a list"),
    ({"a": {"dtype": "F64", "shape": [3.0], "data_offsets": [0, 24]}}, "shape must be a list"),
    ({"a": {"dtype": "F64", "shape": [1] * 65, "data_offsets": [0, 8]}}, "shape must be a list"),
    ({"a": {"dtype": "F64", "shape": [3], "data_offsets": [0, -24]}}, "data_offsets must be two non-negative"),
    ({"a": {"dtype": "F64", "shape": [3], "data_offsets": [24, 0]}}, "end before they begin"),
    ({"a": {"dtype": "F64", "shape": [3], "data_offsets": [0, 24.0]}}, "data_offsets must be two"),
    ({"a": {"dtype": "F64", "shape": [3], "data_offsets": [0]}}, "data_offsets must be two"),
    ({"a": {"dtype": "F64", "shape": [3], "data_offsets": "0-24"}}, "data_offsets must be two"),
    ({"a": {"dtype": "F64", "shape": [4], "data_offsets": [0, 24]}}, "which needs 32"),
    ({"a": {"dtype": "F64", "shape": [3], "data_offsets": [0, 48]}}, "the data buffer holds 24 bytes"),
    ({"a": {"dtype": "F64", "shape": [3], "data_offsets": [2**70, 2**70 + 24]}}, "data_offsets must be two"),
    ({"a": {"dtype": "F64", "shape": [0, 2**62, 2**62], "data_offsets": [0, 0]}}, "more than 2**63 bytes"),
    ({"a": {"dtype": "X128", "shape": [3], "data_offsets": [0, 24]}}, "unknown dtype 'X128'"),
    ({"a": {"dtype": 7, "shape": [3], "data_offsets": [0, 24]}}, "unknown dtype 7"),
    ({"a": {"shape": [3], "data_offsets": [0, 24]}}, "has no dtype"),
    ({"a": [1, 2]}, "expected an object with dtype"),
    ({"a": {"dtype": "F64", "shape": [3], "data_offsets": [0, 24]}, "__metadata__": [1]}, "__metadata__ must be"),
    ({"a": {"dtype": "F64", "shape": [1], "data_offsets": [0, 8]},
      "b": {"dtype": "F64", "shape": [2], "data_offsets": [0, 16]}}, "overlap"),
    ({"a": {"dtype": "F64", "shape": [1], "data_offsets": [16, 24]},
      "b": {"dtype": "F64", "shape": [1], "data_offsets": [0, 8]}}, "unused"),
    (b'{"a":' + b"[" * 5000 + b"]" * 5000 + b"}", "nests JSON"),
    (b'{"a":' * 3000 + b"1" + b"}" * 3000, "nests JSON"),
    (b"[1, 2]", "does not start with '{'"),
    (b"", "does not start with '{'"),
    (b'{"a": ' + b"9" * 5000 + b"}", "more than 4300 digits"),
    (b'{"a": \xff}', "not UTF-8"),
]


@pytest.mark.parametrize("header, message", HOSTILE_HEADERS, ids=[m for _, m in HOSTILE_HEADERS])
def test_hostile_safetensors_header(one, header, message):
    _write_data(one, header)
    _raises(one, "000000.safetensors", message)


def test_header_entry_errors_name_the_tensor(one):
    _write_data(one, {"a": {"dtype": "F64", "shape": [-3], "data_offsets": [0, 24]}})
    _raises(one, "000000.safetensors", 'tensor "a"')


@pytest.mark.parametrize("declared", [2**63, 2**64 - 1, 10**9])
def test_header_length_larger_than_the_file(one, declared):
    _write_data(one, {"a": {"dtype": "F64", "shape": [3], "data_offsets": [0, 24]}}, prefix_len=declared)
    _raises(one, "000000.safetensors", f"header length {declared} does not fit")


def test_show_exits_2_on_a_hostile_header(one, capsys):
    from parity.cli import EXIT_ERROR, main
    _write_data(one, b'{"a":{"dtype":"F64","shape":[1e999],"data_offsets":[0,1e999]}}')
    assert main(["show", one]) == EXIT_ERROR
    out = capsys.readouterr()
    assert "000000.safetensors" in out.out + out.err and "Traceback" not in out.out + out.err


def test_data_file_that_is_a_fifo_is_refused_without_blocking(one):
    os.remove(_data(one))
    os.mkfifo(_data(one))
    _raises(one, "000000.safetensors", "not a regular file")


def test_manifest_that_is_a_directory(one):
    os.remove(_manifest(one))
    os.mkdir(_manifest(one))
    _raises(one, "manifest.json", "directory")


# -- 4. data-file names ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["/etc/passwd", "../x.safetensors", "data/../../x.safetensors", "data\\000000.safetensors",
                                  "data/000000.safetensors\n", "data/000000.safetensors\x00", "data/000000.safetensors/..",
                                  "000000.safetensors", "data/0.safetensors", "data//000000.safetensors"])
def test_data_file_names_must_be_plain(trace, name):
    doc = _read_doc(trace)
    doc["files"][name] = doc["files"].pop("data/000000.safetensors")
    for s in doc["stages"]:
        if "file" in s:
            s["file"] = name
    _write_doc(trace, doc)
    _raises(trace, "manifest.json", "data files must be named data/NNNNNN.safetensors")


# -- 5. symbolic links out of the trace --------------------------------------------------------------

def _move_out(src, dst):
    os.replace(src, dst)
    os.symlink(dst, src)


def test_data_file_link_out_of_the_trace_is_refused(trace, tmp_path):
    _move_out(_data(trace), str(tmp_path / "elsewhere.safetensors"))
    text = _raises(trace, "000000.safetensors", "symbolic link", error=TraceError)
    assert "follow_symlinks=True" in text
    t = load_trace(trace, follow_symlinks=True)
    assert t["x"].tolist() == [0.0, 1.0, 2.0] and t.verify() == []


def test_data_directory_link_out_of_the_trace_is_refused(trace, tmp_path):
    _move_out(os.path.join(trace, "data"), str(tmp_path / "elsewhere"))
    _raises(trace, os.path.join(trace, "data"), "symbolic link", error=TraceError)
    assert load_trace(trace, follow_symlinks=True)["x"].tolist() == [0.0, 1.0, 2.0]


def test_manifest_link_out_of_the_trace_is_refused(trace, tmp_path):
    _move_out(_manifest(trace), str(tmp_path / "elsewhere.json"))
    _raises(trace, "manifest.json", "symbolic link", error=TraceError)
    assert load_trace(trace, follow_symlinks=True).keys() == ["x", "t", "x#1"]


def test_journal_link_out_of_the_trace_is_refused(journaled, tmp_path):
    _move_out(_journal(journaled), str(tmp_path / "elsewhere.jsonl"))
    _raises(journaled, "journal.jsonl", "symbolic link", error=TraceError)
    assert load_trace(journaled, follow_symlinks=True).keys() == ["y", "z"]


def test_links_inside_the_trace_and_a_linked_trace_directory_are_fine(trace, tmp_path):
    os.replace(_data(trace), os.path.join(trace, "data", "real.bin"))
    os.symlink("real.bin", _data(trace))
    os.symlink(trace, str(tmp_path / "alias.trace"))
    assert load_trace(str(tmp_path / "alias.trace"))["x"].tolist() == [0.0, 1.0, 2.0]


def test_data_file_link_to_a_device_is_refused_even_when_following(one):
    os.remove(_data(one))
    os.symlink("/dev/zero", _data(one))
    _raises(one, "000000.safetensors", "symbolic link", error=TraceError)
    with pytest.raises(TraceFormatError, match="not a regular file"):
        load_trace(one, follow_symlinks=True)


# -- 6. the writer never writes through a link ---------------------------------------------------------

@pytest.fixture
def outside(tmp_path):
    """A directory outside the trace, with a file whose content must never change."""
    d = tmp_path / "outside"
    d.mkdir()
    (d / "keep.txt").write_text("keep")
    return d


def _untouched(outside):
    assert sorted(os.listdir(outside)) == ["keep.txt"] and (outside / "keep.txt").read_text() == "keep"


def test_recording_onto_a_trace_whose_data_dir_is_a_link_is_refused(trace, outside):
    import shutil
    shutil.rmtree(os.path.join(trace, "data"))
    os.symlink(outside, os.path.join(trace, "data"))
    with pytest.raises(TraceError, match="symbolic link") as e:
        with parity.record(trace):
            parity.tap("x", np.arange(3.0))
    assert e.value.path == os.path.join(trace, "data")
    _untouched(outside)


@pytest.mark.parametrize("name", ["manifest.json", "journal.jsonl", "run.json"])
def test_recording_onto_a_trace_whose_file_is_a_link_is_refused(trace, outside, name):
    full = os.path.join(trace, name)
    if os.path.exists(full):
        os.remove(full)
    os.symlink(outside / "keep.txt", full)
    with pytest.raises(TraceError, match="symbolic link") as e:
        TraceWriter(trace)
    assert e.value.path == full
    _untouched(outside)


def _plant(trace, outside, names):
    for name in names:
        os.symlink(outside / "keep.txt", os.path.join(trace, name))


OLD_FIXED_NAMES = ["manifest.json.tmp", "run.json.tmp", "stages.json.tmp", "pending.json.tmp",
                   "data/000000.safetensors.tmp", "data/000001.safetensors.tmp", "data/000002.safetensors.tmp"]


def test_links_planted_at_temporary_names_are_never_written_through(tmp_path, outside, monkeypatch):
    from parity.trace import _batch
    monkeypatch.setattr(_batch, "_SPILL_BYTES", 0)  # spill rendered entries to their file too
    path = str(tmp_path / "w.trace")
    w = TraceWriter(path, buffer_bytes=1 << 20)
    _plant(path, outside, OLD_FIXED_NAMES)
    w.add("a", np.arange(3.0))  # buffered
    w.add_batch(["b", "c"], [(2,), (1,)], np.arange(3.0))
    w.add("big", np.zeros(1 << 18))  # a shard of its own
    w.close()
    _untouched(outside)
    t = load_trace(path)
    assert t.keys() == ["a", "b", "c", "big"] and t.verify() == [] and t["b"].tolist() == [0.0, 1.0]


@pytest.mark.parametrize("impl", ["c", "python"])
def test_packed_files_never_write_through_a_planted_link(tmp_path, outside, monkeypatch, impl):
    from parity.trace import datafiles
    from parity.trace.checksum import crc32
    from parity.trace.staging import Arena
    from parity.trace.writer import PackedStage
    if impl == "c" and datafiles._stage_write is None:
        pytest.skip("the C module parity.trace._stage is not built")
    if impl == "python":
        monkeypatch.setattr(datafiles, "_stage_write", None)
    monkeypatch.setattr(datafiles, "_DIRECT_MIN", 0)
    path = str(tmp_path / "p.trace")
    w = TraceWriter(path)
    _plant(path, outside, OLD_FIXED_NAMES)
    arena = Arena(1 << 20)
    v = np.arange(1001, dtype=np.float32)
    arena.array[:v.nbytes] = v.view(np.uint8)
    stage = PackedStage("v", "F32", v.shape, 0, v.nbytes, crc32(arena.array[:v.nbytes]))
    w.add_packed([stage], arena.array, size=v.nbytes)
    w.close()
    _untouched(outside)
    t = load_trace(path)
    assert t.verify() == [] and np.array_equal(t["v"], v)


def test_c_write_file_refuses_an_existing_temporary_file(tmp_path):
    stage = pytest.importorskip("parity.trace._stage")
    if not hasattr(stage, "write_file"):
        pytest.skip("no POSIX I/O in this build")
    from parity.trace.staging import Arena
    arena = Arena(1 << 20)
    (tmp_path / "x.tmp").write_text("keep")
    with pytest.raises(FileExistsError):
        stage.write_file(str(tmp_path / "x.tmp"), str(tmp_path / "x"), b"h", arena.array, 10, False)
    assert (tmp_path / "x.tmp").read_text() == "keep" and not (tmp_path / "x").exists()


def test_scratch_files_have_unguessable_names(tmp_path):
    path = str(tmp_path / "k.trace")
    w = TraceWriter(path, buffer_bytes=1)
    w.add("a", np.arange(3.0))
    names = os.listdir(path)
    assert "stages.json.tmp" not in names
    scratch = [n for n in names if n.endswith(".tmp")]
    assert len(scratch) == 1 and len(scratch[0]) > len(".stages.json.tmp..tmp") + 8
    w.close()
    assert not [n for n in os.listdir(path) if n.endswith(".tmp")]
    assert not [n for n in os.listdir(os.path.join(path, "data")) if n.endswith(".tmp")]
