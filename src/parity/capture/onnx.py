"""Capture every intermediate value of an ONNX Runtime run: :func:`capture_onnx`.

ONNX Runtime only returns graph outputs, so every node output is marked as a graph output (on an
in-memory copy of the model; the file is never modified) and the run's values are stored in node
order, which the ONNX standard guarantees to be a topological (execution) order.

**Names.** Each value is stored under its ONNX name made into a stage key
(``/encoder/layer.0/attention/self/query/Add_output_0`` → ``encoder.layer.0.attention.self.query.Add_output_0``;
the dynamo exporter's flat names such as ``linear_7`` get their module scope in front), with the
original name, node and op type in the stage's provenance.

**Alignment.** Exporters from PyTorch record the module each node came from (the TorchScript
exporter in node names such as ``/encoder/layer.0/attention/self/query/MatMul``, the dynamo
exporter in the ``pkg.torch.onnx.name_scopes`` metadata). With a preset
(:mod:`parity.capture.presets`, ``preset="auto"`` by default) the values that are a canonical
stage are stored under the canonical key instead (``layers.0.q_proj``, ``layers.0.attn_probs``...)
with the preset's axes, so that ``parity diff torch.trace onnx.trace`` lines the two up directly:

* a module's *output* is the last float value produced inside the module's scope and used outside it;
* a module's *input* is the first float value used inside the scope and produced outside it
  (weights excluded);
* ``attn_probs`` is the ``Softmax`` in the attention module's scope, ``attn_scores`` its input, or,
  when that input is the masked sum, the scaled scores added to the mask;
* a fused projection's slices (GPT-2 ``q_proj``...) are the outputs of the ``Split`` of its output.

Stages the graph does not let us find (``q_rope``/``k_rope`` are computed inline) keep their ONNX names.
"""

from __future__ import annotations

import ast
import json
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import CaptureError, UsageError
from ..trace.writer import TraceWriter
from .presets import PRESETS, Preset, StageSpec, get_preset

__all__ = ["capture_onnx", "OnnxCapture", "load_inputs", "align_graph"]

_BAD = re.compile(r"[^A-Za-z0-9_+\-:@.]")
_ORT_TYPES = {
    "tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int16)": np.int16, "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8, "tensor(uint16)": np.uint16, "tensor(uint32)": np.uint32,
    "tensor(uint64)": np.uint64, "tensor(bool)": np.bool_,
}


def _need(module: str, extra: str = "onnx") -> Any:
    try:
        return __import__(module)
    except ImportError as e:
        raise UsageError(f"capturing ONNX models needs the {module} package: pip install 'parity[{extra}]'.") from e


@dataclass(frozen=True)
class OnnxCapture:
    """What :func:`capture_onnx` recorded.

    Attributes:
        path: the trace directory.
        keys: stage keys in execution order.
        aligned: canonical stage key → ONNX value name, for the values a preset recognised.
        preset: the preset used for alignment, or ``None``.

    Example (the result of the model in :func:`capture_onnx`'s example):
        >>> OnnxCapture("o.trace", ("act.r", "y")).keys[-1]
        'y'
    """

    path: str
    keys: tuple[str, ...]
    aligned: Mapping[str, str] = field(default_factory=dict)
    preset: str | None = None


def load_inputs(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read model inputs from ``.npz``, ``.npy`` (one input), ``.safetensors``, ``.json`` or a parity trace.

    A JSON file maps input names to (nested) lists; a trace's stage keys are the input names.

    Raises:
        UsageError: the file cannot be read or holds no arrays.

    Example:
        >>> np.savez("in.npz", x=np.zeros((1, 3), np.float32))
        >>> {k: v.shape for k, v in load_inputs("in.npz").items()}
        {'x': (1, 3)}
    """
    p = os.fspath(path)
    if os.path.isdir(p):
        from ..trace.reader import load_trace

        t = load_trace(p)
        return {s.key: np.array(t[s.key]) for s in t if s.kind == "tensor"}
    if not os.path.isfile(p):
        raise UsageError("no such inputs file.", path=p)
    lower = p.lower()
    try:
        if lower.endswith(".npz"):
            with np.load(p, allow_pickle=False) as z:
                out = {k: np.array(z[k]) for k in z.files}
        elif lower.endswith(".npy"):
            out = {"input": np.load(p, allow_pickle=False)}
        elif lower.endswith(".safetensors"):
            from safetensors.numpy import load_file

            out = dict(load_file(p))
        elif lower.endswith(".json"):
            with open(p, encoding="utf-8") as f:
                doc = json.load(f)
            if not isinstance(doc, dict):
                raise UsageError("a JSON inputs file must map input names to arrays (nested lists).", path=p)
            out = {str(k): np.asarray(v) for k, v in doc.items()}
        else:
            raise UsageError("unknown inputs format; use .npz, .npy, .safetensors, .json or a parity trace directory.", path=p)
    except UsageError:
        raise
    except Exception as e:  # noqa: BLE001 - any reader failure is bad input
        raise UsageError(f"cannot read the inputs: {e}.", path=p) from e
    if not out:
        raise UsageError("the inputs file holds no arrays.", path=p)
    return out


def _feeds(session: Any, inputs: Mapping[str, np.ndarray], model_path: str) -> dict[str, np.ndarray]:
    wanted = {i.name: i for i in session.get_inputs()}
    missing = [n for n in wanted if n not in inputs]
    unknown = [n for n in inputs if n not in wanted]
    if missing or unknown:
        parts = []
        if missing:
            parts.append("missing " + ", ".join(missing))
        if unknown:
            parts.append("unknown " + ", ".join(unknown))
        raise UsageError(f"the inputs do not match the model's inputs ({'; '.join(parts)}); it takes: "
                         + ", ".join(f"{n} {i.type} {i.shape}" for n, i in wanted.items()) + ".", path=model_path)
    feeds = {}
    for name, info in wanted.items():
        arr = np.asarray(inputs[name])
        want = _ORT_TYPES.get(info.type)
        if want is not None and arr.dtype != want:
            kind_ok = (np.dtype(want).kind in "iu" and arr.dtype.kind in "iub") or \
                      (np.dtype(want).kind == "f" and arr.dtype.kind in "fiu") or np.dtype(want).kind == arr.dtype.kind
            cast = arr.astype(want)
            if not kind_ok or (arr.dtype.kind in "iu" and not np.array_equal(cast.astype(arr.dtype), arr)):
                raise UsageError(f'input "{name}" is {arr.dtype} but the model takes {info.type}, and the values do not '
                                 "convert exactly.", path=model_path)
            arr = cast
        feeds[name] = arr
    return feeds


def _scope(node: Any) -> str:
    for p in node.metadata_props:
        if p.key == "pkg.torch.onnx.name_scopes":
            try:
                scopes = [s for s in ast.literal_eval(p.value)[:-1] if isinstance(s, str) and s]
            except (ValueError, SyntaxError):
                break
            return scopes[-1] if scopes else ""
    if node.name.startswith("/"):
        return ".".join(part for part in node.name.split("/")[1:-1] if part)
    return ""


def _key_for(name: str, scope: str) -> str:
    if "/" in name:
        raw = name.replace("/", ".")
    else:  # flat names (dynamo exporter, hand-built graphs): prefix the module scope when there is one
        raw = f"{scope}.{name}" if scope else name
    segs = []
    for seg in _BAD.sub("_", raw).split("."):
        if not seg:
            continue
        if not (seg[0].isalnum() or seg[0] == "_"):
            seg = "_" + seg
        segs.append(seg)
    return ".".join(segs) or "value"


class _Graph:
    """Producer/consumer index of a graph's values, with the module scope of every node."""

    def __init__(self, graph: Any):
        self.nodes = list(graph.node)
        self.scopes = [_scope(n) for n in self.nodes]
        self.producer: dict[str, int] = {}
        self.consumers: dict[str, list[int]] = {}
        for i, n in enumerate(self.nodes):
            for o in n.output:
                if o:
                    self.producer[o] = i
            for x in n.input:
                if x:
                    self.consumers.setdefault(x, []).append(i)
        self.graph_outputs = {o.name for o in graph.output}
        self.initializers = {t.name for t in graph.initializer}
        self.all_scopes: set[str] = set()
        for s in self.scopes:
            parts = s.split(".")
            for j in range(1, len(parts) + 1):
                self.all_scopes.add(".".join(parts[:j]))

    @staticmethod
    def within(scope: str, target: str) -> bool:
        return scope == target or scope.startswith(target + ".")

    def find_scope(self, path: str, exclude: str | None = None) -> str | None:
        hits = [s for s in self.all_scopes if (s == path or s.endswith("." + path))
                and not (exclude and self.within(s, exclude))]
        return min(hits, key=len) if hits else None

    def is_weight(self, value: str, depth: int = 0) -> bool:
        """An initializer, a constant, or an Identity/Cast of one (exporters alias shared weights so)."""
        if value in self.initializers:
            return True
        p = self.producer.get(value)
        if p is None:
            return False
        node = self.nodes[p]
        if node.op_type == "Constant":
            return True
        return node.op_type in ("Identity", "Cast") and depth < 8 and bool(node.input) and \
            self.is_weight(node.input[0], depth + 1)

    def module_output(self, scope: str, values: Mapping[str, np.ndarray]) -> str | None:
        best = None
        for v, p in self.producer.items():
            if not self.within(self.scopes[p], scope) or not _is_float(values.get(v)):
                continue
            used_outside = v in self.graph_outputs or any(not self.within(self.scopes[c], scope)
                                                         for c in self.consumers.get(v, ()))
            if used_outside and (best is None or p > self.producer[best]):
                best = v
        return best

    def module_input(self, scope: str, values: Mapping[str, np.ndarray], index: int = 0) -> str | None:
        found: list[str] = []
        for i, n in enumerate(self.nodes):
            if not self.within(self.scopes[i], scope):
                continue
            for x in n.input:
                if not x or x in found or self.is_weight(x) or not _is_float(values.get(x)):
                    continue
                p = self.producer.get(x)
                if p is None or not self.within(self.scopes[p], scope):
                    found.append(x)
        return found[index] if len(found) > index else None

    def attention(self, scope: str, which: str) -> str | None:
        for i, n in enumerate(self.nodes):
            if n.op_type != "Softmax" or not self.within(self.scopes[i], scope):
                continue
            if which == "attn_probs":
                return n.output[0]
            x = n.input[0]
            p = self.producer.get(x)
            if p is None:
                return x
            prod = self.nodes[p]
            if prod.op_type in ("MatMul", "Mul", "Div"):
                return x  # no mask: the softmax sees the scaled scores
            if prod.op_type == "Add":
                # scores + mask: the scores are the operand computed from the Q·K product
                for operand in prod.input:
                    q = self.producer.get(operand)
                    if q is not None and self.nodes[q].op_type in ("MatMul", "Mul", "Div") and \
                            self.within(self.scopes[q], scope):
                        return operand
            return None
        return None

    def split(self, scope: str, values: Mapping[str, np.ndarray], index: int, parts: int) -> str | None:
        out = self.module_output(scope, values)
        if out is None:
            return None
        for c in self.consumers.get(out, ()):
            n = self.nodes[c]
            if n.op_type == "Split" and len(n.output) == parts and n.input[0] == out:
                return n.output[index]
        return None


def _is_float(a: object) -> bool:
    return isinstance(a, np.ndarray) and a.dtype.kind == "f"


def _layer_prefixes(g: _Graph, preset: Preset) -> dict[int, str]:
    rx = re.compile(r"^(?:(.*)\.)?" + re.escape(preset.layers) + r"\.(\d+)$")
    layers: dict[int, str] = {}
    for s in g.all_scopes:
        m = rx.match(s)
        if m:
            i = int(m.group(2))
            if i not in layers or len(s) < len(layers[i]):
                layers[i] = s
    return layers


def align_graph(graph: Any, values: Mapping[str, np.ndarray], preset: Preset) -> dict[str, tuple[str, StageSpec]]:
    """Find the canonical stages of ``preset`` among a graph's values.

    Args:
        graph: an ``onnx.GraphProto``.
        values: the values of a run, by ONNX name (dtypes decide which values are float).
        preset: the architecture's preset.

    Returns:
        Canonical stage key (``layers.3.attn_probs``, ``embedding``) → (ONNX value name, spec).

    >>> from onnx import TensorProto, helper
    >>> from parity.capture.presets import Preset, StageSpec
    >>> g = helper.make_graph([helper.make_node("Relu", ["x"], ["r"], name="/layers.0/act/Relu"),
    ...                        helper.make_node("Neg", ["r"], ["y"], name="/layers.0/out/Neg")], "g", [],
    ...                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])])
    >>> mini = Preset("mini", ("mini",), "layers", (StageSpec("ffn_act", "output", "act", ("x",)),
    ...                                              StageSpec("ffn_residual", "output", "", ("x",))), ())
    >>> values = {"r": np.zeros(3, np.float32), "y": np.zeros(3, np.float32)}  # dtypes decide what is float
    >>> {key: name for key, (name, _) in align_graph(g, values, mini).items()}
    {'layers.0.ffn_act': 'r', 'layers.0.ffn_residual': 'y'}
    """
    g = graph if isinstance(graph, _Graph) else _Graph(graph)
    layers = _layer_prefixes(g, preset)
    out: dict[str, tuple[str, StageSpec]] = {}
    container = None
    if layers:
        first = layers[min(layers)]
        container = first.rsplit(".", 1)[0]
    for spec in preset.model_stages:
        for alt in spec.module.split("|"):
            scope = g.find_scope(alt, exclude=container)
            if scope is not None:
                v = g.module_output(scope, values) if spec.source == "output" else g.module_input(scope, values, spec.index)
                if v is not None:
                    out[spec.name] = (v, spec)
                    break
    emb = next((s for s in preset.model_stages if s.name == "embedding"), None)
    if emb is not None and "embedding" not in out and layers:
        # e.g. GPT-2's embedding dropout vanishes from an eval-mode export: the embedding is then
        # the hidden state entering the first layer
        v = g.module_input(layers[min(layers)], values)
        if v is not None:
            out["embedding"] = (v, emb)
    for i, prefix in sorted(layers.items()):
        for spec in preset.layer_stages:
            scope = f"{prefix}.{spec.module}" if spec.module else prefix
            if scope not in g.all_scopes:
                continue
            v = None
            if spec.source == "output":
                v = g.module_output(scope, values)
            elif spec.source == "input":
                v = g.module_input(scope, values, spec.index)
            elif spec.source == "attention":
                v = g.attention(scope, spec.name)
            elif spec.source == "split":
                v = g.split(scope, values, spec.index, spec.parts)
            if v is not None and v in values:
                out[f"layers.{i}.{spec.name}"] = (v, spec)
    return out


def _detect(g: _Graph, values: Mapping[str, np.ndarray]) -> Preset | None:
    """The preset that finds the most stages, provided it finds most of a layer's (not just a name match)."""
    best, score = None, 0
    for p in PRESETS.values():
        layers = _layer_prefixes(g, p)
        if not layers:
            continue
        aligned = align_graph(g, values, p)
        first = min(layers)
        findable = [s for s in p.layer_stages if s.source != "rope"]
        if sum(f"layers.{first}.{s.name}" in aligned for s in findable) * 2 < len(findable):
            continue
        if len(aligned) > score:
            best, score = p, len(aligned)
    return best


def capture_onnx(
    model: str | os.PathLike[str],
    inputs: Mapping[str, Any] | str | os.PathLike[str],
    path: str | os.PathLike[str],
    *,
    preset: str | Preset | None = "auto",
    providers: Sequence[str] | None = None,
    meta: Mapping[str, Any] | None = None,
    producer: str = "parity.capture.onnx",
    command: Sequence[str] | None = None,
) -> OnnxCapture:
    """Run an ONNX model with ONNX Runtime and record every intermediate value into ``path``.

    Args:
        model: the ``.onnx`` file (external data next to it is found as ONNX Runtime would).
        inputs: arrays by input name, or a file for :func:`load_inputs`.
        path: the ``NAME.trace`` directory to write.
        preset: ``"auto"`` (recognise the architecture from the graph's module scopes), a preset
            name, or ``None`` to keep every ONNX name.
        providers: ONNX Runtime execution providers (default: CPU).
        meta: extra JSON-serialisable trace metadata.
        producer, command: recorded in the manifest.

    Returns:
        An :class:`OnnxCapture`.

    Raises:
        UsageError: the model or the inputs cannot be read, or do not match.
        CaptureError: ONNX Runtime failed to run the model.

    Example:
        >>> import numpy as np, onnx, tempfile, os, parity
        >>> from onnx import helper, TensorProto
        >>> g = helper.make_graph([helper.make_node("Relu", ["x"], ["r"], name="/act/Relu"),
        ...                        helper.make_node("Neg", ["r"], ["y"], name="/neg/Neg")], "g",
        ...     [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
        ...     [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])])
        >>> d = tempfile.mkdtemp(); f = os.path.join(d, "m.onnx")
        >>> onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), f)
        >>> res = capture_onnx(f, {"x": np.array([-1.0, 0.0, 2.0], np.float32)}, os.path.join(d, "o.trace"))
        >>> res.keys
        ('act.r', 'y')
    """
    onnx = _need("onnx")
    ort = _need("onnxruntime")
    mpath = os.fspath(model)
    proto = _read_model(onnx, mpath)
    feeds_in = load_inputs(inputs) if isinstance(inputs, (str, os.PathLike)) else dict(inputs)
    order, already = _expose_all_values(onnx, proto.graph)
    session = _session(ort, proto, mpath, providers)
    feeds = _feeds(session, feeds_in, mpath)
    names = [o.name for o in session.get_outputs()]
    try:
        results = session.run(names, feeds)
    except Exception as e:  # noqa: BLE001
        raise CaptureError(f"ONNX Runtime failed to run the model: {e}.", path=mpath) from e
    values = {n: r for n, r in zip(names, results) if isinstance(r, np.ndarray)}

    g = _Graph(proto.graph)
    resolved: Preset | None = None
    if preset == "auto":
        resolved = _detect(g, values)
    elif preset is not None:
        resolved = get_preset(preset)
    aligned = align_graph(g, values, resolved) if resolved is not None else {}
    full_meta: dict[str, Any] = {"capture": "parity.capture.onnx", "model": os.path.basename(mpath),
                                 "onnxruntime": getattr(ort, "__version__", "?"), "preset": resolved.name if resolved else None,
                                 "providers": list(session.get_providers())}
    full_meta.update(dict(meta or {}))
    with TraceWriter(path, meta=full_meta, producer=producer,
                     command=list(sys.argv) if command is None else command) as writer:
        keys = _write_values(writer, order, values, g, aligned, already)
    return OnnxCapture(os.fspath(path), tuple(keys), {k: v for k, (v, _) in aligned.items()},
                       resolved.name if resolved else None)


def _read_model(onnx: Any, mpath: str) -> Any:
    """The model's graph, without its external data (ONNX Runtime reads that itself)."""
    if not os.path.isfile(mpath):
        raise UsageError("no such ONNX model file.", path=mpath)
    try:
        return onnx.load(mpath, load_external_data=False)
    except Exception as e:  # noqa: BLE001 - a corrupt or foreign file
        raise UsageError(f"cannot read the ONNX model: {e}.", path=mpath) from e


def _expose_all_values(onnx: Any, graph: Any) -> tuple[list[tuple[str, Any]], set[str]]:
    """Mark every node output a graph output (on the in-memory copy).

    Returns:
        The values in node (execution) order with the node producing each, and the names of the
        model's own declared outputs.
    """
    already = {o.name for o in graph.output}
    order: list[tuple[str, Any]] = []
    seen: set[str] = set()
    for node in graph.node:
        if node.op_type == "Constant":
            continue  # values written in the file, not computed
        for o in node.output:
            if o and o not in seen:
                seen.add(o)
                order.append((o, node))
                if o not in already:
                    graph.output.append(onnx.ValueInfoProto(name=o))
    return order, already


def _session(ort: Any, proto: Any, mpath: str, providers: Sequence[str] | None) -> Any:
    options = ort.SessionOptions()
    # Initializers stored as external data are read from the model's folder, as for a file path.
    options.add_session_config_entry("session.model_external_initializers_file_folder_path",
                                     os.path.dirname(os.path.abspath(mpath)))
    try:
        return ort.InferenceSession(proto.SerializeToString(), options,
                                    providers=list(providers) if providers else ["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001
        raise UsageError(f"ONNX Runtime cannot load the model: {e}.", path=mpath) from e


def _write_values(writer: TraceWriter, order: list[tuple[str, Any]], values: Mapping[str, np.ndarray], g: _Graph,
                  aligned: Mapping[str, tuple[str, StageSpec]], already: set[str]) -> list[str]:
    """Write the run's values in node order: canonical keys for aligned values, scoped ONNX names otherwise."""
    by_value: dict[str, list[tuple[str, StageSpec]]] = {}
    for key, (v, spec) in aligned.items():
        by_value.setdefault(v, []).append((key, spec))
    keys: list[str] = []
    used: set[str] = set()
    for name, node in order:
        arr = values.get(name)
        if arr is None:
            continue
        prov = {"onnx_value": name, "node": node.name, "op": node.op_type}
        canon = by_value.get(name)
        if canon:
            for key, spec in canon:
                axes = spec.axes if len(spec.axes) == arr.ndim else None
                keys.append(writer.add(key, arr, axes=axes, provenance=prov))
            continue
        # the model's declared outputs keep their names; other flat names get their module scope
        key = _key_for(name, g.scopes[g.producer[name]] if name in g.producer and name not in already else "")
        base, n = key, 1
        while key in used or key in aligned:
            n += 1
            key = f"{base}_{n}"
        used.add(key)
        keys.append(writer.add(key, arr, provenance=prov))
    return keys
