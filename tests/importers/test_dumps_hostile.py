"""Hostile binary dumps and exports: every bad input is a ParityError naming the file (issue 15)."""

import os
import struct
import zipfile

import numpy as np
import pytest

import parity
from parity.errors import ImportFormatError, ParityError, TraceError, UsageError
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
