"""Whole-network gradient parity: the ONNX gradient graph from ``backward`` against torch autograd.

Shared by tests/autodiff/test_networks.py and scripts/grad_parity.py. The score is
Σ_n out[n, t_n] — one target class per sample — where ``out`` is the output of a torch module
(the classifier by default); in ONNX the same score is the seed one-hot(t) on the tensor that
holds ``out``. Target activations are torch modules; their ONNX tensors are found by value,
because the exporter renames tensors and folds BatchNorm into the preceding Conv.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import shape_inference

from onnxcam.autodiff import backward

__all__ = [
    "INPUT",
    "TOLERANCE",
    "Parity",
    "relative_error",
    "torch_reference",
    "intermediate_values",
    "locate",
    "gradient_model",
    "session",
    "check_parity",
    "network_parity",
    "sample_batch",
    "with_seed_input",
]

INPUT = "<input>"  # a target naming the network input rather than a module output
TOLERANCE = 1e-4
SEED_INPUT = "score_seed"


@dataclass
class Parity:
    """The outcome of one comparison; ``errors[target]`` is max|g_onnx − g_torch| / max|g_torch|."""

    tensors: dict[str, str]  # torch target -> ONNX tensor
    errors: dict[str, float]
    grad_model: onnx.ModelProto
    onnx_grads: dict[str, np.ndarray] = field(repr=False)
    torch_grads: dict[str, np.ndarray] = field(repr=False)
    score_tensor: str = ""

    def assert_close(self, tol: float = TOLERANCE, label: str = "") -> None:
        bad = {t: e for t, e in self.errors.items() if not e <= tol}
        assert not bad, f"{label} gradient differs from torch autograd (relative error > {tol}): " + ", ".join(
            f"{t} (ONNX '{self.tensors[t]}'): {e:.3g}" for t, e in bad.items()
        )


def relative_error(onnx_grad: np.ndarray, torch_grad: np.ndarray) -> float:
    assert onnx_grad.shape == torch_grad.shape, f"gradient shape {onnx_grad.shape} != torch {torch_grad.shape}"
    scale = float(np.max(np.abs(torch_grad)))
    assert scale > 0, "degenerate comparison: the torch gradient is identically zero"
    return float(np.max(np.abs(onnx_grad.astype(np.float64) - torch_grad))) / scale


def session(model: onnx.ModelProto, optimize: bool = True) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    options.intra_op_num_threads = 2
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


# --- torch side ----------------------------------------------------------------------------------
def torch_reference(
    module: torch.nn.Module,
    x: np.ndarray,
    targets: Sequence[str],
    classes: Sequence[int],
    score_module: str | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray]:
    """Values and gradients of Σ_n out[n, classes[n]] at the target activations, and ``out``.

    ``out`` is the output of module ``score_module`` (the whole network when ``None``).
    """
    modules = dict(module.named_modules())
    captured: dict[str, torch.Tensor] = {}
    handles = []

    def hook(name):
        def capture(_module, _inputs, output):
            assert name not in captured, f"module '{name}' runs twice in one forward pass; target another"
            output.retain_grad()
            captured[name] = output

        return capture

    for name in {*targets, *([score_module] if score_module else [])} - {INPUT}:
        assert name in modules, f"no module '{name}' in {type(module).__name__}"
        handles.append(modules[name].register_forward_hook(hook(name)))
    try:
        inp = torch.tensor(x, requires_grad=True)
        out = module(inp)
    finally:
        for handle in handles:
            handle.remove()
    if INPUT in targets:
        captured[INPUT] = inp
    scored = captured[score_module] if score_module else out
    assert scored.dim() == 2, f"the scored output has shape {tuple(scored.shape)}; expected (N, classes)"
    scored[torch.arange(len(classes)), torch.as_tensor(list(classes))].sum().backward()
    values = {t: captured[t].detach().numpy().copy() for t in targets}
    grads = {t: captured[t].grad.numpy().copy() for t in targets}
    return values, grads, scored.detach().numpy().copy()


# --- ONNX side -----------------------------------------------------------------------------------
def _float_value_infos(model: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    inferred = shape_inference.infer_shapes(model, strict_mode=False)
    infos = {}
    for info in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        if info.type.HasField("tensor_type") and info.type.tensor_type.elem_type == onnx.TensorProto.FLOAT:
            infos[info.name] = info
    return infos


def intermediate_values(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> list[tuple[str, np.ndarray]]:
    """Every float tensor the graph computes (graph inputs first, then node outputs in node order)."""
    infos = _float_value_infos(model)
    initializers = {t.name for t in model.graph.initializer}
    order = [i.name for i in model.graph.input if i.name not in initializers]
    order += [o for node in model.graph.node if node.op_type != "Constant" for o in node.output if o]
    order = [name for name in order if name in infos]
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    probe.graph.output.extend(infos[name] for name in order if name not in feeds)
    fetched = dict(zip([o.name for o in probe.graph.output], session(probe, optimize=False).run(None, dict(feeds))))
    return [(name, feeds[name] if name in feeds else fetched[name]) for name in order]


def _matches(candidate: np.ndarray, wanted: np.ndarray, tol: float) -> bool:
    if candidate.shape != wanted.shape:
        return False
    scale = max(float(np.max(np.abs(wanted))), 1e-12) if wanted.size else 1.0
    return bool(np.max(np.abs(candidate - wanted), initial=0.0) <= tol * scale)


def locate(
    model: onnx.ModelProto, feeds: Mapping[str, np.ndarray], wanted: Mapping[str, np.ndarray], tol: float = TOLERANCE
) -> dict[str, str]:
    """For each key, the ONNX tensor whose value equals ``wanted[key]`` (the latest produced, if several)."""
    values = intermediate_values(model, feeds)
    found = {}
    for key, value in wanted.items():
        hits = [name for name, candidate in values if _matches(candidate, value, tol)]
        assert hits, f"no tensor in the ONNX graph holds the output of '{key}' (shape {value.shape})"
        found[key] = hits[-1]
    return found


def with_seed_input(model: onnx.ModelProto, score_tensor: str) -> onnx.ModelProto:
    """A copy of ``model`` with graph input ``score_seed``, typed like ``score_tensor``, for its cotangent."""
    seeded = onnx.ModelProto()
    seeded.CopyFrom(model)
    seed_info = onnx.ValueInfoProto()
    seed_info.CopyFrom(_float_value_infos(model)[score_tensor])
    seed_info.name = SEED_INPUT
    seeded.graph.input.append(seed_info)
    return seeded


def gradient_model(
    model: onnx.ModelProto, score_tensor: str, wrt: Sequence[str]
) -> tuple[onnx.ModelProto, dict[str, str]]:
    """``model`` plus a seed input for ``score_tensor`` and the gradients of ``wrt`` as graph outputs."""
    infos = _float_value_infos(model)
    result = backward(with_seed_input(model, score_tensor), {score_tensor: SEED_INPUT}, list(wrt))
    grad_model = result.model
    for name in wrt:
        out = onnx.ValueInfoProto()
        out.CopyFrom(infos[name])  # the gradient has the type and shape of its tensor
        out.name = result.names[name]
        grad_model.graph.output.append(out)
    return grad_model, dict(result.names)


def check_parity(
    module: torch.nn.Module,
    model: onnx.ModelProto,
    x: np.ndarray,
    targets: Sequence[str],
    classes: Sequence[int],
    score_module: str | None = None,
    full_check: bool = True,
) -> Parity:
    """Compare the ONNX gradients of the score at ``targets`` with torch autograd's."""
    input_name = next(i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer})
    feeds = {input_name: x}
    values, torch_grads, scored = torch_reference(module, x, targets, classes, score_module)

    wanted = {t: v for t, v in values.items() if t != INPUT}
    if score_module:
        wanted[SEED_INPUT] = scored
    tensors = locate(model, feeds, wanted) if wanted else {}
    if INPUT in targets:
        tensors[INPUT] = input_name
    score_tensor = tensors.pop(SEED_INPUT) if score_module else model.graph.output[0].name

    grad_model, names = gradient_model(model, score_tensor, [tensors[t] for t in targets])
    if full_check:
        onnx.checker.check_model(grad_model, full_check=True)
    one_hot = np.zeros(scored.shape, dtype=np.float32)
    one_hot[np.arange(len(classes)), list(classes)] = 1.0
    outputs = [names[tensors[t]] for t in targets]
    fetched = session(grad_model).run(outputs, {input_name: x, SEED_INPUT: one_hot})
    onnx_grads = dict(zip(targets, fetched))
    errors = {t: relative_error(onnx_grads[t], torch_grads[t]) for t in targets}
    return Parity(tensors, errors, grad_model, onnx_grads, torch_grads, score_tensor)


# --- the standard network check ----------------------------------------------------------------
def sample_batch(input_shape: Sequence[int], batch: int = 4, seed: int = 0) -> tuple[np.ndarray, list[int]]:
    """A batch of random inputs and ``batch`` different target classes (one per sample)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, *input_shape)).astype(np.float32)
    classes = [int(c) for c in rng.choice(10, size=batch, replace=False)]
    return x, classes


def network_parity(arch: str, opset: int, batch: int = 4, seed: int = 0, model_hook=None) -> Parity:
    """Export architecture ``arch`` of tests.nets at ``opset`` and compare its three targets' gradients.

    ``model_hook``, if given, rewrites the exported model before the comparison.
    """
    from tests.nets import ARCHITECTURES, export_onnx

    spec = ARCHITECTURES[arch]
    module, targets = spec.build(seed=seed)
    x, classes = sample_batch(spec.input_shape, batch, seed)
    model = export_onnx(module, torch.from_numpy(x[:1]), opset=opset)
    if model_hook is not None:
        model = model_hook(model)
    return check_parity(module, model, x, targets, classes)
