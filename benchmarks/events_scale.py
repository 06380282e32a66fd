"""Event traces at scale: import and diff a 100,000-event agent session, against naive baselines.

Generates a long ccpa-style session (user prompts, assistant turns with text and tool_use blocks,
tool results, hooks, skills; every record with its own timestamp and every tool call its own id),
and a candidate run of the same session on "another machine" (other session id, timestamps, tool
ids) with a few real edits: a changed tool argument, a dropped tool call (call + result), an
inserted event, a changed result text. Then, in one run:

* ``import``: JSONL -> event trace (one text stage per record);
* ``diff``: ``compare_events`` on the two traces (load, normalize with the ccpa preset, align,
  field diffs), with the parts timed separately;
* baselines on the same data: ``difflib.SequenceMatcher(autojunk=False)`` on the normalized
  identities of the whole logs, ``difflib`` on the raw lines, and the textbook O(N·M)
  edit-distance matrix on a 2,000-event prefix (extrapolated to the full size by (N/2000)²).

Usage: ``python benchmarks/events_scale.py [--events 100000]``
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import json
import os
import random
import sys
import tempfile
import time


def generate(n: int, seed: str, rng: random.Random) -> list[dict]:
    """``n`` records of one long session; ids and timestamps derive from ``seed``."""
    sid = hashlib.sha1(seed.encode()).hexdigest()[:12]
    ts = 1_717_000_000_000 + len(seed) * 1000
    out: list[dict] = [{"v": 1, "kind": "session_start", "session_id": f"sess-{sid}", "ts": ts,
                        "cwd_sha256": hashlib.sha256(f"/home/{seed}/repo".encode()).hexdigest(), "model": "agent-1"}]
    turn, tool = 0, 0
    files = [f"src/pkg/mod_{i:03d}.py" for i in range(400)]
    while len(out) < n - 1:
        turn += 1
        ts += 997
        out.append({"v": 1, "kind": "user_prompt", "turn": turn, "ts": ts,
                    "text": f"Step {turn}: make test_{turn % 97} pass without breaking the others."})
        for _ in range(rng.randint(2, 5)):
            tool += 1
            ts += 131
            f = files[rng.randrange(len(files))]
            name = rng.choice(["Read", "Bash", "Edit", "Grep"])
            inp = ({"file_path": f} if name == "Read" else {"command": f"python -m pytest tests/test_{turn % 97}.py -q"}
                   if name == "Bash" else {"pattern": f"def f{tool % 50}", "path": "src"} if name == "Grep"
                   else {"file_path": f, "old_string": f"x = {tool}", "new_string": f"x = {tool + 1}"})
            tid = "toolu_" + hashlib.sha1(f"{seed}{tool}".encode()).hexdigest()[:16]
            out.append({"v": 1, "kind": "assistant_turn", "turn": turn, "ts": ts, "content": [
                {"type": "text", "text": f"Looking at {f} (call {tool})."},
                {"type": "tool_use", "id": tid, "name": name, "input": inp}]})
            ts += 57
            out.append({"v": 1, "kind": "tool_result", "turn": turn, "ts": ts, "tool_use_id": tid, "is_error": False,
                        "content": f"{name} output for call {tool}:\n" + "\n".join(f"line {k}" for k in range(3))})
            if rng.random() < 0.2:
                out.append({"v": 1, "kind": "hook_event", "turn": turn, "ts": ts + 1, "hook": "PostToolUse",
                            "tool": name, "decision": "allow"})
        if rng.random() < 0.1:
            out.append({"v": 1, "kind": "skill_invocation", "turn": turn, "ts": ts + 2, "skill": "run-tests",
                        "args": {"paths": [f"tests/test_{turn % 97}.py"]}})
    out = out[: n - 1]
    out.append({"v": 1, "kind": "session_end", "ts": ts + 5, "stop_reason": "end_turn", "elapsed_ms": 3_600_000,
                "tokens_in": 9_000_000, "tokens_out": 1_200_000})
    return out


def write(path: str, records: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, separators=(",", ":")) + "\n")


def naive_dp(a: list[str], b: list[str]) -> int:
    """Edit distance (insert/delete 1, substitute 1 if different) with the full O(N·M) matrix."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, y in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y))
        prev = cur
    return prev[-1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--subset", type=int, default=2_000, help="events of the O(N·M) baseline")
    args = ap.parse_args()
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
    import parity.events as ev
    from parity.events.diff import compare_events
    from parity.events.normalize import Normalizer
    from parity.events.presets import preset_rules

    n = args.events
    ref = generate(n, "reference-machine", random.Random(7))
    cand = json.loads(json.dumps(generate(n, "candidate-box", random.Random(7))))
    # real edits: a changed tool argument, a dropped tool call (call + result), an inserted hook, a changed result
    edits = []
    i = next(k for k in range(n // 5, n) if cand[k]["kind"] == "assistant_turn")
    cand[i]["content"][1]["input"] = {**cand[i]["content"][1]["input"], "file_path": "src/pkg/other.py"}
    edits.append(f"changed tool argument at #{i}")
    j = next(k for k in range(n // 2, n) if cand[k]["kind"] == "assistant_turn")
    del cand[j:j + 2]
    edits.append(f"dropped tool call at #{j} (call + result)")
    k = 3 * n // 4
    cand.insert(k, {"v": 1, "kind": "hook_event", "turn": cand[k]["turn"], "ts": 1, "hook": "Stop", "decision": "block"})
    edits.append(f"inserted hook_event at cand #{k}")
    m = next(x for x in range(9 * n // 10, len(cand)) if cand[x]["kind"] == "tool_result")
    cand[m]["content"] = cand[m]["content"].replace("line 1", "line 1 (changed)")
    edits.append(f"changed tool_result text at cand #{m}")

    with tempfile.TemporaryDirectory(prefix="parity-events-bench-") as d:
        rj, cj = os.path.join(d, "ref.jsonl"), os.path.join(d, "cand.jsonl")
        write(rj, ref)
        write(cj, cand)
        mb = (os.path.getsize(rj) + os.path.getsize(cj)) / 1e6
        print(f"events_scale: {n:,} reference events, {len(cand):,} candidate events ({mb:.1f} MB of JSONL); edits: "
              + "; ".join(edits))

        t0 = time.perf_counter()
        ev.import_events(rj, os.path.join(d, "ref.trace"), preset="ccpa")
        t_import = time.perf_counter() - t0
        ev.import_events(cj, os.path.join(d, "cand.trace"), preset="ccpa")

        t0 = time.perf_counter()
        la = ev.load_events(os.path.join(d, "ref.trace"))
        lb = ev.load_events(os.path.join(d, "cand.trace"))
        t_load = time.perf_counter() - t0

        t0 = time.perf_counter()
        rules = preset_rules("ccpa")
        na, nb = Normalizer(rules), Normalizer(rules)
        ida = [na.normalize(e.record).identity for e in la.events]
        idb = [nb.normalize(e.record).identity for e in lb.events]
        t_norm = time.perf_counter() - t0

        t0 = time.perf_counter()
        diff = compare_events(la, lb)
        t_diff_logs = time.perf_counter() - t0

        t0 = time.perf_counter()
        diff_tr = compare_events(os.path.join(d, "ref.trace"), os.path.join(d, "cand.trace"))
        t_diff = time.perf_counter() - t0
        t0 = time.perf_counter()
        compare_events(rj, cj, preset="ccpa")
        t_diff_jsonl = time.perf_counter() - t0

        intern: dict[str, int] = {}
        sa = [intern.setdefault(x, len(intern)) for x in ida]
        sb = [intern.setdefault(x, len(intern)) for x in idb]
        from parity.events.align import diff_sequences

        t0 = time.perf_counter()
        diff_sequences(sa, sb)
        t_align = time.perf_counter() - t0
        t0 = time.perf_counter()
        difflib.SequenceMatcher(None, sa, sb, autojunk=False).get_opcodes()
        t_difflib = time.perf_counter() - t0

        raw_a = open(rj, encoding="utf-8").read().splitlines()
        raw_b = open(cj, encoding="utf-8").read().splitlines()
        t0 = time.perf_counter()
        raw_ops = difflib.SequenceMatcher(None, raw_a, raw_b, autojunk=False).get_opcodes()
        t_raw = time.perf_counter() - t0
        raw_equal = sum(i2 - i1 for tag, i1, i2, _, _ in raw_ops if tag == "equal")

        s = args.subset
        t0 = time.perf_counter()
        naive_dp(ida[:s], idb[:s])
        t_dp = time.perf_counter() - t0
        t_dp_full = t_dp * (n / s) ** 2

    assert diff.to_dict() == {**diff_tr.to_dict(), "ref": diff.ref_path, "cand": diff.cand_path}
    print(f"  result: {diff.verdict}, score {diff.score:.6f}; {diff.equal:,} equal, {diff.changed} changed, "
          f"{diff.deleted} deleted, {diff.inserted} inserted; first divergence: {diff.first_divergence.describe()[:90]}")
    print(f"  import JSONL -> event trace:          {t_import:6.2f} s  ({n / t_import:,.0f} events/s)")
    print(f"  diff two event traces (end to end):   {t_diff:6.2f} s")
    print(f"    of which: load both traces          {t_load:6.2f} s")
    print(f"              normalize both (ccpa)     {t_norm:6.2f} s")
    print(f"              align (Myers on ids)      {t_align:6.3f} s")
    print(f"    compare_events on loaded logs:      {t_diff_logs:6.2f} s")
    print(f"  diff the two JSONL files directly:    {t_diff_jsonl:6.2f} s")
    print("baselines on the same data:")
    print(f"  difflib.SequenceMatcher on the ids:   {t_difflib:6.3f} s  (ours {t_difflib / t_align:,.0f}x faster at "
          "aligning)")
    print(f"  difflib on the raw lines:             {t_raw:6.2f} s  (aligns only {raw_equal:,} of {n:,} events: every "
          "line carries its own ids and timestamps)")
    print(f"  O(N·M) edit-distance matrix, {s:,} events: {t_dp:6.2f} s -> {t_dp_full / 3600:,.1f} h extrapolated to "
          f"{n:,} (ours {t_dp_full / t_diff:,.0f}x faster end to end)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
