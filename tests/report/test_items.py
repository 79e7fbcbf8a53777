"""Records become the page's items: grouped per image, with each task's fields and the truth."""


from onnxcam.io.annotations import Annotations
from onnxcam.report import read_records
from onnxcam.report.items import build_items
from tests.report.records import detection_folder


def test_detection_records_group_per_image_with_a_strip_of_boxes(tmp_path):
    out = detection_folder(tmp_path)
    street, empty = build_items(read_records(out), out)
    assert street["name"] == "street.png" and street["image"] == "../images/street.png"
    assert [v["overlay"] for v in street["views"]] == ["street.overlay.png"]
    assert [b["overlay"] for b in street["boxes"]] == [f"street.box{i}.overlay.png" for i in range(3)]
    assert street["boxes"][1]["title"] == "#1 person 0.55" and street["boxes"][0]["box"] == [4, 5, 30, 40]
    assert street["labels"] == ["car", "person"] and street["confidence"] == 0.91 and street["score"] == 9.1
    assert empty["boxes"] == [] and empty["labels"] == [] and empty["prediction"] == [("boxes", 0)]
    assert [v["overlay"] for v in empty["views"]] == ["empty.overlay.png"]


def test_methods_of_one_image_become_views_side_by_side(tmp_path):
    base = {"status": "ok", "image": "a/cat.png", "task": "classification", "target": 1, "target_label": "cat",
            "target_description": "top-1", "layer": "L", "topk": [{"class": 1, "label": "cat", "probability": 0.8}]}
    records = [{**base, "method": m, "overlay": f"cat.{m}.overlay.png", "target_score": s}
               for m, s in (("gradcam", 3.0), ("scorecam", 0.7))]
    (item,) = build_items(records, tmp_path)
    assert [(v["title"], v["overlay"], v["score"]) for v in item["views"]] == [
        ("gradcam", "cat.gradcam.overlay.png", 3.0), ("scorecam", "cat.scorecam.overlay.png", 0.7)]
    assert item["methods"] == ["gradcam", "scorecam"] and item["confidence"] == 0.8


def test_disagreements_need_a_true_label_that_differs(tmp_path):
    records = [{"status": "ok", "image": f"x/{n}.png", "task": "classification", "target": c, "overlay": "o.png",
                "topk": [{"class": c, "label": label, "probability": 0.9}]}
               for n, c, label in (("a", 0, "dog"), ("b", 1, "cat"), ("c", 1, "cat"))]
    truth = Annotations({"a.png": "dog", "x/b.png": "dog", "c.png": "1"})  # by name, by path, by class index
    items = build_items(records, tmp_path, truth)
    assert [(i["truth"], i["disagrees"]) for i in items] == [("dog", False), ("dog", True), ("1", False)]
    assert not any(i["disagrees"] for i in build_items(records, tmp_path))


def test_task_fields_sequence_text_dense_map_and_failures(tmp_path):
    records = [
        {"status": "ok", "image": "t.png", "task": "sequence", "target": -1, "overlay": "t.overlay.png",
         "decoded": [3, 4], "text": "hi"},
        {"status": "ok", "image": "d.png", "task": "dense", "target": -1, "overlay": "d.overlay.png",
         "output_map": "d.output.png", "output_max": 0.9, "output_mean": 0.1},
        {"status": "failed", "image": "bad.png", "error": "cannot decode"},
    ]
    text, dense, failed = build_items(records, tmp_path)
    assert text["text"] == "hi" and text["prediction"] == [("text", "hi")]
    assert dense["output_map"] == "d.output.png" and dense["confidence"] == 0.9
    assert failed["status"] == "failed" and failed["error"] == "cannot decode" and failed["views"] == []


def test_paths_are_relative_and_quoted(tmp_path):
    (item,) = build_items([{"status": "ok", "image": str(tmp_path / "in" / "a b#.png"), "task": "regression",
                            "overlay": "a b#.overlay.png", "outputs": [1.5]}], tmp_path / "out")
    assert item["image"] == "../in/a%20b%23.png" and item["views"][0]["overlay"] == "a%20b%23.overlay.png"
