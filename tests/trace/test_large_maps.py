"""Large data files are mapped per read and unmapped with the last array viewing them, so a
trace larger than memory keeps only the stages in use resident; small ones stay mapped."""

import os

import numpy as np
import pytest

import parity


def _record(path, values):
    with parity.record(path, volatile=False):
        for k, v in values.items():
            parity.tap(k, v)
    return path


def test_large_data_files_are_mapped_per_read_and_released(tmp_path, monkeypatch):
    import gc

    from parity.trace import reader

    if not os.path.exists("/proc/self/maps"):
        pytest.skip("needs /proc/self/maps to see the mappings")
    path = _record(str(tmp_path / "big.trace"), {"big": np.arange(1 << 16, dtype=np.float64), "small": np.ones(3)})
    data = os.path.realpath(os.path.join(path, "data"))

    def mapped() -> int:
        with open("/proc/self/maps", encoding="utf-8") as f:
            return sum(data in line for line in f)

    monkeypatch.setattr(reader, "KEEP_MAPPED_BYTES", 1 << 12)  # the 512 KiB data file counts as large
    t = parity.load_trace(path)
    a = t["big"]
    assert not t._maps and a[12345] == 12345.0 and mapped() == 1  # valid while the array lives
    del a
    gc.collect()
    assert mapped() == 0  # unmapped with the last array viewing it
    assert float(t["big"].sum()) == float(np.arange(1 << 16).sum())
    monkeypatch.setattr(reader, "KEEP_MAPPED_BYTES", 64 << 20)
    t2 = parity.load_trace(path)
    b = t2["big"]
    del b
    gc.collect()
    assert mapped() == 1 and t2._maps  # a small file stays mapped for the trace's life
