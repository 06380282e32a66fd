"""parity.trace._stage: CRC-32 identical to zlib.crc32 on every code path, length and alignment.

Each test that takes the ``impl`` fixture runs once per implementation the CPU has ("table" always;
"pclmul" and "vpclmul" where available); the portable path is also checked in a subprocess started
with PARITY_CRC_PORTABLE=1, the way users force it.
"""

import os
import platform
import re
import subprocess
import sys
import threading
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

_stage = pytest.importorskip("parity.trace._stage")

MiB = 1 << 20
_ALL = ("table", "pclmul", "vpclmul")


def _available():
    current = _stage.implementation()
    names = []
    for name in _ALL:
        try:
            _stage._set_implementation(name)
        except ValueError:
            continue
        names.append(name)
    _stage._set_implementation(current)
    return names


_AVAILABLE = _available()


@pytest.fixture(params=_ALL)
def impl(request):
    if request.param not in _AVAILABLE:
        pytest.skip(f"{request.param} is not available on this CPU")
    previous = _stage.implementation()
    _stage._set_implementation(request.param)
    yield request.param
    _stage._set_implementation(previous)


@pytest.fixture(scope="module")
def blob():
    return np.random.default_rng(20240611).integers(0, 256, 300_000, dtype=np.uint8).tobytes()


# ------------------------------------------------------------------------------------------------
# the constants, re-derived in GF(2)[x] (ints: bit j = coefficient of x^j)

_P = 0x104C11DB7  # x^32 + x^26 + ... + 1, the polynomial of zlib's reflected 0xEDB88320


def _pmod(a, m=_P):
    dm = m.bit_length() - 1
    while a.bit_length() - 1 >= dm:
        a ^= m << (a.bit_length() - 1 - dm)
    return a


def _pdiv(a, m=_P):
    q, dm = 0, m.bit_length() - 1
    while a.bit_length() - 1 >= dm:
        s = a.bit_length() - 1 - dm
        q |= 1 << s
        a ^= m << s
    return q


def _pmul(a, b):
    r = 0
    while b:
        if b & 1:
            r ^= a
        a <<= 1
        b >>= 1
    return r


def _reflect(v, bits):
    return int(format(v, f"0{bits}b")[::-1], 2)


def test_fold_and_barrett_constants_are_the_powers_of_x_they_claim():
    consts = _stage._fold_constants()
    assert _reflect(_P, 33) == (0xEDB88320 << 1) | 1  # the same polynomial as zlib's
    for name, value in consts.items():
        if name.startswith("x^"):
            e = int(name[2:])
            # reflect64: coefficient of x^j at bit 63 - j
            assert value == _reflect(_pmod(1 << e), 64), name
    assert consts["mu"] == _reflect(_pdiv(1 << 64), 33)
    assert consts["poly"] == _reflect(_P, 33) == 0x1DB710641
    # the fold distances the C code uses, D = 128, 256, 512, 1024, 2048 bits: x^(D+63) and x^(D-1)
    for d in (128, 256, 512, 1024, 2048):
        assert f"x^{d + 63}" in consts and f"x^{d - 1}" in consts


def test_implementation_names_and_dispatch():
    assert _stage.implementation() in _ALL
    assert "table" in _AVAILABLE
    with pytest.raises(ValueError, match="unknown implementation"):
        _stage._set_implementation("sse9")
    portable = os.environ.get("PARITY_CRC_PORTABLE", "") not in ("", "0")
    if platform.machine() in ("x86_64", "AMD64") and not portable and os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            flags = f.read()
        if " pclmulqdq" in flags and " sse4_1" in flags:
            assert _stage.implementation() in ("pclmul", "vpclmul")
        if " vpclmulqdq" in flags and " avx2" in flags:
            assert _stage.implementation() == "vpclmul"


# ------------------------------------------------------------------------------------------------
# crc32 and copy_crc32 against zlib


def _check_copy(src, value):
    """copy_crc32 into the middle of a larger buffer: returns the CRC, checks the bytes."""
    n = len(src)
    for pad in (0, 5):
        big = bytearray(b"\xa5") * (n + 2 * pad + 3)
        dst = memoryview(big)[pad : pad + n]
        crc = _stage.copy_crc32(dst, src, value)
        assert crc == zlib.crc32(src, value)
        assert big[pad : pad + n] == bytes(src)
        assert big[:pad] == b"\xa5" * pad and big[pad + n :] == b"\xa5" * (pad + 3)


def test_every_length_up_to_300_at_several_alignments(impl, blob):
    rng = np.random.default_rng(1)
    mv = memoryview(blob)
    for n in range(301):
        for off in (0, 1, 7, 8 + int(rng.integers(0, 64))):
            data = mv[off : off + n]
            value = int(rng.integers(0, 2**32))
            assert _stage.crc32(data, value) == zlib.crc32(data, value), (impl, n, off)
            assert _stage.crc32(data) == zlib.crc32(data)
            if off != 0:
                continue
            _check_copy(data, value)


def _lengths_to_200k(rng):
    edges = set()
    for step in (16, 64, 128, 256, 512, 4096):
        for k in (1, 2, 3, 4, 5, 8, 9, 17, 33):
            for d in (-17, -16, -15, -1, 0, 1, 15, 16, 17):
                if 0 <= step * k + d <= 200_000:
                    edges.add(step * k + d)
    edges.update(int(x) for x in rng.integers(301, 200_000, 60))
    edges.update((65535, 65536, 65537, 199_999, 200_000))
    return sorted(edges)


def test_lengths_up_to_200k_with_random_offsets_and_values(impl, blob):
    rng = np.random.default_rng(2)
    mv = memoryview(blob)
    for n in _lengths_to_200k(rng):
        off = int(rng.integers(0, 64))
        value = int(rng.integers(0, 2**32))
        data = mv[off : off + n]
        expected = zlib.crc32(data, value)
        assert _stage.crc32(data, value) == expected, (impl, n, off)
        dst = np.empty(n + 64, np.uint8)
        doff = int(rng.integers(0, 64))
        assert _stage.copy_crc32(dst[doff : doff + n], data, value) == expected, (impl, n, off, doff)
        assert dst[doff : doff + n].tobytes() == data


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000), st.integers(0, 31), st.integers(-(2**40), 2**40))
def test_matches_zlib_on_arbitrary_bytes_offsets_and_values(data, off, value):
    data = memoryview(data)[min(off, len(data)) :]
    assert _stage.crc32(data, value) == zlib.crc32(data, value)
    dst = bytearray(len(data))
    assert _stage.copy_crc32(dst, data, value) == zlib.crc32(data, value)
    assert dst == data


def test_continuation_and_value_masking():
    data = bytes(range(256)) * 40
    crc = 0
    for i in range(0, len(data), 1000):
        crc = _stage.crc32(data[i : i + 1000], crc)
    assert crc == zlib.crc32(data)
    for value in (-1, 2**32 - 1, 2**40 + 5, -(2**33) + 7):
        assert _stage.crc32(b"abc", value) == zlib.crc32(b"abc", value)
        assert _stage.copy_crc32(bytearray(3), b"abc", value) == zlib.crc32(b"abc", value)
    assert _stage.crc32(data=b"abc", value=7) == zlib.crc32(b"abc", 7)


@pytest.fixture(scope="module")
def big():
    """64 MiB + 11 bytes of random data and its CRC (zlib, computed once)."""
    a = np.random.default_rng(3).integers(0, 2**63, (64 * MiB + 16) // 8, dtype=np.int64).view(np.uint8)
    a = a[: 64 * MiB + 11]
    return a, zlib.crc32(a[3:])


def test_64_mib_buffers_single_and_two_thread_copies(impl, big):
    a, expected_tail = big
    src = a[3:]  # unaligned
    n = src.nbytes
    assert _stage.crc32(src) == expected_tail
    dst_big = np.zeros(n + 40, np.uint8)
    dst = dst_big[5 : 5 + n]  # unaligned, different alignment from src
    for threads in (1, 2, 3):
        dst_big[:] = 0x5A
        assert _stage.copy_crc32(dst, src, threads=threads) == expected_tail, (impl, threads)
        assert np.array_equal(dst, src)
        assert (dst_big[:5] == 0x5A).all() and (dst_big[5 + n :] == 0x5A).all()
    value = 0x12345678
    assert _stage.copy_crc32(dst, src, value, threads=2) == _stage.crc32_combine(
        zlib.crc32(src[: 1 << 20], value), zlib.crc32(src[1 << 20 :]), n - (1 << 20)
    )


def test_non_temporal_and_regular_stores_give_the_same_copy():
    src = np.random.default_rng(4).integers(0, 256, 3 * MiB + 13, dtype=np.uint8)[1:]
    expected = zlib.crc32(src)
    previous = _stage._set_nt_min(0)
    try:
        for nt_min in (0, 1 << 62):
            _stage._set_nt_min(nt_min)
            dst = np.zeros(src.nbytes + 7, np.uint8)
            assert _stage.copy_crc32(dst[7:], src) == expected
            assert np.array_equal(dst[7:], src) and (dst[:7] == 0).all()
    finally:
        _stage._set_nt_min(previous)


def test_split_copies_of_small_buffers_give_the_same_copy_and_crc():
    """_set_split_min: copies split over threads in many small parts (not page multiples)."""
    src = np.random.default_rng(5).integers(0, 256, 300_001 + 3, dtype=np.uint8)[3:]
    expected = zlib.crc32(src, 77)
    previous = _stage._set_split_min(8192)
    try:
        for threads in (1, 2, 3):
            dst = np.zeros(src.nbytes, np.uint8)
            assert _stage.copy_crc32(dst, src, 77, threads=threads) == expected
            assert np.array_equal(dst, src)
        with pytest.raises(ValueError, match=">= 8192"):
            _stage._set_split_min(100)
    finally:
        _stage._set_split_min(previous)


@pytest.mark.parametrize(
    "dtype", [np.uint8, np.int16, np.float16, np.float32, np.float64, np.complex64, np.bool_, np.int64]
)
def test_numpy_arrays_of_several_dtypes(dtype):
    rng = np.random.default_rng(5)
    a = (rng.standard_normal((37, 129)) * 1000).astype(dtype)
    assert _stage.crc32(a) == zlib.crc32(a.tobytes()) == zlib.crc32(a)
    dst = np.empty_like(a)
    assert _stage.copy_crc32(dst, a) == zlib.crc32(a.tobytes())
    assert dst.tobytes() == a.tobytes()
    # any buffers of the same byte length, whatever their dtypes
    raw = np.empty(a.nbytes, np.uint8)
    assert _stage.copy_crc32(raw, a) == zlib.crc32(a.tobytes())
    assert raw.tobytes() == a.tobytes()


def test_non_contiguous_inputs_are_refused():
    a = np.arange(1000, dtype=np.float32).reshape(10, 100)
    for bad in (a[:, ::2], a.T, memoryview(bytes(100))[::2]):
        with pytest.raises((BufferError, ValueError)):
            _stage.crc32(bad)
        with pytest.raises((BufferError, ValueError)):
            _stage.copy_crc32(bytearray(bad.nbytes), bad)
        with pytest.raises((BufferError, ValueError)):
            _stage.copy_crc32(bad, bytes(bad.nbytes))
    with pytest.raises(TypeError):
        _stage.crc32("text")
    with pytest.raises(TypeError):
        _stage.crc32(b"x", "1")


def test_copy_errors():
    with pytest.raises(ValueError, match=r"dst has 10 bytes but src has 12 bytes"):
        _stage.copy_crc32(bytearray(10), b"x" * 12)
    with pytest.raises((BufferError, TypeError, ValueError)):
        _stage.copy_crc32(b"y" * 12, b"x" * 12)
    ro = np.zeros(12, np.uint8)
    ro.flags.writeable = False
    with pytest.raises((BufferError, TypeError, ValueError)):
        _stage.copy_crc32(ro, b"x" * 12)
    with pytest.raises(ValueError, match="threads"):
        _stage.copy_crc32(bytearray(3), b"abc", threads=0)
    with pytest.raises(TypeError):
        _stage.copy_crc32(bytearray(3), b"abc", 0, 2)  # threads is keyword-only


@pytest.mark.parametrize("use_c", [True, False])
def test_copy_from_an_address(monkeypatch, use_c):
    """copy_crc32_at: bytes by their address (what the capture hooks pass for a tensor), into a
    region of dst; the C call and the ctypes fallback agree with zlib and copy the same bytes."""
    from parity.trace import checksum

    if not use_c:
        monkeypatch.setattr(checksum, "_stage", None)
    rng = np.random.default_rng(11)
    src = rng.integers(0, 256, 3 * MiB + 5, dtype=np.uint8)
    addr = src.ctypes.data
    for s_off, d_off, n in ((0, 0, 0), (1, 7, 1), (3, 4096, 300), (0, 64, MiB), (5, 0, 3 * MiB)):
        dst = np.full(3 * MiB + 4096, 0xEE, np.uint8)
        assert checksum.copy_crc32_at(dst, d_off, addr + s_off, n) == zlib.crc32(src[s_off:s_off + n])
        assert np.array_equal(dst[d_off:d_off + n], src[s_off:s_off + n])
        assert (dst[:d_off] == 0xEE).all() and (dst[d_off + n:] == 0xEE).all()
    dst = np.zeros(100, np.uint8)
    for off, n in ((-1, 10), (0, 101), (95, 6), (0, -1)):
        with pytest.raises(ValueError, match="outside dst of 100 bytes"):
            checksum.copy_crc32_at(dst, off, addr, n)
    if use_c:
        with pytest.raises(ValueError, match="outside dst"):
            _stage.copy_crc32_at(dst, 90, addr, 11)
        with pytest.raises(ValueError, match="null source address"):
            _stage.copy_crc32_at(dst, 0, 0, 4)
        ro = np.zeros(8, np.uint8)
        ro.flags.writeable = False
        with pytest.raises((BufferError, TypeError, ValueError)):
            _stage.copy_crc32_at(ro, 0, addr, 4)


def test_overlapping_dst_and_src_behave_like_memmove():
    rng = np.random.default_rng(6)
    base = bytearray(rng.integers(0, 256, 100_000, dtype=np.uint8).tobytes())
    for s_off, d_off, n in ((0, 3, 90_000), (3, 0, 90_000), (10, 10, 50_000), (0, 64, 70)):
        buf = bytearray(base)
        mv = memoryview(buf)
        src_copy = bytes(buf[s_off : s_off + n])
        expected = bytearray(base)
        expected[d_off : d_off + n] = src_copy
        assert _stage.copy_crc32(mv[d_off : d_off + n], mv[s_off : s_off + n]) == zlib.crc32(src_copy)
        assert buf == expected


def test_concurrent_calls_from_python_threads():
    src = np.random.default_rng(7).integers(0, 256, 9 * MiB + 1, dtype=np.uint8)
    expected = zlib.crc32(src)
    results, errors = [], []

    def work():
        try:
            dst = np.empty_like(src)
            results.append((_stage.copy_crc32(dst, src), _stage.crc32(src), np.array_equal(dst, src)))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert results == [(expected, expected, True)] * 3


# ------------------------------------------------------------------------------------------------
# crc32_combine


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000), st.binary(max_size=2000), st.integers(0, 2**32 - 1))
def test_combine_property(a, b, value):
    ca, cb = zlib.crc32(a, value), zlib.crc32(b)
    assert _stage.crc32_combine(ca, cb, len(b)) == zlib.crc32(a + b, value)


def test_combine_edge_cases():
    a, b = b"hello, ", b"world"
    assert _stage.crc32_combine(zlib.crc32(b""), zlib.crc32(b), len(b)) == zlib.crc32(b)
    assert _stage.crc32_combine(zlib.crc32(a), zlib.crc32(b""), 0) == zlib.crc32(a)
    assert _stage.crc32_combine(0, 0, 0) == 0
    zeros = bytes(1_000_003)
    assert _stage.crc32_combine(zlib.crc32(a), zlib.crc32(zeros), len(zeros)) == zlib.crc32(a + zeros)
    # huge lengths: associativity (A + B) + C == A + (B + C)
    c1, c2, c3 = 0x1234ABCD, 0xDEADBEEF, 0x0BADF00D
    for l2, l3 in ((2**40 + 3, 2**33 - 1), (2**62, 1), (123, 2**50)):
        left = _stage.crc32_combine(_stage.crc32_combine(c1, c2, l2), c3, l3)
        right = _stage.crc32_combine(c1, _stage.crc32_combine(c2, c3, l3), l2 + l3)
        assert left == right
    # against x^(8 len2) mod P computed here, up to the largest length
    for crc1, crc2, l2 in ((0x1234ABCD, 0xDEADBEEF, 2**63 - 1), (0xFFFFFFFF, 0, 2**62 + 12345), (1, 2, 2**61 + 3)):
        power, base, e = 1, 1 << 8, l2  # x^0, x^8
        while e:
            if e & 1:
                power = _pmod(_pmul(power, base))
            base = _pmod(_pmul(base, base))
            e >>= 1
        expected = _reflect(_pmod(_pmul(_reflect(crc1, 32), power)), 32) ^ crc2
        assert _stage.crc32_combine(crc1, crc2, l2) == expected
    with pytest.raises(ValueError, match="len2"):
        _stage.crc32_combine(1, 2, -1)
    # splitting a buffer anywhere and combining gives the whole CRC
    data = np.random.default_rng(8).integers(0, 256, 5000, dtype=np.uint8).tobytes()
    for cut in range(0, 5001, 97):
        assert _stage.crc32_combine(zlib.crc32(data[:cut]), zlib.crc32(data[cut:]), 5000 - cut) == zlib.crc32(data)


# ------------------------------------------------------------------------------------------------
# the portable path, forced the way users force it


_PORTABLE_SCRIPT = r"""
import sys, zlib
import numpy as np
from parity.trace import _stage
want = sys.argv[1]
assert _stage.implementation() == want, (_stage.implementation(), want)
rng = np.random.default_rng(9)
blob = rng.integers(0, 256, 200_000, dtype=np.uint8).tobytes()
mv = memoryview(blob)
for n in list(range(0, 300)) + [511, 512, 513, 4096, 65_535, 65_536, 100_001, 199_000]:
    off = n % 13
    v = int(rng.integers(0, 2**32))
    d = mv[off:off + n]
    assert _stage.crc32(d, v) == zlib.crc32(d, v), n
    dst = bytearray(len(d))
    assert _stage.copy_crc32(dst, d, v) == zlib.crc32(d, v) and dst == d, n
big = rng.integers(0, 256, 9 * 2**20 + 5, dtype=np.uint8)[1:]
dst = np.empty(big.nbytes + 3, np.uint8)[3:]
assert _stage.copy_crc32(dst, big, 77, threads=2) == zlib.crc32(big, 77)
assert np.array_equal(dst, big)
print("ok")
"""


@pytest.mark.parametrize("setting", ["1", "0"])
def test_portable_path_in_a_subprocess(setting):
    env = dict(os.environ, PARITY_CRC_PORTABLE=setting)
    want = "table" if setting == "1" else _AVAILABLE[-1]
    out = subprocess.run(
        [sys.executable, "-c", _PORTABLE_SCRIPT, want], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert re.search(r"^ok$", out.stdout, re.M)
