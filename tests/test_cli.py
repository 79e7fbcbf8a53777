"""The CLI on the bundled demo model: outputs, messages, exit codes, and nothing half-written."""

import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from onnxcam.cli import cli
from tests.exporter_quirk_nets import paddle_loop_classifier
from tests.nets import export_onnx


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def assert_one_line_error(result, *fragments):
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_run_writes_overlays_heatmaps_and_results(demo_model, demo_images, tmp_path):
    out = tmp_path / "out"
    result = invoke("run", demo_model, demo_images[0].parent, "-o", out)
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [Path(r["image"]).name for r in records] == [p.name for p in demo_images]
    labels = (demo_model.parent / "shapes.labels.txt").read_text().split()
    for record, path in zip(records, demo_images):
        original = cv2.imread(str(path))
        overlay = cv2.imread(str(out / record["overlay"]))
        heatmap = cv2.imread(str(out / record["heatmap"]), cv2.IMREAD_UNCHANGED)
        assert overlay.shape == original.shape
        assert heatmap.dtype == np.uint16 and heatmap.shape == original.shape[:2] and heatmap.max() > 60000
        assert record["target_label"] in labels and record["topk"][0]["class"] == record["target"]
        assert record["layer"] and record["method"] == "gradcam" and record["provider"] == "cpu"
        assert set(record["timings_ms"]) == {"preprocess", "explain", "render"}
        # the examples are named by their true class, and the demo model gets them right
        assert path.name.startswith(record["target_label"])
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "temporary files left behind"


def _named_files(records: list[dict]) -> set[str]:
    keys = ("overlay", "heatmap", "image_overlay", "output_map")
    return {record[key] for record in records for key in keys if key in record}


@pytest.mark.parametrize("flags, kinds", [
    (["--no-overlay"], {"cam"}),
    (["--no-heatmap"], {"overlay"}),
    (["--no-overlay", "--no-heatmap"], set()),
])
def test_no_overlay_and_no_heatmap_leave_those_pictures_out(demo_model, demo_images, tmp_path, flags, kinds):
    out = tmp_path / "out"
    result = invoke("run", demo_model, *demo_images, "-o", out, *flags)
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(records) == len(demo_images) and all(r["status"] == "ok" and r["topk"] for r in records)
    pictures = {p.name for p in out.glob("*.png")}
    assert pictures == {f"{p.stem}.{kind}.png" for p in demo_images for kind in kinds}
    assert _named_files(records) == pictures  # the records name exactly the files written


@pytest.mark.parametrize("flags, kinds", [
    (["--no-overlay"], {"cam"}),
    (["--no-heatmap"], {"overlay"}),
    (["--no-overlay", "--no-heatmap"], set()),
])
def test_detection_honours_no_overlay_and_no_heatmap(tmp_path, flags, kinds):
    from tests.conftest import ROOT

    out = tmp_path / "out"
    result = invoke("run", ROOT / "models" / "shapes_det.onnx", ROOT / "models" / "examples_det", "-o", out, *flags)
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    boxes = [r for r in records if r["box_index"] is not None]
    assert boxes and all(r["status"] == "ok" and r["box"] for r in records)
    expected = {f"{Path(r['image']).stem}.box{r['box_index']}.{kind}.png" for r in boxes for kind in kinds}
    if "overlay" in kinds:
        expected |= {f"{Path(r['image']).stem}.overlay.png" for r in records}
    assert {p.name for p in out.glob("*.png")} == expected
    assert _named_files(records) == expected


def test_run_refuses_to_overwrite(demo_model, demo_images, tmp_path):
    out = tmp_path / "out"
    assert invoke("run", demo_model, demo_images[0], "-o", out).exit_code == 0
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert_one_line_error(invoke("run", demo_model, demo_images[0], "-o", out), "--overwrite")
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    assert invoke("run", demo_model, demo_images[0], "-o", out, "--overwrite").exit_code == 0


def test_run_with_explicit_target(demo_model, demo_images, tmp_path):
    result = invoke("run", demo_model, demo_images[0], "-o", tmp_path, "--target", 2)
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "results.jsonl").read_text())
    assert record["target"] == 2


@pytest.mark.parametrize("args, fragments", [
    (["--layer", "nope"], ["layer 'nope' not found", "candidates"]),
    (["--target", "99"], ["target 99 is out of range", "4 classes"]),
    (["--method", "nope"], []),
    (["--method", "integrated-gradcam", "--baseline", "grey"], ["'grey' is not one of 'black', 'zero'"]),
    (["--method", "smoothgradcampp", "--samples", "0"], ["0 is not in the range x>=1"]),
    (["--method", "smoothgradcampp", "--noise", "-1"], ["-1.0 is not in the range x>=0"]),
    (["--method", "scorecam", "--passes-batch", "0"], ["'0' is neither 'auto' nor a whole number"]),
])
def test_run_bad_options(demo_model, demo_images, tmp_path, args, fragments):
    out = tmp_path / "out"
    result = invoke("run", demo_model, demo_images[0], "-o", out, *args)
    assert result.exit_code != 0 and "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.output
    assert not out.exists() or not any(out.iterdir()), "outputs written despite the error"


def test_layer_without_spatial_extent(demo_model, demo_images, tmp_path):
    model = onnx.load(str(demo_model))
    pooled = next(n.output[0] for n in model.graph.node if n.op_type in ("GlobalAveragePool", "ReduceMean"))
    result = invoke("run", demo_model, demo_images[0], "-o", tmp_path / "o", "--layer", pooled)
    assert_one_line_error(result, "no spatial extent")


def test_unreadable_image_writes_nothing(demo_model, demo_images, tmp_path):
    bad = tmp_path / "in" / "zz_broken.png"
    bad.parent.mkdir()
    bad.write_bytes(b"not a png")
    good = tmp_path / "in" / "aa_good.png"
    good.write_bytes(demo_images[0].read_bytes())
    out = tmp_path / "out"
    result = invoke("run", demo_model, bad.parent, "-o", out, "--batch-size", 1)
    assert_one_line_error(result, "cannot decode", "zz_broken.png")
    assert not any(out.iterdir()), list(out.iterdir())


def test_output_folder_not_writable(demo_model, demo_images, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert_one_line_error(invoke("run", demo_model, demo_images[0], "-o", blocker / "sub"), "not writable")


def test_missing_input_and_model(demo_model, tmp_path):
    assert_one_line_error(invoke("run", demo_model, tmp_path / "nope.png", "-o", tmp_path / "o"), "does not exist")
    assert_one_line_error(invoke("run", tmp_path / "nope.onnx", tmp_path, "-o", tmp_path / "o"), "not found")


def test_export_then_run_the_explain_model(demo_model, demo_images, tmp_path):
    explain = tmp_path / "shapes.cam.onnx"
    result = invoke("export", demo_model, "-o", explain, "--expose", "activations,gradients")
    assert result.exit_code == 0, result.output
    assert "cam_target" in result.output
    outputs = [o.name for o in onnx.load(str(explain)).graph.output]
    assert outputs == ["logits", "cam", "cam_target", "cam_score", "activations", "gradients"]
    assert_one_line_error(invoke("export", demo_model, "-o", explain), "exists", "--overwrite")
    # the explain model runs as it is; the sidecar is not beside it, so give the pre-processing
    result = invoke("run", explain, demo_images[0], "-o", tmp_path / "o", "--labels",
                    demo_model.parent / "shapes.labels.txt", "--mean", "0.5,0.5,0.5", "--std", "0.5,0.5,0.5", "--preset", "unit")
    assert result.exit_code == 0, result.output


def test_export_errors(demo_model, tmp_path):
    assert_one_line_error(invoke("export", demo_model, "-o", tmp_path / "m.onnx", "--expose", "weights"), "cannot expose")
    assert_one_line_error(invoke("export", demo_model, "-o", demo_model, "--overwrite"), "overwrite the input")
    assert_one_line_error(invoke("export", demo_model, "-o", tmp_path / "m.onnx", "--input-shape", "1x3xbig"), "1x3x224x224")


def _dynamic_size_model(path):
    """A CNN exported with dynamic height and width; explaining its first ReLU differentiates a strided
    Conv, whose gradient needs static spatial dims."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3)).eval()
    model = export_onnx(net, torch.zeros(1, 3, 32, 32))
    for dim in model.graph.input[0].type.tensor_type.shape.dim[2:]:
        dim.Clear()
        dim.dim_param = "side"
    onnx.save(model, str(path))
    return path


def test_a_dynamic_size_error_names_the_options_of_the_command(demo_images, tmp_path):
    model = _dynamic_size_model(tmp_path / "dynamic.onnx")
    run = invoke("run", model, demo_images[0], "-o", tmp_path / "out", "--layer", "/1/Relu_output_0")
    assert_one_line_error(run, "must be static", "--size HxW", "--input-shape")
    export = invoke("export", model, "-o", tmp_path / "m.cam.onnx", "--layer", "/1/Relu_output_0")
    assert_one_line_error(export, "must be static", "--input-shape")
    assert "--size" not in export.output  # export has no pre-processing
    fixed = invoke("run", model, demo_images[0], "-o", tmp_path / "sized", "--layer", "/1/Relu_output_0",
                   "--size", "32x40")
    assert fixed.exit_code == 0, fixed.output


def test_an_input_shape_the_model_cannot_take_is_a_one_line_error(demo_images, tmp_path):
    from tests.test_plan import _nhwc_model

    model = tmp_path / "keras.onnx"
    onnx.save(_nhwc_model("reshape"), str(model))  # (N, 8, 8, 3), a flatten to 256 values before its Dense
    moved = invoke("run", model, demo_images[0], "-o", tmp_path / "out", "--input-shape", "1x3x8x8")
    assert_one_line_error(moved, "declared ?x8x8x3 (NHWC)", "channels are fixed at 3", "1x8x8x3")
    resized = invoke("export", model, "-o", tmp_path / "m.cam.onnx", "--input-shape", "1x12x12x3")
    assert_one_line_error(resized, "1x12x12x3 does not fit", "Reshape node 'flatten'", "--input-shape")
    assert not (tmp_path / "m.cam.onnx").exists()


def test_layers_marks_the_automatic_choice(demo_model):
    result = invoke("layers", demo_model)
    assert result.exit_code == 0, result.output
    marked = [line for line in result.output.splitlines() if line.startswith("*")]
    assert len(marked) == 1 and "Relu" in marked[0]
    assert marked[0] is not None and result.output.rstrip().splitlines()[-1] == marked[0]


def test_ops_lists_the_rule_table():
    result = invoke("ops")
    assert result.exit_code == 0 and "| Conv |" in result.output and "Non-differentiable" in result.output


def test_python_dash_m(demo_model):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "onnxcam", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and "onnxcam" in done.stdout


def test_png_fast_stores_the_same_pixels_uncompressed(demo_model, demo_images, tmp_path):
    compact, fast = tmp_path / "compact", tmp_path / "fast"
    assert invoke("run", demo_model, demo_images[0], "-o", compact).exit_code == 0
    result = invoke("run", demo_model, demo_images[0], "-o", fast, "--png", "fast")
    assert result.exit_code == 0, result.output
    for name in (f"{demo_images[0].stem}.overlay.png", f"{demo_images[0].stem}.cam.png"):
        a, b = (cv2.imread(str(folder / name), cv2.IMREAD_UNCHANGED) for folder in (compact, fast))
        assert a.dtype == b.dtype and np.array_equal(a, b)
        assert (fast / name).stat().st_size > (compact / name).stat().st_size
    assert_one_line_error(invoke("run", demo_model, demo_images[0], "-o", tmp_path / "x", "--png", "tiny"), "tiny")


def test_layers_flags_layers_gradients_do_not_reach(tmp_path):
    path = tmp_path / "loop.onnx"
    onnx.save(paddle_loop_classifier(), path)
    result = invoke("layers", path)
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if line.startswith("*"))
    assert "late" in row and "yes, gradient-free methods only (Loop node 'head_loop' on the way has no gradient rule)" in row
