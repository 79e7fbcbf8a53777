"""onnxcam run's pipeline: order kept, stages overlapped, memory bounded, the first error stops it."""

import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from onnxcam.errors import InputError
from onnxcam.pipeline import explain_images


class FakeModel:
    """An explainer and a writer whose stages sleep (releasing the GIL, as OpenCV and ORT do) and count."""

    task = "classification"

    def __init__(self, decode_s=0.0, explain_s=0.0, render_s=0.0, bad=()):
        self.decode_s, self.explain_s, self.render_s, self.bad = decode_s, explain_s, render_s, set(bad)
        self.alive = self.most_alive = self.explained = 0
        self.lock = threading.Lock()

    def decode(self, path):
        time.sleep(self.decode_s)
        if path.name in self.bad:
            raise InputError(f"{path}: cannot decode")
        with self.lock:
            self.alive += 1
            self.most_alive = max(self.most_alive, self.alive)
        return np.full((2, 2, 3), int(path.stem), np.uint8)

    def prepare(self, images):
        return np.stack(images).astype(np.float32), images

    def explain(self, batch, target=None):
        time.sleep(self.explain_s)
        self.explained += 1
        n = len(batch)
        return SimpleNamespace(finite=np.ones(n, bool), scores=np.zeros(n), all_zero=np.zeros(n, bool),
                               values=[int(row[0, 0, 0]) for row in batch])

    def write(self, staging, stem, path, image, result, i):
        time.sleep(self.render_s)
        assert result.values[i] == int(image[0, 0, 0])  # the image goes with its own explanation
        with self.lock:
            self.alive -= 1
        return {"image": path}


def _run(model, count, batch_size=4, **kwargs):
    paths = [Path(f"{i}.jpg") for i in range(count)]
    names = {p: p.stem for p in paths}
    return paths, explain_images(model, model, paths, names, Path("staging"), {}, batch_size, **kwargs)


def test_records_keep_the_images_order_and_memory_stays_bounded():
    model = FakeModel(decode_s=0.002, render_s=0.003)
    paths, records = _run(model, 100, batch_size=2, skip_bad=False, workers=3, ahead=2)
    assert [r["image"] for r in records] == [str(p) for p in paths]
    assert all(r["status"] == "ok" and set(r["timings_ms"]) == {"preprocess", "explain", "render"} for r in records)
    assert model.most_alive <= (2 * 2 + 2) * 2  # ahead batches decoded, one explained, ahead + 1 rendering


def test_decoding_and_rendering_overlap_the_model_calls():
    model = FakeModel(decode_s=0.01, explain_s=0.02, render_s=0.01)
    started = time.perf_counter()
    _run(model, 32, batch_size=4, skip_bad=False, workers=4)
    serial = 32 * 0.01 + 8 * 0.02 + 32 * 0.01  # 0.80 s one after the other
    assert time.perf_counter() - started < 0.6 * serial


def test_a_bad_image_stops_the_run_before_its_batch_is_explained():
    model = FakeModel(bad={"5.jpg"})
    with pytest.raises(InputError, match="5.jpg: cannot decode"):
        _run(model, 40, batch_size=4, skip_bad=False, workers=2)
    assert model.explained == 1  # batch 0 only: batch 1 holds the bad image


def test_skip_bad_records_the_failure_in_place():
    model = FakeModel(bad={"5.jpg"})
    paths, records = _run(model, 10, batch_size=4, skip_bad=True, workers=2)
    assert [r["image"] for r in records] == [str(p) for p in paths]
    assert [r["status"] for r in records].count("failed") == 1 and records[5]["status"] == "failed"


def test_records_are_emitted_as_batches_finish_not_at_the_end():
    model = FakeModel()
    explained_at_emit = []
    paths, returned = _run(model, 40, batch_size=4, skip_bad=False, workers=2, ahead=2,
                           emit=lambda record: explained_at_emit.append(model.explained))
    assert returned == [] and len(explained_at_emit) == 40
    # image i's batch is i // 4; it is emitted once at most `ahead` later batches have been explained
    assert all(explained <= i // 4 + 1 + 2 for i, explained in enumerate(explained_at_emit))
