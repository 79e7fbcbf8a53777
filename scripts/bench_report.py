"""How fast the HTML report opens in a real browser, and a screenshot of one for the README.

Writes a report of ``--images`` hand-made classification records (the image files are hard
links to four small PNGs), opens it ``--repeat`` times in a fresh tab of a headless chromium
(the system's ``chromium``, driven over its DevTools pipe) and prints the time from navigation
to the load event (the page's script, which parses the embedded data and renders the first page,
runs before it) and the page's size. With ``--screenshot OUTDIR PNG`` it instead saves a
screenshot of OUTDIR/index.html.

    python scripts/bench_report.py [--images 10000] [--repeat 5]
    python scripts/bench_report.py --screenshot out/compare docs/report.png
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from onnxcam.report import write_report  # noqa: E402
from tests.report.chromium import Browser, file_url, find_chromium  # noqa: E402
from tests.report.records import classification_folder  # noqa: E402


def load_times(count: int, repeat: int, browser: Browser) -> tuple[list[float], float]:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        write_report(root / "index.html", classification_folder(root, count), root)
        size = (root / "index.html").stat().st_size / 1e6
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            page = browser.page(file_url(root / "index.html"))
            times.append(time.perf_counter() - started)
            assert page.evaluate("window.onnxcamReport.ready") and not page.errors()
        return times, size


def screenshot(out_dir: Path, png: Path, browser: Browser) -> None:
    page = browser.page(file_url(out_dir / "index.html"))
    time.sleep(0.5)  # lazy images of the first screen
    png.write_bytes(page.screenshot())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--screenshot", nargs=2, metavar=("OUTDIR", "PNG"))
    args = parser.parse_args()
    executable = find_chromium()
    if executable is None:
        sys.exit("no chromium found: apt-get install -y chromium")
    browser = Browser(executable)
    try:
        if args.screenshot:
            screenshot(Path(args.screenshot[0]), Path(args.screenshot[1]), browser)
            return
        times, size = load_times(args.images, args.repeat, browser)
        print(f"{args.images} images, {size:.1f} MB page: load {statistics.median(times):.2f} s median "
              f"(min {min(times):.2f}, max {max(times):.2f}, {args.repeat} loads)")
    finally:
        browser.close()


if __name__ == "__main__":
    main()
