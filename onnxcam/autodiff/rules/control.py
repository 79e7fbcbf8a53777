"""Gradient rules: control flow (Scan).

Scan's backward is a second Scan that runs the other way in time. Its body is the engine's backward
of the forward body: each step recomputes the forward step from the states it started from — which
a re-run of the forward Scan records as extra scan outputs — and carries the states' gradients
back. Only the states whose gradients something needs are carried (a loop-invariant weight passed
as a state costs nothing unless its own gradient is wanted).
"""

from __future__ import annotations

import onnx
from onnx import helper

from onnxcam.autodiff.emitter import Emitter
from onnxcam.autodiff.registry import RuleContext, register
from onnxcam.graph import GraphView, outer_names


@register("Scan", since=9)
def scan(ctx: RuleContext):
    """A reverse Scan whose body is the backward of the forward body (states recorded by a re-run): the initial states' and scanned inputs' gradients"""
    from onnxcam.autodiff.engine import emit_backward  # the engine imports the rule table, so not at module level

    body = ctx.attr("body")
    _check_supported(ctx, body)
    n_state = len(ctx.inputs) - int(ctx.attr("num_scan_inputs"))
    view = GraphView(_body_model(ctx, body), complete=False)
    state_in, scan_in = [i.name for i in body.input[:n_state]], [i.name for i in body.input[n_state:]]
    state_out, scan_out = [o.name for o in body.output[:n_state]], [o.name for o in body.output[n_state:]]
    wanted_scan = [m for m, name in enumerate(scan_in) if ctx.needs[n_state + m] and view.is_float(name)]
    carried = _carried_states(view, state_in, state_out, wanted_scan, [i for i in range(n_state) if ctx.needs[i]])
    if not carried and not wanted_scan:
        return [None] * len(ctx.inputs)

    e = ctx.emit
    fed = [k for k in range(len(scan_out)) if ctx.grads[n_state + k]]
    grad_in = {j: e.fresh("d_state") for j in carried}
    grad_out = {k: e.fresh("d_scanned") for k in fed}
    step = Emitter(view, prefix=e.fresh("scan_step"))
    seeds: dict[str, list[str]] = {}
    for j in carried:
        seeds.setdefault(state_out[j], []).append(grad_in[j])
    for k in fed:
        seeds.setdefault(scan_out[k], []).append(grad_out[k])
    wrt = [state_in[j] for j in carried] + [scan_in[m] for m in wanted_scan]
    grads = emit_backward(step, {t: step.sum(terms) for t, terms in seeds.items()}, wrt, missing_ok=True)
    results = [step.op("Identity", grads[name]) if name in grads else step.zeros_like(name) for name in wrt]

    inputs = [_info(view, state_in[j], grad_in[j]) for j in carried] + list(body.input)
    inputs += [_info(view, scan_out[k], grad_out[k]) for k in fed]
    backward_body = helper.make_graph(
        [*body.node, *step.nodes], f"{body.name}_backward", inputs,
        [_info(view, w, r) for r, w in zip(results, wrt)],  # ONNX Runtime wants a body's output shapes known
        initializer=[*body.initializer, *step.initializers])
    in_dirs = list(ctx.attr("scan_input_directions") or [0] * len(scan_in))
    out_dirs = list(ctx.attr("scan_output_directions") or [0] * len(scan_out))
    history = _recorded_states(ctx, body, n_state, out_dirs)
    outputs = e.op(
        "Scan", *[ctx.grads[j] or e.zeros_like(ctx.inputs[j]) for j in carried], *history, *ctx.inputs[n_state:],
        *[ctx.grads[n_state + k] for k in fed], outputs=len(results), body=backward_body,
        num_scan_inputs=len(history) + len(scan_in) + len(fed),
        # step t of the backward is step T−1−t of the forward: every scanned tensor is read the other way
        scan_input_directions=[1] * len(history) + [1 - d for d in in_dirs] + [1 - out_dirs[k] for k in fed],
        scan_output_directions=[1 - in_dirs[m] for m in wanted_scan],
        dtype_of=ctx.inputs[carried[0] if carried else n_state + wanted_scan[0]])
    outputs = [outputs] if isinstance(outputs, str) else outputs
    grad_of = dict(zip([*carried, *[n_state + m for m in wanted_scan]], outputs))
    return [grad_of.get(i) if ctx.needs[i] else None for i in range(len(ctx.inputs))]


def _check_supported(ctx: RuleContext, body: onnx.GraphProto) -> None:
    if any(ctx.attr("scan_input_axes") or []) or any(ctx.attr("scan_output_axes") or []):
        ctx.fail("scanning along an axis other than 0 is not supported")
    outer = sorted(outer_names(ctx.node) & ctx.active)
    if outer:
        ctx.fail(f"its body reads '{outer[0]}' from the enclosing graph, which the score depends on, and gradients "
                 "through such reads are not supported; pass it to the Scan as a state instead")


def _carried_states(view: GraphView, state_in, state_out, wanted_scan, needed) -> list[int]:
    """The states whose gradients the backward must carry: those whose initial values need one, and
    every float state whose next value depends on a tensor whose gradient is carried or wanted."""
    carried = set(needed)
    while True:
        wrt = {state_in[i] for i in carried} | {view.graph.input[len(state_in) + m].name for m in wanted_scan}
        grown = carried | {j for j, name in enumerate(state_out) if view.is_float(name) and view.ancestors([name]) & wrt}
        if grown == carried:
            return sorted(carried)
        carried = grown


def _recorded_states(ctx: RuleContext, body: onnx.GraphProto, n_state: int, out_dirs) -> list[str]:
    """Re-run the forward Scan with each step's incoming states as extra scan outputs, in step order."""
    e = ctx.emit
    records = [e.fresh("state_record") for _ in range(n_state)]
    recording = onnx.GraphProto()
    recording.CopyFrom(body)
    recording.name = f"{body.name}_recording"
    recording.node.extend(helper.make_node("Identity", [i.name], [r]) for i, r in zip(body.input[:n_state], records))
    recording.output.extend(_info_like(i, r) for i, r in zip(body.input[:n_state], records))
    attrs = {a.name: helper.get_attribute_value(a) for a in ctx.node.attribute if a.name not in ("body",
                                                                                                 "scan_output_directions")}
    outputs = e.op("Scan", *ctx.inputs, outputs=len(body.output) + n_state, body=recording,
                   scan_output_directions=[*out_dirs, *[0] * n_state], **attrs)
    return outputs[len(body.output):]


def _body_model(ctx: RuleContext, body: onnx.GraphProto) -> onnx.ModelProto:
    """The body as a model of its own, for a view of its shapes (outer constants declared as inputs)."""
    graph = onnx.GraphProto()
    graph.CopyFrom(body)
    declared = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    for name in sorted(outer_names(ctx.node) - declared):
        graph.input.append(helper.make_tensor_value_info(name, ctx.view.elem_type(name) or onnx.TensorProto.FLOAT,
                                                         ctx.view.shape(name)))
    return helper.make_model(graph, opset_imports=list(ctx.view.model.opset_import),
                             ir_version=max(ctx.view.model.ir_version, 4))


def _info(view: GraphView, like: str, name: str) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, view.elem_type(like) or onnx.TensorProto.FLOAT, view.shape(like))


def _info_like(info: onnx.ValueInfoProto, name: str) -> onnx.ValueInfoProto:
    copied = onnx.ValueInfoProto()
    copied.CopyFrom(info)
    copied.name = name
    return copied
