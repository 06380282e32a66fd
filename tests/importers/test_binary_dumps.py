"""APRT dumps, .npy/.npz folders and safetensors files: golden bytes, round trips, malformed inputs."""

import json
import os
import struct

import numpy as np
import pytest

import parity
from parity.cli import main
from parity.errors import ImportFormatError, UsageError
from parity.importers import export_trace, find_importer, import_files
from parity.importers.aprt import encode_aprt, read_aprt, write_aprt

# -- APRT -------------------------------------------------------------------------------------------


def test_aprt_golden_bytes():
    data = encode_aprt(np.float32([1.0, -2.5, np.inf]), layer=3)
    assert data == (b"APRT" + b"\x03\x00\x00\x00" + b"\x03\x00\x00\x00"
                    + b"\x00\x00\x80\x3f" + b"\x00\x00\x20\xc0" + b"\x00\x00\x80\x7f")
    assert encode_aprt(np.float32([]), layer=None) == b"APRT\xff\xff\xff\xff\x00\x00\x00\x00"
    with pytest.raises(UsageError, match="float32"):
        encode_aprt(np.float64([1.0]))


def _ref_trace(path):
    rng = np.random.default_rng(0)
    with parity.record(path):
        parity.tap("embedding", rng.normal(size=(2, 4)).astype(np.float32))
        for layer in range(11):  # 11 layers: layer-10 must come after layer-9, not after layer-1
            parity.tap(f"layers.{layer}.attn_norm", rng.normal(size=8).astype(np.float32))
            parity.tap(f"layers.{layer}.ffn_out", rng.normal(size=8).astype(np.float32))
        parity.tap("final_norm", rng.normal(size=8).astype(np.float32))
        parity.tap("logits", np.float32([-0.0, np.nan, 1e-42, 3.0]))  # -0, NaN, subnormal keep their bits
    return path


def test_aprt_round_trip_keeps_values_bits_keys_and_order(tmp_path):
    ref = parity.load_trace(_ref_trace(tmp_path / "ref.trace"))
    notes = export_trace(ref, tmp_path / "dump", "aprt")
    assert notes == ['stage "embedding" had shape (2, 4); APRT stores it flat (8 values).']
    assert sorted(os.listdir(tmp_path / "dump"))[:3] == ["embedding.bin", "final_norm.bin", "layer-0"]
    assert read_aprt(tmp_path / "dump" / "layer-10" / "ffn_out.bin").layer == 10
    report = import_files([tmp_path / "dump"], tmp_path / "back.trace")
    back = parity.load_trace(report.path)
    assert report.formats == ["aprt"] and back.keys() == ref.keys()
    for s in ref:
        assert back[s.key].tobytes() == ref[s.key].tobytes()
        assert back[s.key].dtype == np.float32 and back[s.key].shape == (s.size,)
    # Without order.txt the order is inferred from the names: the same here.
    os.remove(tmp_path / "dump" / "order.txt")
    inferred = parity.load_trace(import_files([tmp_path / "dump"], tmp_path / "inferred.trace").path)
    assert inferred.keys() == ref.keys()


def test_single_aprt_file(tmp_path):
    write_aprt(tmp_path / "attn_out.bin", np.float32([1, 2]), layer=2)
    write_aprt(tmp_path / "logits.bin", np.float32([3]), layer=None)
    t = parity.load_trace(import_files([tmp_path / "attn_out.bin", tmp_path / "logits.bin"], tmp_path / "t.trace").path)
    assert t.keys() == ["layers.2.attn_out", "logits"]


@pytest.mark.parametrize("content, message", [
    (b"APR", "is 3 bytes long; an APRT file starts with a 12-byte header"),
    (b"NOPE" + struct.pack("<II", 0, 1) + b"\0" * 4, "does not start with the APRT magic (found b'NOPE')"),
    (b"APRT" + struct.pack("<II", 0, 4) + b"\0" * 12, "is truncated: its header promises 4 float32 values (16 bytes) but only 12"),
    (b"APRT" + struct.pack("<II", 0, 1) + b"\0" * 6, "has 2 trailing bytes after the 1 float32 values"),
])
def test_malformed_aprt_files_are_clear_errors(tmp_path, content, message):
    p = tmp_path / "x.bin"
    p.write_bytes(content)
    with pytest.raises(ImportFormatError, match=message.replace("(", r"\(").replace(")", r"\)")) as e:
        read_aprt(p)
    assert str(p) in str(e.value)


def test_mislabelled_aprt_files_are_refused(tmp_path):
    d = tmp_path / "dump"
    (d / "layer-3").mkdir(parents=True)
    write_aprt(d / "layer-3" / "ffn_out.bin", np.float32([1]), layer=5)
    with pytest.raises(ImportFormatError, match=r"layer-3/ffn_out.bin: is mislabelled: it lies in layer-3/ but its header says layer 5"):
        import_files([d], tmp_path / "t.trace")
    assert not parity.load_trace(tmp_path / "t.trace").complete
    os.remove(d / "layer-3" / "ffn_out.bin")
    write_aprt(d / "logits.bin", np.float32([1]), layer=0)
    with pytest.raises(ImportFormatError, match="lies at the top level .* but its header says layer 0"):
        import_files([d], tmp_path / "t.trace")


def test_export_refuses_to_write_into_a_non_empty_directory(tmp_path):
    ref = _ref_trace(tmp_path / "ref.trace")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "mine.txt").write_text("keep me")
    with pytest.raises(UsageError, match="not an empty directory"):
        export_trace(ref, tmp_path / "busy", "aprt")
    assert (tmp_path / "busy" / "mine.txt").read_text() == "keep me"


def test_cli_export_and_import_aprt(tmp_path, capsys):
    ref = _ref_trace(tmp_path / "ref.trace")
    assert main(["export", str(ref), "--format", "aprt", "--out", str(tmp_path / "dump")]) == 0
    assert main(["import", str(tmp_path / "dump"), "--out", str(tmp_path / "back.trace")]) == 0
    assert "(aprt): 25 stages" in capsys.readouterr().out
    # APRT is flat: the (2, 4) embedding comes back as (8,), which is a divergence until a transform maps it.
    assert main(["diff", str(ref), str(tmp_path / "back.trace")]) == 1
    assert "same element count" in capsys.readouterr().out
    cfg = tmp_path / "parity.toml"
    cfg.write_text('[transforms]\n"embedding" = { reshape = [2, 4] }\n')
    assert main(["diff", str(ref), str(tmp_path / "back.trace"), "--config", str(cfg)]) == 0


# -- npy / npz --------------------------------------------------------------------------------------


def test_npy_folder_and_npz_round_trip(tmp_path):
    ref = parity.load_trace(_ref_trace(tmp_path / "ref.trace"))
    export_trace(ref, tmp_path / "npy", "npy")
    export_trace(ref, tmp_path / "all.npz", "npz")
    for src in ("npy", "all.npz"):
        back = parity.load_trace(import_files([tmp_path / src], tmp_path / f"{src}.trace").path)
        assert back.keys() == ref.keys()
        assert all(back[k].tobytes() == ref[k].tobytes() and back[k].shape == ref[k].shape for k in ref.keys())


def test_npy_folder_layout_gives_hierarchical_keys(tmp_path):
    d = tmp_path / "dump"
    (d / "layers" / "10").mkdir(parents=True)
    (d / "layers" / "2").mkdir(parents=True)
    np.save(d / "layers" / "10" / "ffn_out.npy", np.ones(2, np.float16))
    np.save(d / "layers" / "2" / "ffn_out.npy", np.ones(2, np.float16))
    np.save(d / "layers" / "2" / "attn_norm.npy", np.ones(2, np.float16))
    np.savez(d / "logits.npz", top=np.arange(3), probs=np.ones(3))
    t = parity.load_trace(import_files([d], tmp_path / "t.trace").path)
    assert t.keys() == ["layers.2.attn_norm", "layers.2.ffn_out", "layers.10.ffn_out", "logits.top", "logits.probs"]
    assert t.stage("layers.2.ffn_out").dtype == "F16"


def test_npy_object_arrays_and_truncated_files_are_refused(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ImportFormatError, match="without unpickling"):
        import_files([tmp_path / "obj.npy"], tmp_path / "t.trace")
    np.save(tmp_path / "ok.npy", np.arange(100.0))
    raw = (tmp_path / "ok.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(raw[:-10])
    with pytest.raises(ImportFormatError, match="cut.npy"):
        import_files([tmp_path / "cut.npy"], tmp_path / "t.trace")


# -- safetensors ------------------------------------------------------------------------------------


def test_safetensors_export_is_readable_by_safetensors_and_round_trips(tmp_path):
    from safetensors.numpy import load_file

    ref = parity.load_trace(_ref_trace(tmp_path / "ref.trace"))
    export_trace(ref, tmp_path / "x.safetensors", "safetensors")
    loaded = load_file(str(tmp_path / "x.safetensors"))
    assert set(loaded) == set(ref.keys())
    assert np.array_equal(loaded["embedding"], ref["embedding"])
    back = parity.load_trace(import_files([tmp_path / "x.safetensors"], tmp_path / "back.trace").path)
    assert back.keys() == ref.keys()  # the order travels in the parity.order metadata
    assert all(back[k].tobytes() == ref[k].tobytes() for k in ref.keys())
    with pytest.raises(UsageError, match="already exists"):
        export_trace(ref, tmp_path / "x.safetensors", "safetensors")


def test_plain_safetensors_without_order_and_truncated(tmp_path):
    from safetensors.numpy import save_file

    save_file({"model.layers.1.mlp": np.ones(2, np.float32), "model.layers.0.mlp": np.zeros(3, np.float32)},
              str(tmp_path / "m.safetensors"))
    t = parity.load_trace(import_files([tmp_path / "m.safetensors"], tmp_path / "m.trace").path)
    assert t.keys() == ["model.layers.0.mlp", "model.layers.1.mlp"]
    raw = (tmp_path / "m.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(raw[:-4])
    with pytest.raises(ImportFormatError, match="cut.safetensors: .*truncated"):
        import_files([tmp_path / "cut.safetensors"], tmp_path / "c.trace")


# -- dispatch ---------------------------------------------------------------------------------------


def test_sniffing_picks_the_importer_and_explains_refusals(tmp_path):
    write_aprt(tmp_path / "a.bin", np.float32([1]))
    np.save(tmp_path / "b.npy", np.ones(1))
    (tmp_path / "c.log").write_text("TRACE_C: x=1\n")
    (tmp_path / "d.bin").write_bytes(b"\x00\x01\x02garbage")
    assert find_importer(tmp_path / "a.bin").name == "aprt"
    assert find_importer(tmp_path / "b.npy").name == "npy"
    assert find_importer(tmp_path / "c.log").name == "lines"
    with pytest.raises(ImportFormatError) as e:
        find_importer(tmp_path / "d.bin")
    msg = str(e.value)
    assert "no importer can read it" in msg and "aprt: does not start with the APRT magic" in msg
    assert "lines: holds NUL bytes" in msg
    with pytest.raises(ImportFormatError, match="cannot be read as aprt: it does not start with the APRT magic"):
        find_importer(tmp_path / "b.npy", format="aprt")
    with pytest.raises(UsageError, match="unknown import format"):
        find_importer(tmp_path / "b.npy", format="hdf5")


def test_several_files_into_one_trace_in_the_order_given(tmp_path):
    write_aprt(tmp_path / "a.bin", np.float32([1]))
    (tmp_path / "c.log").write_text("TRACE_C: x=1\n")
    r = import_files([tmp_path / "c.log", tmp_path / "a.bin"], tmp_path / "t.trace", prefixes=["TRACE_C"])
    t = parity.load_trace(r.path)
    assert t.keys() == ["x", "a"] and r.formats == ["lines", "aprt"]
    assert t.meta["formats"] == ["lines", "aprt"] and json.dumps(t.meta)
