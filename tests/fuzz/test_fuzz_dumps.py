"""Binary dumps under hostile bytes: APRT dumps, .npy, .npz and safetensors files.

Valid seeds are mutated (byte flips, truncation, insertions of hostile tokens) and fed to
``import_files``; only a ``ParityError`` may come out, within the harness's time and memory limits.
"""

import io
import os
import shutil
import struct
import tempfile
import zipfile

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from parity.importers import import_files
from parity.importers.aprt import write_aprt

from .harness import fuzz_settings, only_parity_errors

HOSTILE = [b"1e999", b"NaN", b"-1", b"99999999999999999999999", b"(" * 200, b"[" * 200, b"\xff\xfe",
           b"'''", b"\x00", b"{", b"}", b"\\", b"__import__('os')", b"L", b",", b"True", b"\x93NUMPY",
           b"PK\x03\x04", b"APRT", b"\xff\xff\xff\xff", b"\x00\x00\x00\x80"]

mutation = st.lists(
    st.tuples(st.sampled_from(["flip", "truncate", "insert", "replace", "token"]), st.integers(0, 10**6),
              st.binary(min_size=1, max_size=8), st.sampled_from(HOSTILE)),
    min_size=1, max_size=4)


def _mutate(data: bytes, muts) -> bytes:
    data = bytearray(data)
    for kind, where, payload, token in muts:
        pos = where % (len(data) + 1)
        if kind == "flip" and data:
            data[pos % len(data)] ^= payload[0] or 0xFF
        elif kind == "truncate":
            del data[pos:]
        elif kind == "insert":
            data[pos:pos] = payload
        elif kind == "replace":
            data[pos:pos + len(payload)] = payload
        else:
            data[pos:pos + len(token)] = token
    return bytes(data)


def _npy_bytes(arr) -> bytes:
    b = io.BytesIO()
    np.save(b, arr)
    return b.getvalue()


def _npz_bytes(compression) -> bytes:
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", compression) as z:
        z.writestr("a.npy", _npy_bytes(np.arange(12.0).reshape(3, 4)))
        z.writestr("b.npy", _npy_bytes(np.zeros(50, np.int16)))
    return b.getvalue()


def _safetensors_bytes() -> bytes:
    header = (b'{"__metadata__":{"parity.order":"[\\"b\\", \\"a\\"]"},'
              b'"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},'
              b'"b":{"dtype":"I16","shape":[3],"data_offsets":[16,22]}}')
    return struct.pack("<Q", len(header)) + header + bytes(range(22))


SEEDS = {
    "x.npy": lambda: _npy_bytes(np.arange(10, dtype=np.float32)),
    "stored.npz": lambda: _npz_bytes(zipfile.ZIP_STORED),
    "deflated.npz": lambda: _npz_bytes(zipfile.ZIP_DEFLATED),
    "m.safetensors": _safetensors_bytes,
}


def _import(paths, out, **kw):
    return import_files(paths, out, **kw)


def _case():
    d = tempfile.mkdtemp(prefix="fuzz-dumps-")
    return d


@fuzz_settings()
@given(st.sampled_from(sorted(SEEDS)), mutation)
def test_fuzz_single_binary_files(name, muts):
    d = _case()
    try:
        p = os.path.join(d, name)
        with open(p, "wb") as f:
            f.write(_mutate(SEEDS[name](), muts))
        only_parity_errors(_import, [p], os.path.join(d, "t.trace"))
        fmt = "safetensors" if name.endswith(".safetensors") else "npy"
        only_parity_errors(_import, [p], os.path.join(d, "f.trace"), format=fmt)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _aprt_dump(d: str) -> list[str]:
    os.makedirs(os.path.join(d, "layer-0"))
    os.makedirs(os.path.join(d, "layer-1"))
    write_aprt(os.path.join(d, "embedding.bin"), np.float32([1, 2, 3, 4]))
    write_aprt(os.path.join(d, "layer-0", "attn_out.bin"), np.float32([0.5, -1]), layer=0)
    write_aprt(os.path.join(d, "layer-1", "attn_out.bin"), np.float32([np.nan]), layer=1)
    with open(os.path.join(d, "order.txt"), "w") as f:
        f.write("# order\nembedding.bin\nlayer-0/attn_out.bin\nlayer-1/attn_out.bin\n")
    return ["embedding.bin", "layer-0/attn_out.bin", "layer-1/attn_out.bin", "order.txt"]


@fuzz_settings()
@given(st.integers(0, 3), mutation)
def test_fuzz_aprt_dump(which, muts):
    d = _case()
    try:
        dump = os.path.join(d, "dump")
        files = _aprt_dump(dump)
        target = os.path.join(dump, files[which])
        with open(target, "rb") as f:
            data = f.read()
        with open(target, "wb") as f:
            f.write(_mutate(data, muts))
        only_parity_errors(_import, [dump], os.path.join(d, "t.trace"))
        only_parity_errors(_import, [target], os.path.join(d, "one.trace"), prefixes=["TRACE"])
    finally:
        shutil.rmtree(d, ignore_errors=True)


@fuzz_settings()
@given(st.binary(min_size=0, max_size=512), st.sampled_from(["x.npy", "x.npz", "x.bin", "x.safetensors", "x.log"]))
def test_fuzz_random_bytes(data, name):
    d = _case()
    try:
        p = os.path.join(d, name)
        with open(p, "wb") as f:
            f.write(data)
        only_parity_errors(_import, [p], os.path.join(d, "t.trace"), prefixes=["TRACE"])
        only_parity_errors(_import, [p], os.path.join(d, "u.trace"))
    finally:
        shutil.rmtree(d, ignore_errors=True)


@fuzz_settings()
@given(st.sampled_from(["x.npy", "stored.npz", "deflated.npz"]), mutation)
def test_fuzz_npy_folder(name, muts):
    d = _case()
    try:
        dump = os.path.join(d, "dump")
        os.makedirs(os.path.join(dump, "layers", "0"))
        with open(os.path.join(dump, "layers", "0", name), "wb") as f:
            f.write(_mutate(SEEDS[name](), muts))
        np.save(os.path.join(dump, "logits.npy"), np.ones(3))
        only_parity_errors(_import, [dump], os.path.join(d, "t.trace"))
    finally:
        shutil.rmtree(d, ignore_errors=True)
