"""The report in a real headless chromium: it loads without errors or network requests, shows
only images that exist, its filters change what is shown, and 10,000 images load in seconds."""

import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from onnxcam.cli import cli
from onnxcam.report import read_records, write_report
from tests.report.chromium import file_url
from tests.report.records import classification_folder, detection_folder

SHOWN_IMAGES = "Array.from(document.querySelectorAll('#cards img')).map(i => i.src)"
# loads every (lazy) image of the page and says whether all decoded
ALL_IMAGES_DECODE = ("Promise.all(Array.from(document.images).map(i => { i.loading = 'eager'; return i.complete ? 0 : "
                     "new Promise(done => { i.onload = i.onerror = done; }); }))"
                     ".then(() => Array.from(document.images).every(i => i.naturalWidth > 0))")


def select(page, element_id: str, value: str) -> None:
    page.evaluate(f"(() => {{ const e = document.getElementById('{element_id}'); e.value = {value!r}; "
                  "e.dispatchEvent(new Event(e.tagName === 'INPUT' ? 'input' : 'change')); })()")


def shown(page) -> list[str]:
    return page.evaluate("window.onnxcamReport.shown")


def local_path(url: str) -> Path:
    return Path(unquote(urlparse(url).path))


def assert_clean(page, folder: Path) -> None:
    """No console errors; every request a local file that exists; every image on the page exists."""
    assert page.evaluate("window.onnxcamReport.ready") is True
    assert page.errors() == []
    requests = page.requests()
    assert requests and all(url.startswith("file://") for url in requests), requests
    assert page.failed_requests() == []
    images = page.evaluate(SHOWN_IMAGES)
    missing = [url for url in images if not local_path(url).is_file()]
    assert images and missing == [], missing


def test_demo_report_loads_filters_and_renders(browser, demo_model, demo_images, tmp_path):
    out = tmp_path / "out"
    truth = tmp_path / "truth.csv"
    truth.write_text("image,label\n" + "".join(f"{p.name},{p.stem.split('_')[0]}\n" for p in demo_images)
                     .replace("cross_1.png,cross", "cross_1.png,circle"))
    result = CliRunner().invoke(cli, ["run", str(demo_model), str(demo_images[0].parent), "-o", str(out), "--report",
                                      "--labels-file", str(truth)])
    assert result.exit_code == 0, result.output
    page = browser.page(file_url(out / "index.html"))
    assert page.evaluate(ALL_IMAGES_DECODE)
    assert_clean(page, out)
    names = [p.name for p in demo_images]
    assert shown(page) == names
    select(page, "cls", "triangle")
    assert shown(page) == [n for n in names if n.startswith("triangle")]
    select(page, "cls", "")
    select(page, "view", "disagreements")
    assert shown(page) == ["cross_1.png"]  # the one whose true label is wrong on purpose
    select(page, "view", "all")
    select(page, "min-conf", "0.99")
    confident = shown(page)
    assert 0 < len(confident) < len(names)
    select(page, "min-conf", "")
    select(page, "sort", "score-asc")
    scores = page.evaluate("Array.from(document.querySelectorAll('.card')).map(c => c.dataset.name)")
    records = {Path(r["image"]).name: r["target_score"] for r in read_records(out)}
    assert scores == sorted(records, key=records.get)
    screenshot = cv2.imdecode(np.frombuffer(page.screenshot(), np.uint8), cv2.IMREAD_COLOR)
    assert screenshot.shape[0] > 500 and screenshot.std() > 20  # pictures and text, not a blank page
    assert page.errors() == []


def test_detection_report_shows_boxes_per_image(browser, tmp_path):
    out = detection_folder(tmp_path)
    write_report(out / "index.html", read_records(out), out)
    page = browser.page(file_url(out / "index.html"))
    assert_clean(page, out)
    strip = page.evaluate("Array.from(document.querySelectorAll('.card')).map(c => c.querySelectorAll('.strip img')"
                          ".length)")
    assert shown(page) == ["street.png", "empty.png"] and strip == [3, 0]
    select(page, "cls", "person")
    assert shown(page) == ["street.png"]
    select(page, "cls", "")
    select(page, "min-conf", "0.95")
    assert shown(page) == []


TEN_THOUSAND_SECONDS = 5.0


def test_ten_thousand_images_load_in_seconds(browser, tmp_path):
    records = classification_folder(tmp_path, 10_000)
    write_report(tmp_path / "index.html", records, tmp_path)
    started = time.perf_counter()
    page = browser.page(file_url(tmp_path / "index.html"))
    seconds = time.perf_counter() - started
    assert_clean(page, tmp_path)
    assert page.evaluate("document.querySelectorAll('.card').length") == 48  # one page, not 10,000 cards
    assert page.evaluate("document.getElementById('count').textContent").strip().startswith("10000 of 10000")
    page.evaluate("document.getElementById('next').click()")
    assert shown(page)[0] == Path(records[48]["image"]).name
    select(page, "sort", "conf-desc")
    best = max(r["topk"][0]["probability"] for r in records)
    assert page.evaluate("document.querySelector('.card tr td + td').textContent").endswith(f"{best:.3g}")
    print(f"10,000-image report: loaded in {seconds:.2f} s, {(tmp_path / 'index.html').stat().st_size / 1e6:.1f} MB")
    assert seconds < TEN_THOUSAND_SECONDS, f"{seconds:.2f} s"


@pytest.mark.parametrize("command", ["report", "eval"])
def test_eval_section_renders_curves(browser, demo_model, demo_images, tmp_path, command):
    out = tmp_path / "eval"
    args = ["eval", str(demo_model), *map(str, demo_images[:2]), "--methods", "gradcam", "-o", str(out)]
    result = CliRunner().invoke(cli, ["-q", *args, "--curve-steps", "4"])
    assert result.exit_code == 0, result.output
    if command == "report":
        result = CliRunner().invoke(cli, ["report", str(out), "--overwrite"])
        assert result.exit_code == 0, result.output
    page = browser.page(file_url(out / "index.html"))
    assert page.errors() == [] and all(url.startswith("file://") for url in page.requests())
    assert page.evaluate("document.querySelectorAll('#metrics svg polyline').length") == 4  # gradcam + random, twice
    rows = page.evaluate("Array.from(document.querySelectorAll('#metrics tbody tr')).map(r => r.cells[0].textContent)")
    assert rows == ["gradcam", "random map"]
