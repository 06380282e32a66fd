"""Sharded capture under torch.distributed (gloo, CPU): two ranks run a tensor-parallel MLP, each
capturing its shard; the reassembled trace diffs clean against the unsharded model captured in
one process, and a bug injected into rank 1's weights is flagged at the stage where it enters.

The ranks are two subprocesses running this file (``python test_sharded.py RANK ...``); one run
writes both the clean and the buggy capture.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

HIDDEN, INTER, LAYERS, WORLD = 8, 16, 2, 2
SHARD_DIMS = {"layers.*.up": -1, "layers.*.act": -1}


# -- the models (also imported by the rank processes) ------------------------------------------------

def full_model():
    """The unsharded reference: ``LAYERS`` blocks of up → GELU → down, float64, seeded weights."""
    import torch

    torch.manual_seed(0)

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.up, self.act = torch.nn.Linear(HIDDEN, INTER), torch.nn.GELU()
            self.down = torch.nn.Linear(INTER, HIDDEN)

        def forward(self, x):
            return x + self.down(self.act(self.up(x)))

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = torch.nn.ModuleList(Block() for _ in range(LAYERS))

        def forward(self, x):
            for block in self.layers:
                x = block(x)
            return x

    return Net().double().eval()


def tp_model(rank: int, world: int, bug: bool = False):
    """Rank ``rank``'s tensor-parallel copy of :func:`full_model`: ``up`` column-parallel (this rank's
    rows of the weight: its slice of the output), ``down`` row-parallel (its columns, then an
    all_reduce, so its output is replicated). ``bug``: rank 1 corrupts one weight of layers.1.up."""
    import torch
    import torch.distributed as dist

    class RowParallel(torch.nn.Module):
        def __init__(self, full: torch.nn.Linear, rows: slice):
            super().__init__()
            self.weight = torch.nn.Parameter(full.weight[:, rows].clone())
            self.bias = torch.nn.Parameter(full.bias.clone())

        def forward(self, h):
            y = torch.nn.functional.linear(h, self.weight)
            dist.all_reduce(y)
            return y + self.bias

    net = full_model()
    part = slice(rank * INTER // world, (rank + 1) * INTER // world)
    with torch.no_grad():
        for i, block in enumerate(net.layers):
            up = torch.nn.Linear(HIDDEN, INTER // world).double()
            up.weight.copy_(block.up.weight[part]); up.bias.copy_(block.up.bias[part])
            if bug and rank == 1 and i == 1:
                up.weight[2, 3] += 0.25
            block.down = RowParallel(block.down, part)
            block.up = up
    return net.eval()


def inputs():
    import torch

    return torch.linspace(-1, 1, 3 * HIDDEN, dtype=torch.float64).reshape(3, HIDDEN)


def _rank_main(rank: int, world: int, init_file: str, out: str) -> None:
    """One rank: join the gloo group, capture the clean and the buggy tensor-parallel model."""
    import torch
    import torch.distributed as dist

    import parity.torch

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        for name, bug in (("clean", False), ("buggy", True)):
            model = tp_model(rank, world, bug)
            with parity.torch.capture(model, os.path.join(out, f"{name}.trace"), stages="layers.*.*",
                                      shard_dims=SHARD_DIMS) as cap, torch.no_grad():
                cap.add("x", inputs())
                model(inputs())
            dist.barrier()
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":  # a rank process
    _rank_main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4])
    sys.exit(0)


# -- the tests ---------------------------------------------------------------------------------------

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
if not (dist.is_available() and dist.is_gloo_available()):
    pytest.skip("torch.distributed with the gloo backend is not available", allow_module_level=True)

import parity  # noqa: E402
import parity.torch  # noqa: E402
from parity.cli import main  # noqa: E402
from parity.errors import TraceFormatError, UsageError  # noqa: E402
from parity.trace.sharded import ShardedTrace  # noqa: E402


@pytest.fixture(scope="module")
def captured(tmp_path_factory):
    """Run the two ranks once (clean and buggy captures) and capture the reference in-process."""
    out = tmp_path_factory.mktemp("tp")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    init = str(out / "init")
    procs = [subprocess.Popen([sys.executable, __file__, str(r), str(WORLD), init, str(out)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for r in range(WORLD)]
    deadline = time.monotonic() + 120
    logs = []
    for p in procs:
        try:
            logs.append(p.communicate(timeout=max(deadline - time.monotonic(), 1))[0].decode(errors="replace"))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("the rank processes did not finish in 120 s")
    for r, (p, log) in enumerate(zip(procs, logs)):
        assert p.returncode == 0, f"rank {r} failed:\n{log[-3000:]}"
    model = full_model()
    ref = str(out / "ref.trace")
    with parity.torch.capture(model, ref, stages="layers.*.*") as cap, torch.no_grad():
        cap.add("x", inputs())
        model(inputs())
    return out


def test_the_sharded_capture_reassembles_and_diffs_clean_against_the_unsharded_model(captured):
    t = parity.load_trace(str(captured / "clean.trace"))
    ref = parity.load_trace(str(captured / "ref.trace"))
    assert isinstance(t, ShardedTrace) and t.complete and t.world_size == WORLD
    assert t.keys() == ref.keys()
    assert t.stage("layers.0.up").shape == ref.stage("layers.0.up").shape == (3, INTER)
    assert t.rank(1).stage("layers.0.up").shape == (3, INTER // WORLD)
    assert t.rank(1).stage("layers.0.up").provenance["shard"] == {
        "dim": 1, "offset": INTER // WORLD, "full_shape": [3, INTER], "rank": 1, "world_size": WORLD}
    assert t.stage("layers.0.down").provenance["shard"] == {"replicated": True, "world_size": WORLD}
    ids = {t.rank(r).meta["shard"]["capture"] for r in range(WORLD)}  # one id, broadcast from rank 0
    assert len(ids) == 1 and ids != {parity.load_trace(str(captured / "buggy.trace")).rank(0).meta["shard"]["capture"]}
    # the slices joined in rank order are the full model's values (the all_reduce differs in rounding only)
    np.testing.assert_allclose(t["layers.1.act"], ref["layers.1.act"], rtol=1e-12, atol=1e-14)
    assert np.array_equal(t["x"], ref["x"])
    d = parity.compare_traces(ref, t)
    assert d.first_divergence is None and d.passed
    assert main(["diff", str(captured / "ref.trace"), str(captured / "clean.trace")]) == 0
    assert t.verify() == []


def test_a_bug_in_one_ranks_shard_is_flagged_where_it_enters(captured):
    t = parity.load_trace(str(captured / "buggy.trace"))
    d = parity.compare_traces(str(captured / "ref.trace"), t)
    first = d.first_divergence
    assert first is not None and first.key == "layers.1.up"
    # the wrong column is output 2 of rank 1's slice: column INTER // WORLD + 2 of the logical stage
    wrong = np.argwhere(~np.isclose(t["layers.1.up"], parity.load_trace(str(captured / "ref.trace"))["layers.1.up"]))
    assert set(wrong[:, 1].tolist()) == {INTER // WORLD + 2}
    assert [s.key for s in d.stages if not s.passed][:1] == ["layers.1.up"]
    assert all(s.passed for s in d.stages if s.key.startswith("layers.0.") or s.key == "x")
    assert main(["diff", str(captured / "ref.trace"), str(captured / "buggy.trace")]) == 1


def test_a_missing_rank_is_an_error_naming_it(captured, tmp_path):
    import shutil

    shutil.copytree(captured / "clean.trace", tmp_path / "c.trace")
    shutil.rmtree(tmp_path / "c.trace" / "rank-00001.trace")
    with pytest.raises(TraceFormatError, match=r"rank 1's trace rank-00001.trace is missing \(world size 2\)"):
        parity.load_trace(str(tmp_path / "c.trace"))
    assert main(["diff", str(captured / "ref.trace"), str(tmp_path / "c.trace")]) == 2


def test_shard_dims_needs_torch_distributed(tmp_path):
    model = full_model()
    with pytest.raises(UsageError, match="torch.distributed is not initialised"):
        with parity.torch.capture(model, str(tmp_path / "t.trace"), shard_dims={"layers.*.up": -1}):
            pass
    assert not (tmp_path / "t.trace").exists()


def test_shard_dims_are_checked_and_a_dim_the_value_lacks_is_a_capture_error():
    from parity.capture.torch_shard import ShardPlan
    from parity.errors import CaptureError

    with pytest.raises(UsageError, match=r"shard_dims: 'up': 'last' must be a stage glob mapped to a dimension"):
        ShardPlan({"up": "last"}, 0, 2)
    with pytest.raises(UsageError, match="rank 2 of world size 2"):
        ShardPlan({}, 2, 2)
    plan = ShardPlan({"layers.*.up": 2}, 0, 2)
    with pytest.raises(CaptureError, match=r'stage "layers.0.up": shard_dims gives dimension 2 for a value of shape '
                                           r"\(3, 8\)"):
        plan.placement("layers.0.up", (3, 8))
    assert plan.placement("layers.0.up", (3, 8, 4))["full_shape"] == [3, 8, 8]


@pytest.fixture
def one_rank_group(tmp_path):
    """A torch.distributed group of one rank in this process (removed afterwards)."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'init1'}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def test_a_one_rank_sharded_capture_and_its_checks(one_rank_group, tmp_path):
    model = full_model()
    path = str(tmp_path / "one.trace")
    with pytest.warns(UserWarning, match=r"shard_dims pattern\(s\) 'nothing.\*' matched no captured stage"):
        with parity.torch.capture(model, path, stages="layers.*.up", shard_dims={"layers.*.up": 0, "nothing.*": 1}) \
                as cap, torch.no_grad():
            model(inputs())
    assert cap.path == os.path.join(path, "rank-00000.trace")
    t = parity.load_trace(path)
    assert isinstance(t, ShardedTrace) and t.keys() == ["layers.0.up", "layers.1.up"] and t.world_size == 1
    assert t.stage("layers.0.up").provenance["shard"] == {"dim": 0, "world_size": 1}
    with pytest.raises(UsageError, match="replay= and shard_dims= cannot be combined"):
        with parity.torch.capture(model, str(tmp_path / "r.trace"), shard_dims={}, replay=path):
            pass
    with parity.record(str(tmp_path / "plain.trace")):
        parity.tap("x", 1.0)
    with pytest.raises(parity.TraceError, match="holds an unsharded trace"):
        with parity.torch.capture(model, str(tmp_path / "plain.trace"), stages="layers.*.up", shard_dims={}):
            pass
    assert parity.load_trace(str(tmp_path / "plain.trace")).keys() == ["x"]  # left as it was
