"""--bundle on every command that produces something: outputs recorded, exit status kept."""

import numpy as np

import parity
from parity.bundle import new_bundle, verify_bundle
from parity.cli import main


def test_import_export_demo_align_report_record_into_one_bundle(tmp_path, capsys):
    b = new_bundle("all", str(tmp_path / "b"), probe_torch=False).path
    log = tmp_path / "run.log"
    log.write_text("TRACE x 1.0 2.0\nTRACE y 3.0\n")
    trace = str(tmp_path / "c.trace")
    assert main(["import", str(log), "--prefix", "TRACE", "--out", trace, "--bundle", b]) == 0
    assert main(["export", trace, "--format", "npz", "--out", str(tmp_path / "c.npz"), "--bundle", b]) == 0
    assert main(["demo", "--bundle", b]) == 0
    ref = str(tmp_path / "r.trace")
    with parity.record(ref):
        parity.tap("x_m", np.array([1.0, 2.0]))
    assert main(["align", ref, trace, "--bundle", b]) == 0
    capsys.readouterr()
    assert main(["diff", ref, trace, "--json", "--bundle", b]) == 1
    saved = tmp_path / "res.json"
    saved.write_text(capsys.readouterr().out)
    assert main(["report", str(saved), "--bundle", b]) == 1
    commands = parity.bundle.open_bundle(b).commands()
    verbs = [c["line"].split()[1] for c in commands]
    assert verbs == ["import", "export", "demo", "align", "diff", "report"]
    outputs = {v: c["outputs"] for v, c in zip(verbs, commands)}
    assert any(o.endswith("import-manifest.json") for o in outputs["import"])
    assert any(o.endswith(".sha256") for o in outputs["export"])
    assert any(o.endswith("demo.txt") for o in outputs["demo"]) and any(o.endswith("demo.json") for o in outputs["demo"])
    assert [str(c["exit"]) for c in commands] == ["0", "0", "0", "0", "1", "1"]
    assert main(["bundle", "close", b]) == 0
    assert verify_bundle(b).ok


def test_capture_run_records_into_the_bundle(tmp_path):
    import sys

    b = new_bundle("run", str(tmp_path / "b"), probe_torch=False).path
    out = str(tmp_path / "p.trace")
    code = main(["capture", "run", "--prefix", "TRACE", "--out", out, "--bundle", b, "--",
                 sys.executable, "-c", "print('TRACE x 1.0 2.0')", "--token", "s3cret"])
    assert code == 0
    (cmd,) = parity.bundle.open_bundle(b).commands()
    assert any(o.endswith("capture-run.txt") for o in cmd["outputs"])
    assert any(o.endswith("capture-run-manifest.json") for o in cmd["outputs"])
    import os
    for name in os.listdir(b):
        p = os.path.join(b, name)
        if os.path.isfile(p):
            assert "s3cret" not in open(p, encoding="utf-8", errors="replace").read(), name
