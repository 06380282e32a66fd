"""Built-in demo: two NumPy implementations of a small transformer, recorded and diffed.

The reference runs in float64. The candidate is a float32 "port" with one subtle, realistic bug:
it scales attention scores by ``1/sqrt(hidden)`` instead of ``1/sqrt(head_dim)``. parity shows
that every stage before ``layers.0.attn_scores`` agrees and names that stage as the first
divergence, although every later stage diverges too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .capture.record import record, scope, tap

__all__ = ["DemoModel", "reference_forward", "candidate_forward", "write_demo_traces", "INJECTED_STAGE", "DEMO_CONFIG"]

#: The stage where the candidate's bug first shows.
INJECTED_STAGE = "layers.0.attn_scores"

#: Tolerance config used by the demo: a float32 port judged against a float64 reference.
DEMO_CONFIG = """\
# parity diff config for the demo: the candidate is a float32 port of a float64 reference.
[tolerance]
rtol = 1e-4
atol = 1e-6
"""


@dataclass(frozen=True)
class DemoModel:
    """Random weights of a 2-layer pre-norm transformer (seeded, so both sides share them).

    >>> m = DemoModel()
    >>> m.head_dim, m.weights()["0.wq"].shape, len(m.weights())
    (8, (32, 32), 19)
    """

    vocab: int = 64
    hidden: int = 32
    heads: int = 4
    ffn: int = 64
    layers: int = 2
    seed: int = 0

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def weights(self) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(self.seed)
        h, f = self.hidden, self.ffn
        w = {"embed": rng.normal(0, 1, (self.vocab, h)), "final_g": 1 + 0.1 * rng.normal(size=h),
             "unembed": rng.normal(0, h ** -0.5, (h, self.vocab))}
        for i in range(self.layers):
            for name, shape, std in (("wq", (h, h), h ** -0.5), ("wk", (h, h), h ** -0.5), ("wv", (h, h), h ** -0.5),
                                     ("wo", (h, h), h ** -0.5), ("w1", (h, f), h ** -0.5), ("w2", (f, h), f ** -0.5)):
                w[f"{i}.{name}"] = rng.normal(0, std, shape)
            w[f"{i}.g1"] = 1 + 0.1 * rng.normal(size=h)
            w[f"{i}.g2"] = 1 + 0.1 * rng.normal(size=h)
        return w


def _layer_norm(x, g, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g


def _gelu(x):
    # Constants in the array's dtype: a NumPy float64 scalar would silently upcast float32 (NEP 50).
    c, k = x.dtype.type(np.sqrt(2 / np.pi)), x.dtype.type(0.044715)
    return x.dtype.type(0.5) * x * (1 + np.tanh(c * (x + k * x ** 3)))


def _forward(model: DemoModel, tokens: np.ndarray, dtype, score_scale: float) -> np.ndarray:
    w = {k: v.astype(dtype) for k, v in model.weights().items()}
    seq, nh, hd = len(tokens), model.heads, model.head_dim
    x = tap("embedding", w["embed"][tokens], axes=("seq", "hidden"))
    mask = np.triu(np.full((seq, seq), -np.inf, dtype=dtype), 1)
    for i in range(model.layers):
        with scope("layers", i):
            h = tap("attn_norm", _layer_norm(x, w[f"{i}.g1"], dtype(1e-5)), axes=("seq", "hidden"))
            q = tap("q_proj", h @ w[f"{i}.wq"], axes=("seq", "hidden"))
            k = tap("k_proj", h @ w[f"{i}.wk"], axes=("seq", "hidden"))
            v = tap("v_proj", h @ w[f"{i}.wv"], axes=("seq", "hidden"))
            qh, kh, vh = (t.reshape(seq, nh, hd).transpose(1, 0, 2) for t in (q, k, v))
            scores = tap("attn_scores", (qh @ kh.transpose(0, 2, 1)) * dtype(score_scale), axes=("heads", "seq", "seq_k"))
            s = scores + mask
            e = np.exp(s - s.max(-1, keepdims=True))
            probs = tap("attn_probs", e / e.sum(-1, keepdims=True), axes=("heads", "seq", "seq_k"))
            ctx = tap("attn_context", (probs @ vh).transpose(1, 0, 2).reshape(seq, -1), axes=("seq", "hidden"))
            a = tap("attn_out", ctx @ w[f"{i}.wo"], axes=("seq", "hidden"))
            x = tap("attn_residual", x + a, axes=("seq", "hidden"))
            h = tap("ffn_norm", _layer_norm(x, w[f"{i}.g2"], dtype(1e-5)), axes=("seq", "hidden"))
            u = tap("ffn_up", h @ w[f"{i}.w1"], axes=("seq", "ffn"))
            g = tap("ffn_act", _gelu(u), axes=("seq", "ffn"))
            o = tap("ffn_out", g @ w[f"{i}.w2"], axes=("seq", "hidden"))
            x = tap("ffn_residual", x + o, axes=("seq", "hidden"))
    x = tap("final_norm", _layer_norm(x, w["final_g"], dtype(1e-5)), axes=("seq", "hidden"))
    return tap("logits", x @ w["unembed"], axes=("seq", "vocab"))


def reference_forward(model: DemoModel, tokens: np.ndarray) -> np.ndarray:
    """The reference: float64, scores scaled by ``1/sqrt(head_dim)``.

    >>> with parity.record("mine.trace"):  # each tap() inside is recorded as a stage
    ...     logits = reference_forward(DemoModel(), np.array([3, 14, 15]))
    >>> logits.shape, logits.dtype, len(parity.load_trace("mine.trace"))
    ((3, 64), dtype('float64'), 31)
    """
    return _forward(model, tokens, np.float64, model.head_dim ** -0.5)


def candidate_forward(model: DemoModel, tokens: np.ndarray) -> np.ndarray:
    """The port under test: float32, with the scale bug (``1/sqrt(hidden)``).

    >>> m, tokens = DemoModel(), np.array([3, 14, 15])
    >>> y = candidate_forward(m, tokens)
    >>> y.dtype, bool(np.allclose(y, reference_forward(m, tokens), atol=1e-3))
    (dtype('float32'), False)
    """
    return _forward(model, tokens, np.float32, model.hidden ** -0.5)


def write_demo_traces(directory: str | os.PathLike[str], *, fixed: bool = False) -> tuple[str, str, str]:
    """Record both implementations into ``directory``.

    Args:
        directory: where ``ref.trace``, ``cand.trace`` and ``parity.toml`` are written.
        fixed: record a candidate without the bug (to see parity hold).

    Returns:
        (reference trace path, candidate trace path, config path).

    >>> ref, cand, config = write_demo_traces("demo")
    >>> ref, parity.compare_traces(ref, cand, config).first_divergence.key
    ('demo/ref.trace', 'layers.0.attn_scores')
    >>> parity.compare_traces(*write_demo_traces("fixed", fixed=True)).passed
    True
    """
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    model = DemoModel()
    tokens = np.array([3, 14, 15, 9, 26, 5, 35, 8])
    ref, cand = os.path.join(directory, "ref.trace"), os.path.join(directory, "cand.trace")
    with record(ref, meta={"impl": "reference", "dtype": "float64"}, producer="parity demo", command=["parity", "demo"]):
        reference_forward(model, tokens)
    with record(cand, meta={"impl": "candidate", "dtype": "float32"}, producer="parity demo", command=["parity", "demo"]):
        if fixed:
            _forward(model, tokens, np.float32, model.head_dim ** -0.5)
        else:
            candidate_forward(model, tokens)
    config = os.path.join(directory, "parity.toml")
    with open(config, "w", encoding="utf-8") as f:
        f.write(DEMO_CONFIG)
    return ref, cand, config
