"""report, compare and eval on the demo model and the zoo classifier: files, JSON, messages, exit codes."""

import json
import sys

import cv2
import numpy as np
import pytest

from tests.conftest import ROOT
from tests.report.records import detection_folder
from tests.targets import task_nets as nets
from tests.test_cli import assert_one_line_error, invoke
from tests.test_cli_tasks import _save

sys.path.insert(0, str(ROOT / "scripts"))
import fetch_zoo  # noqa: E402
import zoo_report  # noqa: E402


def test_run_report_writes_the_page_with_the_run(demo_model, demo_images, tmp_path):
    plain, reported = tmp_path / "plain", tmp_path / "reported"
    assert invoke("run", demo_model, demo_images[0], "-o", plain).exit_code == 0
    assert not (plain / "index.html").exists()
    result = invoke("run", demo_model, *demo_images[:2], "-o", reported, "--report")
    assert result.exit_code == 0, result.output
    page = (reported / "index.html").read_text()
    assert "circle_1.overlay.png" in page and "../../" not in page.split("report-data")[0]
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")


def test_a_report_without_overlays_says_it_shows_no_maps(demo_model, demo_images, tmp_path):
    out = tmp_path / "out"
    result = invoke("run", demo_model, *demo_images[:2], "-o", out, "--no-overlay", "--report")
    assert result.exit_code == 0 and "without the maps" in result.output, result.output
    page = (out / "index.html").read_text()
    assert "overlay.png" not in page and demo_images[0].name in page
    result = invoke("report", out, "--overwrite")
    assert result.exit_code == 0 and "name no overlays" in result.output, result.output
    assert "name no overlays" not in invoke("report", detection_folder(tmp_path), "--overwrite").output


def test_report_command_on_an_existing_folder(tmp_path):
    out = detection_folder(tmp_path)
    result = invoke("report", out)
    assert result.exit_code == 0 and "4 record(s)" in result.output, result.output
    assert "street.box2.overlay.png" in (out / "index.html").read_text()
    assert_one_line_error(invoke("report", out), "index.html", "--overwrite")
    assert invoke("report", out, "--overwrite", "--title", "mine").exit_code == 0
    assert "<title>mine</title>" in (out / "index.html").read_text()


def test_report_command_refuses_a_folder_without_results(tmp_path):
    assert_one_line_error(invoke("report", tmp_path), "results.jsonl")
    (tmp_path / "results.jsonl").write_text("{not json\n")
    assert_one_line_error(invoke("report", tmp_path), "line 1", "not JSON")


def test_compare_writes_each_methods_maps_and_one_page(demo_model, demo_images, tmp_path):
    out = tmp_path / "cmp"
    result = invoke("compare", demo_model, *demo_images[:3], "--methods", "gradcam,layercam", "-o", out)
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted((r["method"], r["overlay"]) for r in records)[:2] == [
        ("gradcam", "circle_1.gradcam.overlay.png"), ("gradcam", "cross_1.gradcam.overlay.png")]
    assert len(records) == 6 and all((out / r["overlay"]).is_file() and (out / r["heatmap"]).is_file() for r in records)
    page = (out / "index.html").read_text()
    assert "circle_1.layercam.overlay.png" in page and page.count('"name":"circle_1.png"') == 1  # one grid per image


def test_compare_takes_auto_as_run_does(demo_model, demo_images, tmp_path):
    out = tmp_path / "cmp"
    result = invoke("compare", demo_model, demo_images[0], "--methods", "auto,layercam", "-o", out)
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(r["method"] for r in records) == ["gradcam", "layercam"]  # auto is Grad-CAM on a classifier
    assert (out / records[0]["overlay"]).is_file() and (out / records[1]["overlay"]).is_file()


@pytest.mark.parametrize("methods, fragment", [("gradcam,nope", "unknown method 'nope'"),
                                               ("gradcam,gradcam", "twice"), (",", "empty")])
def test_compare_refuses_bad_methods_and_writes_nothing(demo_model, demo_images, tmp_path, methods, fragment):
    out = tmp_path / "cmp"
    assert_one_line_error(invoke("compare", demo_model, demo_images[0], "--methods", methods, "-o", out), fragment)
    assert not out.exists() or not any(out.iterdir())


def test_eval_json_table_and_truth(demo_model, demo_images, tmp_path):
    truth = tmp_path / "truth.csv"
    truth.write_text("".join(f"{p.name},{p.stem.split('_')[0]}\n" for p in demo_images))
    boxes = tmp_path / "boxes.csv"
    sizes = {p.name: cv2.imread(str(p)).shape for p in demo_images}
    boxes.write_text("image,x0,y0,x1,y1\n" + "".join(f"{name},0,0,{w},{h}\n" for name, (h, w, _) in sizes.items()))
    result = invoke("-q", "eval", demo_model, *demo_images, "--methods", "gradcam,xgradcam", "--labels-file", truth,
                    "--boxes", boxes, "--curve-steps", "5", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.output.strip().splitlines()[-1])
    assert document["targets"] == "true labels" and document["images"] == len(demo_images)
    methods = {m["method"]: m for m in document["methods"]}
    assert list(methods) == ["gradcam", "xgradcam", "random map"]
    assert methods["gradcam"]["pointing_game"] == 1.0  # the boxes cover the whole image
    assert len(methods["gradcam"]["deletion_curve"]) == 6 and methods["gradcam"]["sanity_spearman"] is None
    masks = tmp_path / "masks"
    masks.mkdir()
    cv2.imwrite(str(masks / demo_images[0].with_suffix(".png").name), np.zeros((8, 8), np.uint8))  # no object
    cv2.imwrite(str(masks / demo_images[1].with_suffix(".png").name), np.full((8, 8), 255, np.uint8))  # all object
    masked = invoke("-q", "eval", demo_model, *demo_images[:2], "--masks", masks, "--curve-steps", "3", "--json")
    gradcam = json.loads(masked.output.strip().splitlines()[-1])["methods"][0]
    assert gradcam["pointing_game"] == 1.0 and gradcam["energy_pointing_game"] == 1.0  # only the second image counts
    table = invoke("-q", "eval", demo_model, demo_images[0], "--curve-steps", "3")
    assert table.exit_code == 0 and "deletion AUC" in table.output and "random map" in table.output


def test_eval_errors_are_one_line(demo_model, demo_images, tmp_path):
    truth = tmp_path / "truth.csv"
    truth.write_text("other.png,circle\n")
    assert_one_line_error(invoke("eval", demo_model, demo_images[0], "--labels-file", truth), "no line for")
    truth.write_text(f"{demo_images[0].name},giraffe\n")
    assert_one_line_error(invoke("eval", demo_model, demo_images[0], "--labels-file", truth), "giraffe")
    boxes = tmp_path / "boxes.csv"
    boxes.write_text(f"{demo_images[0].name},5,5,1,1\n")
    assert_one_line_error(invoke("eval", demo_model, demo_images[0], "--boxes", boxes), "empty")
    boxes.write_text(f"{demo_images[0].name},5,5\n")
    assert_one_line_error(invoke("eval", demo_model, demo_images[0], "--boxes", boxes), "fields")
    assert_one_line_error(invoke("eval", demo_model, demo_images[0], "--masks", tmp_path / "none"), "masks folder")


def test_eval_refuses_a_model_that_is_not_a_classifier(tmp_path):
    model = _save(tmp_path, "db", nets.DBLikeDetector(), (1, 3, 32, 32))
    image = tmp_path / "im.png"
    cv2.imwrite(str(image), np.full((32, 32, 3), 128, np.uint8))
    assert_one_line_error(invoke("eval", model, image, "--preset", "unit"), "needs a classifier", "dense")


def test_report_compare_and_eval_on_the_zoo_classifier(tmp_path):
    model = fetch_zoo.cached_path("orientation")
    if model is None:
        pytest.skip("zoo model orientation is not fetched; run: python scripts/fetch_zoo.py orientation")
    face = cv2.resize(zoo_report.face_image(), (224, 224))
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "face.png"), face)
    cv2.imwrite(str(images / "face_rotated.png"), cv2.rotate(face, cv2.ROTATE_90_CLOCKWISE))
    assert invoke("-q", "run", model, images, "-o", tmp_path / "run", "--report").exit_code == 0
    assert "face_rotated.overlay.png" in (tmp_path / "run" / "index.html").read_text()
    result = invoke("-q", "compare", model, images, "--methods", "gradcam,layercam", "-o", tmp_path / "cmp")
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "cmp").glob("*.overlay.png"))) == 4
    result = invoke("-q", "eval", model, images, "--curve-steps", "5", "--json")
    assert result.exit_code == 0, result.output
    gradcam, random = json.loads(result.output.strip().splitlines()[-1])["methods"]
    assert gradcam["deletion_auc"] < random["deletion_auc"]  # measured 0.264 against 0.513 at 20 steps
