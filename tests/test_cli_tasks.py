"""The CLI on non-classifier models: what each task writes, its options, and its one-line errors."""

import json

import cv2
import numpy as np
import onnx
import pytest
import torch

from tests.exporter_quirk_nets import tf2onnx_loop_recogniser
from tests.targets import task_nets as nets
from tests.test_cli import assert_one_line_error, invoke


def _save(tmp_path, name, module, shape, axis=0):
    torch.manual_seed(0)
    module.eval()
    path = tmp_path / f"{name}.onnx"
    onnx.save(nets.export(module, torch.randn(1, *shape[1:]), output_batch_axis=axis), str(path))
    return path


@pytest.fixture()
def images(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    folder.mkdir()
    for i, (h, w) in enumerate([(32, 32), (40, 56)]):
        cv2.imwrite(str(folder / f"im{i}.png"), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    return folder


def _records(out):
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def test_an_n_c_1_1_classifier_records_its_top_k(tmp_path, images):
    model = _save(tmp_path, "squeeze", nets.PooledMapClassifier(), (1, 3, 16, 16))
    out = tmp_path / "out"
    assert invoke("run", model, images, "-o", out, "--topk", "2").exit_code == 0
    for record in _records(out):
        assert record["task"] == "classification" and len(record["topk"]) == 2
        assert record["target"] == record["topk"][0]["class"]


@pytest.mark.parametrize("key, value", [("names", "{0: 'cat', 1: 'dog', 2: 'bird', 3: 'fish'}"),
                                        ("character", "cat\ndog\nbird\nfish")], ids=["ultralytics", "paddle2onnx"])
def test_a_classifier_labels_its_classes_with_the_names_in_its_metadata(tmp_path, images, key, value):
    model = _save(tmp_path, "named", nets.PooledMapClassifier(flat=True), (1, 3, 16, 16))
    proto = onnx.load(str(model))
    onnx.helper.set_model_props(proto, {key: value})
    onnx.save(proto, str(model))
    names = ["cat", "dog", "bird", "fish"]
    result = invoke("run", model, images, "-o", tmp_path / "own")
    assert result.exit_code == 0 and f"class names from the model's metadata ('{key}'): 4 classes" in result.output
    for record in _records(tmp_path / "own"):
        assert record["target_label"] == names[record["target"]]
        assert [t["label"] for t in record["topk"]] == [names[t["class"]] for t in record["topk"]]
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\nc\nd\n")
    result = invoke("run", model, images, "-o", tmp_path / "given", "--labels", labels)
    assert result.exit_code == 0 and "class names from the model's metadata" not in result.output
    assert all(r["target_label"] == "abcd"[r["target"]] for r in _records(tmp_path / "given"))


def test_metadata_names_that_are_not_one_per_class_are_not_used(tmp_path, images):
    model = _save(tmp_path, "misnamed", nets.PooledMapClassifier(flat=True), (1, 3, 16, 16))
    proto = onnx.load(str(model))
    onnx.helper.set_model_props(proto, {"names": "{0: 'cat', 1: 'dog'}", "character": "cat\ndog\nbird"})
    onnx.save(proto, str(model))
    result = invoke("run", model, images, "-o", tmp_path / "out")
    assert result.exit_code == 0 and "class names from the model's metadata" not in result.output
    assert all(r["target_label"] == str(r["target"]) for r in _records(tmp_path / "out"))


def test_dense_writes_the_models_own_map(tmp_path, images):
    model = _save(tmp_path, "db", nets.DBLikeDetector(), (1, 3, 32, 32))
    out = tmp_path / "out"
    result = invoke("run", model, images, "-o", out)
    assert result.exit_code == 0, result.output
    for record in _records(out):
        assert record["task"] == "dense" and record["target"] == -1 and "threshold" in record["target_description"]
        original = cv2.imread(str(images / record["image"].split("/")[-1]))
        own = cv2.imread(str(out / record["output_map"]), cv2.IMREAD_UNCHANGED)
        assert own.dtype == np.uint8 and own.shape == original.shape[:2]
        assert 0 <= record["output_mean"] <= record["output_max"] <= 1


def test_dense_explains_one_channel_of_several(tmp_path, images):
    """--task dense on an (N, 2, H, W) map of independent channels: --target picks the channel, whose own map
    the record's output_map shows; the segmentation the automatic task would pick is not used."""
    model = _save(tmp_path, "craft", nets.DBLikeDetector(offset=[0.5, -0.5], channels=2), (1, 3, 32, 32))
    means = {}
    for channel in (0, 1):
        out = tmp_path / f"c{channel}"
        result = invoke("run", model, images, "-o", out, "--task", "dense", "--target", channel)
        assert result.exit_code == 0, result.output
        records = _records(out)
        assert {(r["task"], r["target"]) for r in records} == {("dense", channel)}
        means[channel] = [r["output_mean"] for r in records]
    assert all(a > b for a, b in zip(means[0], means[1]))  # channel 0's map is the brighter one (its offset)
    region = tmp_path / "region"
    done = invoke("run", model, images, "-o", region, "--task", "dense", "--target", 1, "--region", "0,0,16,16")
    assert done.exit_code == 0, done.output
    inside = _records(region)
    assert {r["target"] for r in inside} == {1} and [r["output_mean"] for r in inside] == means[1]  # channel 1's map
    assert_one_line_error(invoke("run", model, images, "-o", tmp_path / "bad", "--task", "dense", "--target", 2),
                          "target 2 is out of range: the model has 2 channels")


def test_dense_region_and_mask(tmp_path, images):
    model = _save(tmp_path, "db", nets.DBLikeDetector(), (1, 3, 32, 32))
    by_region = tmp_path / "region"
    assert invoke("run", model, images, "-o", by_region, "--region", "0,0,16,16").exit_code == 0
    mask = np.zeros((32, 32), np.uint8)
    mask[:16, :16] = 255
    cv2.imwrite(str(tmp_path / "mask.png"), mask)
    by_mask = tmp_path / "mask"
    assert invoke("run", model, images, "-o", by_mask, "--mask", tmp_path / "mask.png").exit_code == 0
    everything = tmp_path / "all"
    assert invoke("run", model, images, "-o", everything, "--region", "0,0,32,32").exit_code == 0
    region, masked, whole = _records(by_region), _records(by_mask), _records(everything)
    for a, b, c in zip(region, masked, whole):
        assert a["target_score"] == pytest.approx(b["target_score"], rel=1e-6)
        assert a["target_score"] != pytest.approx(c["target_score"], rel=1e-3)
        assert "region" in a["target_description"] and "mask" in b["target_description"]


@pytest.mark.parametrize("axis", [0, 1])
def test_sequence_records_the_decoded_path(tmp_path, images, axis):
    module = nets.CTCRecogniser(time_major=axis == 1)
    model = _save(tmp_path, "ctc", module, (1, 3, 16, 32), axis)
    labels = tmp_path / "dict.txt"
    labels.write_text("\n".join("abcdef"))  # 7 classes: the blank, then 6 characters (PaddleOCR's layout)
    out = tmp_path / "out"
    result = invoke("run", model, images, "-o", out, "--labels", labels)
    assert result.exit_code == 0, result.output
    for record in _records(out):
        assert record["task"] == "sequence" and record["steps"] == 8
        assert all(1 <= i <= 6 for i in record["decoded"]) and record["text"] == "".join(
            "abcdef"[i - 1] for i in record["decoded"])
    one_step = tmp_path / "step"
    assert invoke("run", model, images, "-o", one_step, "--timestep", 3).exit_code == 0
    assert all(r["target"] == 3 and "timestep_class" in r for r in _records(one_step))


def test_sequence_text_from_a_paddleocr_dictionary_with_space_characters(tmp_path, images):
    model = _save(tmp_path, "ctc", nets.CTCRecogniser(), (1, 3, 16, 32))
    labels = tmp_path / "ppocr_keys.txt"
    labels.write_bytes("a\r\n\u3000\r\n \r\nb\r\nc".encode())  # 5 lines: 7 classes with the blank and a space
    out = tmp_path / "out"
    result = invoke("run", model, images, "-o", out, "--labels", labels)
    assert result.exit_code == 0, result.output
    characters = ["", "a", "\u3000", " ", "b", "c", " "]
    for record in _records(out):
        assert record["text"] == "".join(characters[i] for i in record["decoded"])


def test_a_dictionary_that_fits_no_layout_is_warned_about_once(tmp_path, images):
    model = _save(tmp_path, "ctc", nets.CTCRecogniser(), (1, 3, 16, 32))
    labels = tmp_path / "dict.txt"
    labels.write_text("a\nb\nc\n")
    out = tmp_path / "out"
    result = invoke("run", model, images, "-o", out, "--labels", labels)
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if "labels" in line and "no text" in line]
    assert len(warnings) == 1 and "3 labels" in warnings[0] and "7 classes" in warnings[0], result.output
    assert not any("text" in record for record in _records(out))


def test_auto_where_no_gradient_reaches_the_layer_says_which_method_it_uses(tmp_path, images):
    model = tmp_path / "lstm.onnx"
    onnx.save(tf2onnx_loop_recogniser(), str(model))
    out = tmp_path / "out"
    result = invoke("run", model, images, "-o", out)
    assert result.exit_code == 0, result.output
    notices = [line for line in result.output.splitlines() if "method auto uses" in line]
    assert len(notices) == 1 and "ablationcam" in notices[0] and "Loop node 'lstm_loop'" in notices[0], result.output
    assert {r["method"] for r in _records(out)} == {"ablationcam"}
    exported = invoke("export", model, "-o", tmp_path / "lstm.cam.onnx")
    assert exported.exit_code == 0, exported.output
    assert "method eigencam" in exported.output and "ignores the target" in exported.output
    assert_one_line_error(invoke("run", model, images, "-o", tmp_path / "named", "--method", "gradcam"),
                          "no gradient rule for Loop node 'lstm_loop'")


def _run_with_dictionary(tmp_path, images, text: str):
    """A 7-class CTC recogniser whose metadata holds ``text`` as paddle2onnx writes PaddleOCR's dictionaries,
    run without --labels: the model, the run's result and its output folder."""
    path = _save(tmp_path, "ctc", nets.CTCRecogniser(), (1, 3, 16, 32))
    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, {"character": text})
    onnx.save(model, str(path))
    out = tmp_path / "out"
    result = invoke("run", path, images, "-o", out)
    assert result.exit_code == 0, result.output
    return path, result, out


def test_sequence_text_from_the_models_own_dictionary_unless_labels_are_given(tmp_path, images):
    model, result, out = _run_with_dictionary(tmp_path, images, "a\nb\n\u3000\nd\ne")
    notices = [line for line in result.output.splitlines() if "model's own dictionary" in line]
    assert len(notices) == 1 and "5 characters for 7 classes" in notices[0], result.output
    characters = ["", "a", "b", "\u3000", "d", "e", " "]  # PaddleOCR's layout: the blank, the dictionary, a space
    records = _records(out)
    assert all(r["text"] == "".join(characters[i] for i in r["decoded"]) for r in records)
    assert any(r["decoded"] for r in records)
    labels = tmp_path / "dict.txt"
    labels.write_text("\n".join("uvwxyz"))
    given = tmp_path / "given"
    result = invoke("run", model, images, "-o", given, "--labels", labels)
    assert result.exit_code == 0 and "model's own dictionary" not in result.output, result.output
    assert all(r["text"] == "".join("uvwxyz"[i - 1] for i in r["decoded"]) for r in _records(given))


def test_a_models_dictionary_that_fits_no_layout_is_warned_about_and_gives_no_text(tmp_path, images):
    _, result, out = _run_with_dictionary(tmp_path, images, "a\nb\nc")
    warnings = [line for line in result.output.splitlines() if "no text" in line]
    assert len(warnings) == 1, result.output
    assert "the 3 lines of the model's own dictionary (metadata 'character')" in warnings[0]
    assert "7 classes" in warnings[0] and "--labels FILE" in warnings[0]
    assert not any("text" in record for record in _records(out))


def test_layers_says_why_a_tensor_is_not_eligible(tmp_path):
    model = _save(tmp_path, "db", nets.DBLikeDetector(), (1, 3, 32, 32))
    result = invoke("layers", model)
    assert result.exit_code == 0, result.output
    assert "task:    dense" in result.output
    chosen = [line for line in result.output.splitlines() if line.startswith("*")]
    assert len(chosen) == 1 and "Concat" in chosen[0]
    assert "no: one channel" in result.output  # the head's last ConvTranspose: the map itself


@pytest.mark.parametrize("args, fragments", [
    (["--region", "0,0,99,10"], ["region", "not inside the 32x32 input"]),
    (["--region", "a,b"], ["--region 'a,b' is not a comma-separated list of numbers"]),
    (["--target", "1"], ["task dense takes no target index"]),
    (["--timestep", "2"], ["--timestep is for sequence models"]),
    (["--reference", "nothing.npy"], ["reference 'nothing.npy' not found"]),
    (["--task", "sequence"], ["task sequence needs (N, T, C)"]),
])
def test_bad_task_options(tmp_path, images, args, fragments):
    model = _save(tmp_path, "db", nets.DBLikeDetector(), (1, 3, 32, 32))
    out = tmp_path / "out"
    assert_one_line_error(invoke("run", model, images, "-o", out, *args), *fragments)
    assert not out.exists() or not any(out.iterdir()), "outputs written despite the error"


def test_bad_mask_size_and_timestep(tmp_path, images):
    model = _save(tmp_path, "db", nets.DBLikeDetector(), (1, 3, 32, 32))
    cv2.imwrite(str(tmp_path / "small.png"), np.full((8, 8), 255, np.uint8))
    assert_one_line_error(invoke("run", model, images, "-o", tmp_path / "o1", "--mask", tmp_path / "small.png"),
                          "mask is 8x8 but the model input is 32x32")
    ctc = _save(tmp_path, "ctc", nets.CTCRecogniser(), (1, 3, 16, 32))
    assert_one_line_error(invoke("run", ctc, images, "-o", tmp_path / "o2", "--timestep", 8),
                          "target 8 is out of range", "8 time steps")


def test_embedding_reference_image_and_vector(tmp_path, images):
    model = _save(tmp_path, "emb", nets.Embedder(), (1, 3, 12, 12))
    first = sorted(images.iterdir())[0]
    out = tmp_path / "out"
    result = invoke("run", model, images, "-o", out, "--reference", first, "--preset", "unit")
    assert result.exit_code == 0, result.output
    similarity = {r["image"].split("/")[-1]: r["similarity"] for r in _records(out)}
    assert similarity[first.name] == pytest.approx(1.0, abs=1e-5)  # an image is its own best match
    assert similarity["im1.png"] < 1.0
    np.save(tmp_path / "wrong.npy", np.ones(5, np.float32))
    assert_one_line_error(invoke("run", model, images, "-o", tmp_path / "o2", "--reference", tmp_path / "wrong.npy"),
                          "the reference has 5 values but the model's embeddings have 6")
