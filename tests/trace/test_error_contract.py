"""The trace package's deliberate errors are ParityErrors, and stay the built-in types callers caught."""

import numpy as np
import pytest

from parity.errors import ParityError, TraceFormatError, UsageError
from parity.trace import checksum, dtypes
from parity.trace.checksum import ByteRangeError
from parity.trace.dtypes import DTYPES, UnsupportedDTypeError, dtype_of_array, to_float64
from parity.trace.jsonsafe import load_json


def test_an_unstorable_dtype_is_a_usage_error_and_a_type_error():
    with pytest.raises(UnsupportedDTypeError, match=r"^dtype complex128 cannot be stored; supported: .*\(cast it first\)$") as e:
        dtype_of_array(np.zeros(2, np.complex128))
    assert isinstance(e.value, UsageError) and isinstance(e.value, TypeError)


def test_widening_float8_without_ml_dtypes_names_the_package(monkeypatch):
    monkeypatch.setattr(dtypes, "_ml_dtypes", lambda: None)
    with pytest.raises(UnsupportedDTypeError, match=r"widening float8_e5m2 needs the ml_dtypes package"):
        to_float64(np.zeros(3, np.uint8), DTYPES["F8_E5M2"])
    assert to_float64(np.array([0x3F80], np.uint16), DTYPES["BF16"]).tolist() == [1.0]  # bf16 needs no package


@pytest.mark.parametrize("impl", ["c", "python"])
def test_byte_ranges_that_do_not_fit_are_usage_errors_and_value_errors(monkeypatch, impl):
    if impl == "python":
        monkeypatch.setattr(checksum, "_stage", None)
    elif checksum._stage is None:
        pytest.skip("parity.trace._stage is not built")
    dst = np.zeros(8, np.uint8)
    with pytest.raises(ByteRangeError, match=r"bytes \[4, 4 \+ 8\) are outside dst of 8 bytes\.") as e:
        checksum.copy_crc32_at(dst, 4, 0, 8)
    assert isinstance(e.value, UsageError) and isinstance(e.value, ValueError)
    if impl == "python":  # the C module raises its own ValueError for these
        with pytest.raises(ByteRangeError, match=r"dst holds 8 bytes but src 12; give buffers of one size\."):
            checksum.copy_crc32(dst, b"x" * 12)
        with pytest.raises(ByteRangeError, match=r"len2 must be >= 0, not -1\."):
            checksum.crc32_combine(1, 2, -1)
    else:
        with pytest.raises(ValueError):
            checksum.copy_crc32(dst, b"x" * 12)


@pytest.mark.parametrize("lifted", [False, True])
def test_a_long_integer_literal_is_a_trace_format_error_either_way(monkeypatch, lifted):
    import sys

    old = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0 if lifted else 4300)
    try:
        with pytest.raises(TraceFormatError, match=r"^m\.json: the manifest holds an integer literal of more than 4300 "
                                                   r"digits; it is corrupt or hostile\.$") as e:
            load_json(b'{"n": ' + b"9" * 5000 + b"}", path="m.json", what="manifest")
    finally:
        sys.set_int_max_str_digits(old)
    assert isinstance(e.value, ParityError) and e.value.path == "m.json"
