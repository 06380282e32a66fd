"""Hostile binary dumps and exports: every bad input is a ParityError naming the file (issue 15)."""

import os
import struct
import zipfile

import numpy as np
import pytest

import parity
from parity.errors import ImportFormatError, UsageError
from parity.importers import export_trace, import_files
from parity.importers.aprt import write_aprt


def _dump(tmp_path, name="dump"):
    d = tmp_path / name
    (d / "layer-0").mkdir(parents=True)
    write_aprt(d / "layer-0" / "x.bin", np.float32([1, 2, 3]), layer=0)
    return d


# -- 1. order.txt ---------------------------------------------------------------------------------


def test_order_file_invalid_utf8_names_file_and_line(tmp_path):
    d = _dump(tmp_path)
    (d / "order.txt").write_bytes(b"# order\nlayer-0/x.bin\n\xff\xfe\n")
    with pytest.raises(ImportFormatError) as e:
        import_files([d], tmp_path / "t.trace")
    assert e.value.path == str(d / "order.txt")
    assert "line 3 is not UTF-8" in str(e.value) and "order.txt" in str(e.value)


def test_order_file_nul_byte(tmp_path):
    d = _dump(tmp_path)
    (d / "order.txt").write_bytes(b"layer-0/x.bin\x00\n")
    with pytest.raises(ImportFormatError, match="order.txt: line 1 holds a NUL byte"):
        import_files([d], tmp_path / "t.trace")


# -- 2. npy headers -------------------------------------------------------------------------------


def _npy(header: str, data: bytes = b"", version: int = 1) -> bytes:
    raw = header.encode("latin-1")
    if version == 1:
        return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(raw)) + raw + data
    return b"\x93NUMPY" + bytes([version, 0]) + struct.pack("<I", len(raw)) + raw + data


NPY_HEADERS = {
    "huge dim": ("{'descr': '<f8', 'fortran_order': False, 'shape': (99999999999999999999999,), }", "digits"),
    "float dim": ("{'descr': '<f8', 'fortran_order': False, 'shape': (1e999,), }", "shape"),
    "negative dim": ("{'descr': '<f8', 'fortran_order': False, 'shape': (-1,), }", "shape"),
    "too big": ("{'descr': '<f8', 'fortran_order': False, 'shape': (4294967296, 4294967296), }", "declares"),
    "more than the file": ("{'descr': '<f8', 'fortran_order': False, 'shape': (1000,), }", "only"),
    "unclosed": ("{'descr': '<f8', 'fortran_order': False, 'shape': (3,", "ends before"),
    "tokenize": ("{'descr': '<f8', 'fortran_order': False, 'shape': (3,), } '''", "Python literal"),
    "call": ("{'descr': __import__('os'), 'fortran_order': False, 'shape': (3,)}", "Python literal"),
    "extra key": ("{'descr': '<f8', 'fortran_order': False, 'shape': (3,), 'x': True}", "exactly descr"),
    "missing key": ("{'descr': '<f8', 'shape': (3,)}", "exactly descr"),
    "complex": ("{'descr': '<c16', 'fortran_order': False, 'shape': (3,), }", "cannot store"),
    "structured": ("{'descr': [('a', '<f8')], 'fortran_order': False, 'shape': (3,), }", "structured"),
    "object": ("{'descr': '|O', 'fortran_order': False, 'shape': (3,), }", "without unpickling"),
    "deep": ("{'descr': '<f8', 'fortran_order': False, 'shape': " + "(" * 5000 + ")" * 5000 + "}", "shape"),
    "not a tuple": ("{'descr': '<f8', 'fortran_order': False, 'shape': (3), }", "not a tuple"),
    "fortran not bool": ("{'descr': '<f8', 'fortran_order': 'no', 'shape': (3,), }", "fortran_order"),
}


@pytest.mark.parametrize("case", sorted(NPY_HEADERS))
def test_hostile_npy_header_is_an_import_error_naming_the_file(tmp_path, case):
    header, expected = NPY_HEADERS[case]
    p = tmp_path / "bad.npy"
    p.write_bytes(_npy(header, b"\0" * 24))
    with pytest.raises(ImportFormatError) as e:
        import_files([p], tmp_path / "t.trace")
    assert e.value.path == str(p) and expected in str(e.value), str(e.value)


def test_npy_preamble_checks(tmp_path):
    p = tmp_path / "bad.npy"
    for raw, expected in [(b"\x93NUMPY\x01", "shorter than an .npy preamble"),
                          (b"\x93NUMPY\x09\x00\x10\x00", "version 9.0 is unknown"),
                          (b"\x93NUMPY\x01\x00\xff\xff{}", "more than the"),
                          (b"\x93NUMPY\x02\x00\xff\xff\xff\x7f{}", "more than the")]:
        p.write_bytes(raw)
        with pytest.raises(ImportFormatError, match=expected) as e:
            import_files([p], tmp_path / "t.trace")
        assert e.value.path == str(p)


def test_valid_npy_variants_still_import(tmp_path):
    a = np.arange(6, dtype=">f4").reshape(2, 3)
    np.save(tmp_path / "big_endian.npy", a)
    np.save(tmp_path / "fortran.npy", np.asfortranarray(np.arange(6.0).reshape(2, 3)))
    np.save(tmp_path / "scalar.npy", np.float64(2.5))
    np.save(tmp_path / "empty.npy", np.zeros((0, 3), np.int16))
    (tmp_path / "v3.npy").write_bytes(_npy("{'descr': '<i4', 'fortran_order': False, 'shape': (2,), }",
                                           struct.pack("<ii", 7, -8), version=3))
    t = parity.load_trace(import_files([tmp_path / f for f in ("big_endian.npy", "fortran.npy", "scalar.npy",
                                                                "empty.npy", "v3.npy")], tmp_path / "t.trace").path)
    assert np.array_equal(t["big_endian"], a) and np.array_equal(t["fortran"], np.arange(6.0).reshape(2, 3))
    assert t["scalar"].shape == () and t["empty"].shape == (0, 3) and t["v3"].tolist() == [7, -8]


# -- 3. npz archives ------------------------------------------------------------------------------


def _npz(tmp_path, members, compression=zipfile.ZIP_DEFLATED, name="bad.npz"):
    p = tmp_path / name
    with zipfile.ZipFile(p, "w", compression) as z:
        for n, data in members.items():
            z.writestr(n, data)
    return p


def _npy_bytes(arr):
    import io

    b = io.BytesIO()
    np.save(b, arr)
    return b.getvalue()


def test_npz_hostile_member_header_names_file_and_member(tmp_path):
    p = _npz(tmp_path, {"ok.npy": _npy_bytes(np.arange(3.0)),
                        "a.npy": _npy("{'descr': '<f8', 'shape': (1e999,), }")})
    with pytest.raises(ImportFormatError) as e:
        import_files([p], tmp_path / "t.trace")
    assert e.value.path == str(p) and "member 'a.npy'" in str(e.value)


def test_npz_bad_deflate_data(tmp_path):
    p = _npz(tmp_path, {"a.npy": _npy_bytes(np.arange(1000.0))})
    raw = bytearray(p.read_bytes())
    start = raw.index(b"a.npy") + len("a.npy")  # the local header's name, then the deflate stream
    for i in range(start + 5, start + 60):
        raw[i] ^= 0x5A
    p.write_bytes(bytes(raw))
    with pytest.raises(ImportFormatError, match="member 'a.npy'") as e:
        import_files([p], tmp_path / "t.trace")
    assert e.value.path == str(p)


def test_npz_unsupported_compression_and_garbage_zip(tmp_path):
    p = _npz(tmp_path, {"a.npy": _npy_bytes(np.arange(3.0))}, compression=zipfile.ZIP_BZIP2)
    with pytest.raises(ImportFormatError, match=r"bad.npz: member 'a.npy' is compressed with zip method 12"):
        import_files([p], tmp_path / "t.trace")
    p.write_bytes(b"PK\x03\x04" + b"\x00" * 100)
    with pytest.raises(ImportFormatError, match="bad.npz: is not a readable .npz"):
        import_files([p], tmp_path / "t.trace")


def test_npz_truncated(tmp_path):
    p = _npz(tmp_path, {"a.npy": _npy_bytes(np.arange(1000.0))}, compression=zipfile.ZIP_STORED)
    raw = p.read_bytes()
    p.write_bytes(raw[:-200])
    with pytest.raises(ImportFormatError) as e:
        import_files([p], tmp_path / "t.trace")
    assert e.value.path == str(p)


def _patch_declared_size(p, size):
    """Rewrite the uncompressed size of the (only) member, in both the local and central headers."""
    raw = bytearray(p.read_bytes())
    struct.pack_into("<I", raw, 22, size)  # local file header
    c = raw.index(b"PK\x01\x02")
    struct.pack_into("<I", raw, c + 24, size)  # central directory
    p.write_bytes(bytes(raw))


def test_npz_member_declaring_a_huge_size_is_refused_before_allocating(tmp_path):
    p = _npz(tmp_path, {"a.npy": _npy_bytes(np.zeros(1000))})
    _patch_declared_size(p, 3 * 2**30)
    with pytest.raises(ImportFormatError, match="member 'a.npy' declares 3221225472 bytes from .* deflate") as e:
        import_files([p], tmp_path / "t.trace")
    assert e.value.path == str(p)


def test_npz_member_over_the_stage_limit(tmp_path, monkeypatch):
    p = _npz(tmp_path, {"a.npy": _npy_bytes(np.zeros(100_000))})  # 800 kB of zeros: a high but honest ratio
    monkeypatch.setenv("PARITY_MAX_STAGE_BYTES", "100000")
    with pytest.raises(ImportFormatError, match="member 'a.npy' declares 800128 bytes; expected a size from 0 to 100000"):
        import_files([p], tmp_path / "t.trace")
    monkeypatch.setenv("PARITY_MAX_STAGE_BYTES", "1000000")
    assert parity.load_trace(import_files([p], tmp_path / "ok.trace").path)["a"].shape == (100_000,)


def test_npz_header_promising_more_than_the_member(tmp_path):
    p = _npz(tmp_path, {"a.npy": _npy("{'descr': '<f8', 'fortran_order': False, 'shape': (10000000,), }")})
    with pytest.raises(ImportFormatError, match="member 'a.npy' the array of shape .* but only"):
        import_files([p], tmp_path / "t.trace")


def test_npz_members_are_read_one_at_a_time(tmp_path, monkeypatch):
    from parity.importers import numpy_files

    p = tmp_path / "many.npz"
    np.savez(p, **{f"m{i}": np.full(1000, i, np.float64) for i in range(5)})
    live = []
    real = numpy_files._read_member

    def spy(z, info, path):
        arr = real(z, info, path)
        live.append(info.filename)
        return arr

    monkeypatch.setattr(numpy_files, "_read_member", spy)
    t = parity.load_trace(import_files([p], tmp_path / "t.trace").path)
    assert t.keys() == [f"m{i}" for i in range(5)] and live == [f"m{i}.npy" for i in range(5)]


def test_npz_members_cleaned_into_one_key_are_refused(tmp_path):
    p = _npz(tmp_path, {"a b.npy": _npy_bytes(np.arange(3.0)), "a_b.npy": _npy_bytes(np.arange(2.0))})
    with pytest.raises(ImportFormatError, match=r'bad.npz: .*a b.npy.* and .*a_b.npy.* both give the stage "a_b"'):
        import_files([p], tmp_path / "t.trace")


# -- 4. safetensors files -------------------------------------------------------------------------


def _st(tmp_path, header: bytes, data: bytes = b"\0" * 32, name="bad.safetensors"):
    p = tmp_path / name
    p.write_bytes(struct.pack("<Q", len(header)) + header + data)
    return p


@pytest.mark.parametrize("header, expected", [
    (b'{"a":{"dtype":"F64","shape":[1e999],"data_offsets":[0,1e999]}}', 'tensor "a"'),
    (b'{"a":{"dtype":"F64","shape":[3],"data_offsets":[0,32]}}', 'tensor "a"'),
    (b'{"a":{"dtype":"F64","shape":[4],"data_offsets":[0,99999999999999999999]}}', 'tensor "a"'),
    (b'{"a":{"dtype":"Q99","shape":[4],"data_offsets":[0,32]}}', 'tensor "a"'),
    (b'{"__metadata__":{"parity.order":"' + b"[" * 5000 + b'"},"a":{"dtype":"F64","shape":[4],"data_offsets":[0,32]}}',
     "parity.order"),
    (b'{"__metadata__":{"parity.order":"[1, 2]"},"a":{"dtype":"F64","shape":[4],"data_offsets":[0,32]}}',
     "parity.order"),
])
def test_hostile_safetensors_names_file_and_tensor(tmp_path, header, expected):
    p = _st(tmp_path, header)
    with pytest.raises(ImportFormatError) as e:
        import_files([p], tmp_path / "t.trace", format="safetensors")
    assert e.value.path == str(p) and expected in str(e.value), str(e.value)


def test_safetensors_header_longer_than_the_file(tmp_path):
    p = tmp_path / "bad.safetensors"
    p.write_bytes(struct.pack("<Q", 10**9) + b'{"a":1}')
    with pytest.raises(ImportFormatError) as e:
        import_files([p], tmp_path / "t.trace", format="safetensors")
    assert e.value.path == str(p)


# -- 5. every import error names its file ---------------------------------------------------------


def test_text_looking_garbage_without_prefix_names_the_file(tmp_path):
    p = tmp_path / "x.bin"
    p.write_bytes(b"APR")  # too short for APRT, plain text to the log sniffer
    with pytest.raises(UsageError) as e:
        import_files([p], tmp_path / "t.trace")
    assert e.value.path == str(p) and "trace-line prefix" in str(e.value) and "aprt:" in str(e.value)


def test_binary_garbage_is_not_a_text_log(tmp_path):
    p = tmp_path / "x.dat"
    p.write_bytes(bytes(range(1, 32)) * 100)  # no NUL byte, valid UTF-8, but all control bytes
    with pytest.raises(ImportFormatError) as e:
        import_files([p], tmp_path / "t.trace", prefixes=["TRACE"])
    msg = str(e.value)
    assert e.value.path == str(p) and "no importer can read it" in msg
    assert "aprt:" in msg and "npy:" in msg and "lines: is binary" in msg


def test_a_pipe_is_refused(tmp_path):
    p = tmp_path / "fifo.npy"
    os.mkfifo(p)
    with pytest.raises(ImportFormatError, match="neither a regular file nor a directory") as e:
        import_files([p], tmp_path / "t.trace")
    assert e.value.path == str(p)


# -- 6. symbolic links out of a dump --------------------------------------------------------------


def _secret(tmp_path):
    outside = tmp_path / "secret"
    outside.mkdir()
    write_aprt(outside / "x.bin", np.float32([42]), layer=0)
    np.save(outside / "x.npy", np.float32([42]))
    return outside


@pytest.mark.parametrize("what", ["aprt file", "aprt layer dir", "aprt order.txt", "npy file", "npy dir",
                                  "npy order.txt"])
def test_links_out_of_a_dump_are_refused_unless_followed(tmp_path, what):
    outside = _secret(tmp_path)
    d = tmp_path / "dump"
    d.mkdir()
    if what.startswith("aprt"):
        (d / "layer-1").mkdir()
        write_aprt(d / "layer-1" / "y.bin", np.float32([1]), layer=1)
        if what == "aprt file":
            (d / "layer-0").mkdir()
            link = d / "layer-0" / "x.bin"
            os.symlink(outside / "x.bin", link)
        elif what == "aprt layer dir":
            link = d / "layer-0"
            os.symlink(outside, link)
        else:
            (outside / "order.txt").write_text("layer-1/y.bin\n")
            link = d / "order.txt"
            os.symlink(outside / "order.txt", link)
    else:
        np.save(d / "y.npy", np.float32([1]))
        if what == "npy file":
            link = d / "x.npy"
            os.symlink(outside / "x.npy", link)
        elif what == "npy dir":
            link = d / "sub"
            os.symlink(outside, link)
        else:
            (outside / "order.txt").write_text("y.npy\n")
            link = d / "order.txt"
            os.symlink(outside / "order.txt", link)
    with pytest.raises(ImportFormatError) as e:
        import_files([d], tmp_path / "t.trace")
    assert e.value.path == str(link) and "symbolic link" in str(e.value)
    report = import_files([d], tmp_path / "followed.trace", follow_symlinks=True)
    assert report.stages >= 1


def test_links_inside_a_dump_are_fine_and_cycles_end(tmp_path):
    d = tmp_path / "dump"
    (d / "a").mkdir(parents=True)
    np.save(d / "a" / "x.npy", np.float32([1]))
    os.symlink(d / "a" / "x.npy", d / "y.npy")
    os.symlink(d, d / "a" / "loop")  # a link back to an ancestor: walked once
    t = parity.load_trace(import_files([d], tmp_path / "t.trace").path)
    assert t.keys() == ["a.x", "y"]


def test_cli_follow_symlinks_flag(tmp_path, capsys):
    from parity.cli import main

    outside = _secret(tmp_path)
    d = tmp_path / "dump"
    (d / "layer-0").mkdir(parents=True)
    os.symlink(outside / "x.bin", d / "layer-0" / "x.bin")
    assert main(["import", str(d), "--out", str(tmp_path / "a.trace")]) == 2
    assert "symbolic link" in capsys.readouterr().err
    assert main(["import", str(d), "--out", str(tmp_path / "b.trace"), "--follow-symlinks"]) == 0
    assert parity.load_trace(tmp_path / "b.trace")["layers.0.x"].tolist() == [42.0]


# -- 7. exports never write through a planted link ------------------------------------------------


@pytest.fixture
def small_trace(make_trace):
    return make_trace("small.trace", {"layers.0.a": np.arange(3, dtype=np.float32), "b": np.ones(2, np.float32)})


@pytest.mark.parametrize("fmt, out, planted", [
    ("npz", "out.npz", ["out.npz.tmp", "out.npz.tmp.npz"]),
    ("safetensors", "out.safetensors", ["out.safetensors.tmp"]),
    ("aprt", "out", ["out/layer-0/a.bin.tmp", "out/b.bin.tmp", "out/order.txt.tmp"]),
    ("npy", "out", ["out/b.npy.tmp", "out/layers.0.a.npy.tmp"]),
    ("aprt", "out", ["out/layer-0/a.bin"]),
    ("aprt", "out", ["out/order.txt"]),
    ("npy", "out", ["out/b.npy"]),
    ("npy", "out", ["out/order.txt"]),
])
def test_export_never_writes_through_a_planted_link(tmp_path, small_trace, monkeypatch, fmt, out, planted):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")

    def plant(folder):
        for rel in planted:
            full = tmp_path / rel
            if os.fspath(full.parent) == os.fspath(folder) and not os.path.lexists(full):
                os.symlink(victim, full)

    plant(tmp_path)
    # A dump folder must be empty when export checks it: plant the links the moment it is created.
    real_makedirs, real_mkdir = os.makedirs, os.mkdir
    monkeypatch.setattr(os, "makedirs", lambda p, *a, **k: (real_makedirs(p, *a, **k), plant(p))[0])
    monkeypatch.setattr(os, "mkdir", lambda p, *a, **k: (real_mkdir(p, *a, **k), plant(p))[0])
    if planted[0].endswith(".tmp") or planted[0].endswith(".npz"):  # a temporary name: never used, export works
        export_trace(small_trace, tmp_path / out, fmt)
        monkeypatch.undo()
        back = parity.load_trace(import_files([tmp_path / out], tmp_path / "back.trace").path)
        assert sorted(back.keys()) == ["b", "layers.0.a"]
    else:  # the final name itself is a link: refused, naming it
        with pytest.raises(UsageError, match="symbolic link") as e:
            export_trace(small_trace, tmp_path / out, fmt)
        assert e.value.path == str(tmp_path / planted[0])
    assert victim.read_text() == "keep me"


@pytest.mark.parametrize("fmt, out", [("npz", "out.npz"), ("safetensors", "out.st"), ("aprt", "out"), ("npy", "out")])
def test_export_refuses_a_destination_that_is_a_link(tmp_path, small_trace, fmt, out):
    target = tmp_path / "elsewhere"
    if fmt in ("aprt", "npy"):
        target.mkdir()
    os.symlink(target, tmp_path / out)  # dangling for files, an empty folder for dumps
    with pytest.raises(UsageError, match="symbolic link") as e:
        export_trace(small_trace, tmp_path / out, fmt)
    assert e.value.path == str(tmp_path / out)
    assert not os.path.exists(target) or not os.listdir(target)


def test_npz_export_of_keys_that_are_savez_arguments(tmp_path, make_trace):
    t = make_trace("kw.trace", {"file": np.arange(2.0), "allow_pickle": np.ones(1)})
    export_trace(t, tmp_path / "kw.npz", "npz")
    with np.load(tmp_path / "kw.npz") as z:
        assert sorted(z.files) == ["allow_pickle", "file"]


# -- 8. export key collisions ---------------------------------------------------------------------


def test_aprt_export_refuses_two_stages_in_one_file(tmp_path, make_trace):
    t = make_trace("c.trace", {"layers.0.a": np.float32([1]), "layers.00.a": np.float32([2])})
    with pytest.raises(UsageError) as e:
        export_trace(t, tmp_path / "out", "aprt")
    msg = str(e.value)
    assert '"layers.0.a"' in msg and '"layers.00.a"' in msg and "layer-0/a.bin" in msg
    assert not os.path.exists(tmp_path / "out" / "layer-0" / "a.bin")


def test_aprt_import_refuses_two_files_giving_one_stage(tmp_path):
    d = tmp_path / "dump"
    for sub in ("layer-0", "layer-00"):
        (d / sub).mkdir(parents=True)
        write_aprt(d / sub / "a.bin", np.float32([1]), layer=0)
    with pytest.raises(ImportFormatError, match=r'layer-0/a.bin and layer-00/a.bin both give the stage "layers.0.a"'):
        import_files([d], tmp_path / "t.trace")


def test_import_summary_lists_cleaned_log_names_but_the_metadata_does_not(tmp_path, capsys):
    from parity.cli import main

    log = tmp_path / "x.log"
    log.write_text("TRACE: ../x=1\nTRACE: _x=2\nTRACE: a\x1b[31m=3\n")
    report = import_files([log], tmp_path / "r.trace", prefixes=["TRACE"])
    assert report.stats[0]["renamed"] == 2 and report.stats[0]["collided"] == 1
    assert "renames" not in parity.load_trace(report.path).meta["imports"][0]
    assert main(["import", str(log), "--prefix", "TRACE", "--out", str(tmp_path / "c.trace")]) == 0
    err = capsys.readouterr().err
    assert "renamed '../x' -> '_x'" in err and "'a\\x1b[31m'" in err and "\x1b" not in err
    assert "collision: '../x', '_x' all became '_x'" in err
