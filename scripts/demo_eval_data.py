"""Fresh demo images as files, with the truth.csv and boxes.csv that ``onnxcam eval`` reads.

The images come from the same held-out generator as the pointing-game figures (a seed the
training script does not use); truth.csv holds each image's class name, boxes.csv its object box.

    python scripts/demo_eval_data.py OUTDIR [--images 100]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import shapes_data  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--images", type=int, default=100)
    args = parser.parse_args()
    images, labels, boxes = shapes_data.evaluation_batch(args.images)
    folder = args.out / "images"
    folder.mkdir(parents=True, exist_ok=True)
    truth, box_lines = ["image,label"], ["image,x0,y0,x1,y1"]
    for i, (image, label, box) in enumerate(zip(images, labels, boxes)):
        name = f"shape{i:04d}.png"
        cv2.imwrite(str(folder / name), image)
        truth.append(f"{name},{shapes_data.CLASSES[int(label)]}")
        box_lines.append(f"{name},{','.join(f'{float(v):g}' for v in box)}")
    (args.out / "truth.csv").write_text("\n".join(truth) + "\n")
    (args.out / "boxes.csv").write_text("\n".join(box_lines) + "\n")
    print(f"wrote {args.images} images to {folder}, {args.out / 'truth.csv'}, {args.out / 'boxes.csv'}")


if __name__ == "__main__":
    main()
