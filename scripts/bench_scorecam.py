"""Score-CAM on ResNet-18, all 512 channels: onnxcam against pytorch-grad-cam's ``ScoreCAM``.

Both explain the same network — tests/nets.py's full-size ResNet-18, random weights (seed 0),
exported to ONNX for onnxcam, its state dict loaded into the same torch module for
pytorch-grad-cam — at the same layer (the last block's output, ``layer4.1.relu2``), for the same
class (the top-1 logit) of the same seeded 224×224 input, on the CPU with the same thread count.
The calls are interleaved, round by round. Printed: each library's time and time per masked
forward pass (onnxcam runs one per channel whose map is not constant, plus one for all constant
ones; pytorch-grad-cam one per channel), each framework's plain forward per image at the same
batch size (what a masked pass costs at least), and how far the maps agree.

The two define the channel weights differently: onnxcam as the authors' code does, the target's
softmax probability over the classes on each masked input; pytorch-grad-cam (1.5.x) as a
softmax over the channels of the target's logit on each masked input. The maps are therefore
compared twice: as each library computes them, and with onnxcam's weighting applied to the
logits of pytorch-grad-cam's own masked passes (recorded as it runs), which isolates the masks
(pytorch-grad-cam upsamples with aligned corners, onnxcam with half-pixel centres) and the two
frameworks' arithmetic.

pytorch-grad-cam runs in a separate venv that the script creates at ``--peer-venv`` (default
/tmp/onnxcam-peer-venv) with pip: ``grad-cam``, ``onnx`` (tests/nets.py imports it) and
``--peer-torch`` (default ``torch==2.14.1 torchvision==0.29.1``: pytorch-grad-cam imports
torchvision, and PyPI's torchvision does not import beside a CPU-only torch 2.13.0 build). When
the venv cannot be built or imported, the comparison is skipped with a message and onnxcam is
timed alone.

    python scripts/bench_scorecam.py [--rounds 3] [--threads N] [--passes-batch 32] [--peer-venv PATH]
                                     [--peer-torch "torch==2.14.1 torchvision==0.29.1"] [--no-peer]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LAYER = "/layer4/layer4.1/relu2/Relu_output_0"
MODULE = "layer4.1.relu2"  # the torch module whose output LAYER is
PEER_PACKAGES = ["grad-cam", "onnx"]
DEFAULT_PEER_TORCH = "torch==2.14.1 torchvision==0.29.1"

# Runs in the peer venv: answers one JSON line per command read from stdin.
PEER = r"""
import json, sys, time
import numpy as np, torch
from pytorch_grad_cam import ScoreCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from tests import nets

weights, image_file, module_name, category, threads, batch = sys.argv[1:7]
torch.set_num_threads(int(threads))
model, _ = nets.resnet18()
model.load_state_dict(torch.load(weights))
model.eval()
image = torch.from_numpy(np.load(image_file))


class RecordingTarget(ClassifierOutputTarget):
    # pytorch-grad-cam calls the target once per masked image's logits: keep them for the comparison
    def __init__(self, category):
        super().__init__(category)
        self.logits = []

    def __call__(self, output):
        if output.dim() == 1:
            self.logits.append(output.detach().numpy().copy())
        return super().__call__(output)


cam = ScoreCAM(model=model, target_layers=[model.get_submodule(module_name)])
cam.batch_size = int(batch)
for line in sys.stdin:
    command = line.split()
    if command[0] == "run":
        target = RecordingTarget(int(category))
        start = time.perf_counter()
        grayscale = cam(input_tensor=image, targets=[target])
        seconds = time.perf_counter() - start
        np.save(command[1] + "/peer_map.npy", grayscale)
        np.save(command[1] + "/peer_logits.npy", np.stack(target.logits))
        np.save(command[1] + "/peer_activations.npy", cam.activations_and_grads.activations[0].cpu().numpy())
        print(json.dumps({"seconds": seconds}), flush=True)
    elif command[0] == "forward":
        images = image.repeat(int(batch), 1, 1, 1)
        times = []
        with torch.no_grad():
            for _ in range(3):
                start = time.perf_counter()
                model(images)
                times.append(time.perf_counter() - start)
        print(json.dumps({"seconds": min(times) / int(batch)}), flush=True)
"""


def peer_python(venv: Path, torch_spec: str) -> tuple[Path | None, str]:
    """The peer venv's Python, creating the venv when missing; (None, why) when it cannot be had."""
    python = venv / "bin" / "python"
    check = [str(python), "-c", "import torch, torchvision, pytorch_grad_cam, onnx"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python, "found"
    print(f"# building the pytorch-grad-cam venv at {venv} (pip install {' '.join(PEER_PACKAGES)} {torch_spec}) ...",
          flush=True)
    steps = [[sys.executable, "-m", "venv", str(venv)],
             [str(python), "-m", "pip", "install", "-q", *PEER_PACKAGES, *torch_spec.split()], check]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True)
        if done.returncode != 0:
            lines = (done.stderr or done.stdout).strip().splitlines()
            errors = [line for line in lines if line.startswith("ERROR")] or lines[-1:] or [str(done.returncode)]
            return None, f"'{' '.join(step[:4])} ...' failed: {errors[0]}"
    return python, "built"


class Peer:
    """pytorch-grad-cam's ScoreCAM in its venv, one command at a time."""

    def __init__(self, python: Path, work: Path, category: int, threads: int, batch: int):
        self.work = work
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"}
        self.process = subprocess.Popen(
            [str(python), "-c", PEER, str(work / "resnet18.pt"), str(work / "image.npy"), MODULE, str(category),
             str(threads), str(batch)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)

    def ask(self, command: str) -> float:
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the pytorch-grad-cam process ended (exit code {self.process.wait()})")
        return json.loads(line)["seconds"]

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


def make_network(work: Path) -> None:
    import onnx
    import torch

    from tests import nets

    module, _ = nets.resnet18()
    onnx.save(nets.export_onnx(module, torch.randn(1, 3, 224, 224)), str(work / "resnet18.onnx"))
    torch.save(module.state_dict(), work / "resnet18.pt")
    np.save(work / "image.npy", np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32))


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def onnxcam_weighting(logits: np.ndarray, activations: np.ndarray, category: int, size: tuple[int, int]) -> np.ndarray:
    """onnxcam's Score-CAM map from (C, classes) masked-input logits and (1, C, h, w) activations."""
    from onnxcam.methods.multipass import finish_maps, softmax

    weights = softmax(logits.astype(np.float64))[:, category]
    return finish_maps(np.einsum("c,chw->hw", weights, activations[0].astype(np.float64))[None], *size)[0]


def masked_passes(activations: np.ndarray) -> int:
    """The forward passes onnxcam's Score-CAM runs for one image: one per non-constant channel map,
    one for all the constant ones."""
    flat = activations[0].reshape(activations.shape[1], -1)
    varying = int((flat.max(axis=1) > flat.min(axis=1)).sum())
    return varying + (varying < flat.shape[0])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--passes-batch", type=int, default=32, help="masked images per call, both libraries")
    parser.add_argument("--peer-venv", type=Path, default=Path(tempfile.gettempdir()) / "onnxcam-peer-venv")
    parser.add_argument("--peer-torch", default=DEFAULT_PEER_TORCH, help="the torch and torchvision pins of the venv")
    parser.add_argument("--no-peer", action="store_true", help="time onnxcam alone")
    args = parser.parse_args()

    from onnxcam import Explainer

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        make_network(work)
        image = np.load(work / "image.npy")
        explainer = Explainer(work / "resnet18.onnx", layer=LAYER, method="scorecam", provider="cpu",
                              threads=args.threads, passes_batch=args.passes_batch)
        first = explainer.explain(image)  # warm-up; its target is the top-1 class
        category = int(first.target[0])
        activations = first.outputs["activations"]
        passes = masked_passes(activations)

        peer, why = (None, "--no-peer") if args.no_peer else peer_python(args.peer_venv, args.peer_torch)
        if peer is None:
            print(f"# pytorch-grad-cam skipped: {why}")
        else:
            peer = Peer(peer, work, category, args.threads, args.passes_batch)
            peer.ask(f"run {work}")  # warm-up

        ours, theirs, cams = [], [], []
        for _ in range(args.rounds):
            start = time.perf_counter()
            cams.append(explainer.explain(image, target=category).cam[0])
            ours.append(time.perf_counter() - start)
            if peer is not None:
                theirs.append(peer.ask(f"run {work}"))
        batch = np.repeat(image, args.passes_batch, axis=0)
        forward = min(_timed(lambda: explainer.forward_scores(batch)) for _ in range(3)) / args.passes_batch
        their_forward = peer.ask("forward") if peer is not None else None

        print(f"# ResNet-18 224x224, layer {MODULE} ({activations.shape[1]} channels, {passes} distinct masked "
              f"passes in onnxcam), class {category}, {args.threads} threads, {args.passes_batch} masked images per "
              f"call, {args.rounds} interleaved rounds, {os.cpu_count()} cores, load average "
              f"{os.getloadavg()[0]:.1f} at the end")
        print("| library | Score-CAM (s, median) | best (s) | passes | ms per masked pass | plain forward (ms/image, "
              f"batch {args.passes_batch}) |")
        print("|---|---|---|---|---|---|")
        _row("onnxcam (ONNX Runtime)", ours, passes, forward)
        if peer is not None:
            _row("pytorch-grad-cam (torch)", theirs, activations.shape[1], their_forward)
            print(f"\nonnxcam is {statistics.median(theirs) / statistics.median(ours):.2f}x faster (medians)")
            _agreement(work, cams[-1], category, image.shape[2:])
            peer.close()
    return 0


def _timed(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def _row(name: str, seconds: list[float], passes: int, forward: float) -> None:
    median = statistics.median(seconds)
    print(f"| {name} | {median:.2f} | {min(seconds):.2f} | {passes} | {1000 * median / passes:.2f} | "
          f"{1000 * forward:.2f} |")


def _agreement(work: Path, ours: np.ndarray, category: int, size) -> None:
    theirs = np.load(work / "peer_map.npy")[0]
    rebuilt = onnxcam_weighting(np.load(work / "peer_logits.npy"), np.load(work / "peer_activations.npy"), category,
                                tuple(size))
    print("\n| maps compared | correlation | max abs difference |")
    print("|---|---|---|")
    print(f"| onnxcam vs pytorch-grad-cam, each its own weighting | {correlation(ours, theirs):.4f} | "
          f"{np.abs(ours - theirs).max():.3f} |")
    print(f"| onnxcam vs onnxcam's weighting of pytorch-grad-cam's masked passes | {correlation(ours, rebuilt):.4f} | "
          f"{np.abs(ours - rebuilt).max():.3f} |")


if __name__ == "__main__":
    sys.exit(main())
