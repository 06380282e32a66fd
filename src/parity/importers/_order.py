"""Execution order for stages whose source has none (a directory of dumps, a safetensors file).

A directory listing or a safetensors header is not an execution order, and the first divergence
depends on one. When no explicit order is given (``order.txt``, ``--order``), stages are sorted
by name: embedding-like stages first, then everything else with numbers compared as numbers
(``layers.2`` before ``layers.10``) and the canonical transformer stages in their computation
order inside each layer (``attn_norm`` before ``q_proj`` before ... ``ffn_residual``), then the
final norm and the logits.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

from ..errors import ImportFormatError
from ..trace.keys import make_key, split_key

__all__ = ["CANONICAL_STAGES", "MAX_ORDER_BYTES", "order_key", "sort_stages", "read_order_file", "add_keyed"]

#: The largest order file read (64 MiB: a million long entries).
MAX_ORDER_BYTES = 64 * 2**20
_INT = re.compile(r"-?[0-9]{1,20}")

#: Canonical per-layer stages of a transformer, in the order they are computed.
CANONICAL_STAGES = (
    "attn_norm", "q_proj", "k_proj", "v_proj", "qkv", "q_rope", "k_rope", "attn_scores", "attn_probs",
    "attn_context", "attn_out", "attn_residual", "ffn_norm", "ffn_gate", "ffn_up", "ffn_act", "ffn_mul",
    "ffn_out", "ffn_residual",
)
_RANK = {name: i for i, name in enumerate(CANONICAL_STAGES)}
_FIRST = re.compile(r"^(embed|embedding|embeddings|tok_embeddings|wte|input|inputs|tokens)(_|$)")
_LAST = re.compile(r"^(final_norm|norm_f|ln_f|norm|logits|lm_head|output|outputs)(_|$)")
_NUM = re.compile(r"(\d+)")


def _natural(segment: str) -> tuple:
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in _NUM.split(segment) if p)


def order_key(key: str) -> tuple:
    """Sort key giving the inferred execution order of ``key`` (see the module docstring).

    Example:
        >>> order_key("embedding") < order_key("layers.0.q_proj") < order_key("logits")
        True
    """
    segs = key.split(".")
    head = segs[0]
    phase = 0 if _FIRST.match(head) else 2 if (_LAST.match(head) and len(segs) == 1) else 1
    parts = [_natural(s) for s in segs[:-1]]
    leaf = segs[-1]
    base = re.split(r"[\[#]", leaf, maxsplit=1)[0]
    parts.append(((_RANK.get(base, len(_RANK)),), _natural(leaf)))
    return (phase, tuple(parts))


def sort_stages(keys: Iterable[str]) -> list[str]:
    """``keys`` in inferred execution order.

    Example:
        >>> sort_stages(["logits", "layers.10.q_proj", "layers.2.ffn_out", "layers.2.attn_norm", "embed"])
        ['embed', 'layers.2.attn_norm', 'layers.2.ffn_out', 'layers.10.q_proj', 'logits']
    """
    return sorted(keys, key=order_key)


def read_order_file(path: str, known: Iterable[str]) -> list[str]:
    """Read an order file: one entry (a relative path or a stage key) per line; lines starting with ``#`` are comments.

    The file must be UTF-8 text (decoded strictly) of at most :data:`MAX_ORDER_BYTES` bytes.

    Raises:
        ImportFormatError: the file is not UTF-8 text (the line is named), an entry names nothing
            that exists, or is listed twice.

    Example:
        >>> _ = open("order.txt", "w").write("# run order\\nb.npy\\na.npy\\n")
        >>> read_order_file("order.txt", ["a.npy", "b.npy"])
        ['b.npy', 'a.npy']
    """
    known = set(known)
    out: list[str] = []
    seen: set[str] = set()
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_ORDER_BYTES + 1)
    except OSError as e:
        raise ImportFormatError(f"cannot be read ({e.strerror or e}).", path=path) from e
    if len(raw) > MAX_ORDER_BYTES:
        raise ImportFormatError(f"is larger than {MAX_ORDER_BYTES} bytes; an order file lists one entry per line "
                                "and is far smaller.", path=path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise ImportFormatError(f"line {line} is not UTF-8 text (invalid byte {raw[e.start:e.start + 1]!r} at "
                                f"offset {e.start}); an order file lists one relative path or stage key per line.",
                                path=path) from e
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise ImportFormatError(f"line {line} holds a NUL byte; an order file is plain text.", path=path)
    lines = text.split("\n")  # numbered as an editor numbers them
    for n, line in enumerate(lines, 1):
        entry = line.strip()  # "#" starts a comment only at the start: keys may hold "#1"
        if not entry or entry.startswith("#"):
            continue
        entry = entry.replace(os.sep, "/")
        if entry not in known:
            raise ImportFormatError(f"line {n} names {_short(entry)}, which is not among the files found.", path=path)
        if entry in seen:
            raise ImportFormatError(f"line {n} lists {_short(entry)} a second time.", path=path)
        seen.add(entry)
        out.append(entry)
    return out


def _short(text: str, limit: int = 120) -> str:
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text)} characters)"


def add_keyed(writer, key: str, value: object, **kwargs) -> str:
    """``writer.add`` for a key read from a file name: a ``#n`` suffix is dropped (the writer
    numbers repeated keys itself) and integer index values become ints.

    Example:
        >>> with parity.TraceWriter("k.trace") as w:
        ...     add_keyed(w, "e[it=3]#4", np.float64(1.5))
        'e[it=3]'
        >>> parity.load_trace("k.trace").stage("e[it=3]").indices
        {'it': 3}
    """
    name, idx, _occ = split_key(key)
    indices = {k: int(v) if _INT.fullmatch(v) else v for k, v in idx.items()}
    return writer.add(make_key(name), value, indices=indices or None, **kwargs)
