"""OpenVINO three ways on the CPU: ONNX Runtime's OpenVINO execution provider against the ``openvino`` runtime and ORT's CPU EP.

Issue #13 part 4 asks for OpenVINO either through ONNX Runtime's OpenVINO execution provider or
the ``openvino`` runtime reading the explain model directly (onnxcam's ``--provider openvino``),
measured both ways. This script builds virtual environments of its own (this checkout installed
into each, ``pip install -e REPO[openvino]``), since the EP packages replace or extend the
``onnxruntime`` module:

* ``--venv`` (default /tmp/onnxcam-ovep-venv): onnxcam's own ONNX Runtime (onnxruntime-gpu on
  Linux x86-64) plus the plugin EP ``onnxruntime-ep-openvino`` (ORT >= 1.23 loads it with
  ``onnxruntime.register_execution_provider_library`` and a session picks one of its
  ``onnxruntime.get_ep_devices()`` with ``SessionOptions.add_provider_for_devices``). This
  process also times the ``openvino`` runtime as onnxcam's backend compiles it (f32).
* ``--legacy-venv`` (default /tmp/onnxcam-ortov-venv): ``onnxruntime-openvino``, the ONNX Runtime
  build with the same EP built in (``providers=["OpenVINOExecutionProvider"]``), in place of
  onnxcam's onnxruntime-gpu. ``--no-legacy`` leaves it out.

The models are exported here, with the interpreter that runs the script (PyTorch builds the
networks of tests/nets.py, as in scripts/bench_explain.py): the demo and full-size ResNet-50 and
MobileNetV2, each with Grad-CAM explain models at its last and a middle layer, in the
required-inputs form (``target``/``target_weights`` fed), which every backend reads alike.

In each environment one process times, per model and batch, every backend's plain model and its
explain models (``cam`` asked for) in one interleaved loop of ``--repeat`` rounds (an untimed 50 ms
pause before each call, so that the threads the last session left spinning do not slow the next): the medians,
``explain/plain`` (each backend against its own plain inference), ``vs ORT CPU`` (the explain
call against ORT CPU's in the same process) and the largest difference between the backend's
maps and ORT CPU's on the same batch. The EP runs with ``precision=FP32`` (OpenVINO's CPU plugin
otherwise computes in bf16 on CPUs that have it); the maps it gives with its default precision
are compared too. ``nodes`` says whether the EP took the whole graph (a session with
``session.disable_cpu_ep_fallback`` builds) or ORT's CPU EP runs part of it.

A venv that cannot be built, or no EP that loads, prints one line saying why and exits 0.

    python scripts/bench_openvino_ep.py [--repeat 7] [--batches 1,8] [--models demo,resnet50,mobilenet_v2]
                                        [--venv PATH] [--legacy-venv PATH] [--no-legacy] [--ep-version 1.8.1]
                                        [--legacy-version 1.24.1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EP = "OpenVINOExecutionProvider"
PRECISE = {"device_type": "CPU", "precision": "FP32"}


# --- the worker: runs inside one of the venvs ---------------------------------------------------


def _plugin_devices(ort):
    """The plugin's CPU ``OrtEpDevice``s after registering it, or a reason why there are none."""
    try:
        import onnxruntime_ep_openvino as plugin
    except ImportError as exc:
        return None, f"onnxruntime-ep-openvino does not import: {exc}"
    if not hasattr(ort, "register_execution_provider_library"):
        return None, f"onnxruntime {ort.__version__} cannot load plugin EPs (it needs >= 1.23)"
    try:
        ort.register_execution_provider_library("openvino_ep", plugin.get_library_path())
    except Exception as exc:  # noqa: BLE001  (ORT raises its own types)
        return None, f"register_execution_provider_library failed: {str(exc).strip().splitlines()[0]}"
    devices = ort.get_ep_devices()
    mine = [d for d in devices if d.ep_name == plugin.get_ep_name()]
    cpu = [d for d in mine if d.ep_metadata.get("ov_device") == "CPU"]
    if not cpu:
        found = ", ".join(f"{d.ep_name} on {d.device.type.name} ({d.device.vendor}, vendor id {d.device.vendor_id:#06x})"
                          for d in devices)
        return None, (f"the plugin registered but offers no CPU device ({len(mine)} OpenVINO devices; ORT's devices: "
                      f"{found}); it only offers Intel hardware (vendor id 0x8086)")
    return cpu, None


class _OrtBackend:
    def __init__(self, ort, name, make_options, providers=None):
        self.ort, self.name, self._make_options, self._providers = ort, name, make_options, providers

    def session(self, path, options=None, strict=False):
        so = self.ort.SessionOptions()
        so.log_severity_level = 3
        if strict:
            so.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
        self._make_options(so, options)
        if self._providers is None:
            return self.ort.InferenceSession(path, so)
        providers = self._providers(options)
        if strict:  # ORT refuses the CPU EP named alongside the option
            providers = [p for p in providers if p != "CPUExecutionProvider"]
        return self.ort.InferenceSession(path, so, providers=providers)

    def whole_graph(self, path):
        try:
            self.session(path, strict=True)
            return "all"
        except Exception as exc:  # noqa: BLE001  (ORT refuses it when nodes would run on its CPU EP)
            text = str(exc).strip()
            return "partial (some nodes on ORT's CPU EP)" if "fallback to CPU EP" in text else \
                "unknown: " + (text.splitlines()[0][:160] if text else type(exc).__name__)


def _backends(ort, asked):
    """name -> backend object, and the lines saying why one asked for cannot run."""
    made, notes = {}, []
    for name in asked:
        if name == "cpu":
            made[name] = _OrtBackend(ort, name, lambda so, o: None, lambda o: ["CPUExecutionProvider"])
        elif name == "ovep-plugin":
            devices, why = _plugin_devices(ort)
            if why:
                notes.append(f"OpenVINO plugin EP (onnxruntime-ep-openvino): not measured: {why}")
                continue

            def add(so, options, devices=devices):
                so.add_provider_for_devices(devices, {"precision": "FP32", **(options or {})})

            made[name] = _OrtBackend(ort, name, add)
        elif name == "ovep":
            if EP not in ort.get_available_providers():
                notes.append(f"onnxruntime-openvino's EP: not measured: {EP} is not in this build's providers")
                continue
            made[name] = _OrtBackend(ort, name, lambda so, o: None,
                                     lambda o: [(EP, {**PRECISE, **(o or {})}), "CPUExecutionProvider"])
        elif name == "openvino":
            from onnxcam.backends.openvino import OpenVinoSession, openvino_problem

            why = openvino_problem()
            if why:
                notes.append(f"openvino runtime: not measured: {why}")
                continue

            class _Ov:
                def session(self, path, options=None, strict=False):
                    return OpenVinoSession(Path(path).read_bytes())

                def whole_graph(self, path):
                    return "all"

            made[name] = _Ov()
    return made, notes


def worker(folder: Path, asked: list[str], repeat: int, batches: list[int]) -> int:
    import numpy as np
    import onnxruntime as ort

    from onnxcam.bench import interleaved  # the venv's onnxcam is this checkout

    backends, notes = _backends(ort, asked)
    out = {"ort": ort.__version__, "notes": notes, "rows": [], "default_precision": [], "nodes": {}}
    try:
        import openvino

        out["openvino"] = openvino.get_version().split("-")[0]
    except ImportError:
        pass
    if not (folder / "index.json").exists():  # a probe: which backends load
        (folder / f"result-{os.getpid()}.json").write_text(json.dumps(out))
        print(json.dumps({"result": str(folder / f"result-{os.getpid()}.json")}))
        return 0
    index = json.loads((folder / "index.json").read_text())
    for entry in index:
        paths = {"plain": entry["plain"], **entry["explain"]}
        sessions = {(b, label): backend.session(path) for b, backend in backends.items() for label, path in paths.items()}
        for b, backend in backends.items():
            if b != "cpu":
                out["nodes"][f"{entry['model']} {b}"] = {label: backend.whole_graph(path) for label, path in paths.items()}
        for batch in batches:
            x = np.random.default_rng(0).standard_normal((batch, *entry["shape"])).astype(np.float32)
            feeds = {entry["input"]: x, "target": np.full(batch, -1, np.int64),
                     "target_weights": np.full((batch, *entry["score_shape"]), np.nan, np.float32)}
            plain_feeds = {entry["input"]: x}
            calls = {}
            for (b, label), s in sessions.items():
                if label == "plain":
                    calls[(b, label)] = lambda s=s: s.run(None, plain_feeds)
                else:
                    calls[(b, label)] = lambda s=s: s.run(["cam"], feeds)
            maps = {key: call()[0] for key, call in calls.items() if key[1] != "plain"}
            times = interleaved(calls, repeat)  # 50 ms apart: a session's spinning threads would slow the next
            for b in backends:
                for label in entry["explain"]:
                    ratio = statistics.median(t / p for t, p in zip(times[(b, label)], times[(b, "plain")]))
                    vs_cpu = statistics.median(t / c for t, c in zip(times[(b, label)], times[("cpu", label)]))
                    out["rows"].append(dict(model=entry["model"], layer=label, tensor=entry["tensors"][label], batch=batch,
                                            backend=b, plain=1000 * statistics.median(times[(b, "plain")]),
                                            explain=1000 * statistics.median(times[(b, label)]), ratio=ratio,
                                            vs_cpu=vs_cpu,
                                            diff=float(np.abs(maps[(b, label)] - maps[("cpu", label)]).max())))
            if batch == batches[0]:
                for b, backend in backends.items():
                    if b.startswith("ovep"):
                        for label, path in entry["explain"].items():
                            cam = _default_precision_session(b, path, ort).run(["cam"], feeds)[0]
                            out["default_precision"].append(dict(model=entry["model"], layer=label, backend=b,
                                                                 diff=float(np.abs(cam - maps[("cpu", label)]).max())))
        del sessions
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    out["load"] = load
    path = folder / f"result-{os.getpid()}.json"
    path.write_text(json.dumps(out))
    print(json.dumps({"result": str(path)}))
    return 0


def _default_precision_session(name, path, ort):
    """The EP as it comes: no ``precision`` option (OpenVINO's CPU default, bf16 where the CPU has it)."""
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if name == "ovep-plugin":  # registered by _plugin_devices already
        devices = [d for d in ort.get_ep_devices() if d.ep_name == EP and d.ep_metadata.get("ov_device") == "CPU"]
        so.add_provider_for_devices(devices, {})
        return ort.InferenceSession(path, so)
    return ort.InferenceSession(path, so, providers=[(EP, {"device_type": "CPU"}), "CPUExecutionProvider"])


# --- the orchestrator: builds the venvs and the models, runs the workers, prints the table -------


def _pip(venv: Path, *args: str) -> None:
    done = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *args],
                          capture_output=True, text=True)
    if done.returncode:
        lines = [line for line in (done.stderr or done.stdout).strip().splitlines() if not line.startswith("WARNING")]
        raise RuntimeError(f"pip install {' '.join(args)} failed: {lines[-1] if lines else done.returncode}")


def _has(venv: Path, code: str) -> bool:
    python = venv / "bin" / "python"
    return python.exists() and subprocess.run([str(python), "-c", code], capture_output=True).returncode == 0


def make_plugin_venv(venv: Path, version: str) -> None:
    check = f"import onnxcam, openvino, onnxruntime, onnxruntime_ep_openvino; from importlib.metadata import version; " \
            f"assert version('onnxruntime-ep-openvino') == '{version}'"
    if _has(venv, check):
        return
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
    # onnxcam as users get it (its onnxruntime-gpu or onnxruntime), the plugin on top: it needs ORT >= 1.23
    _pip(venv, "-e", f"{ROOT}[openvino]", f"onnxruntime-ep-openvino=={version}")


def make_legacy_venv(venv: Path, version: str) -> None:
    check = f"from importlib.metadata import version; assert version('onnxruntime-openvino') == '{version}'; " \
            "import onnxcam, onnxruntime as o; assert 'OpenVINOExecutionProvider' in o.get_available_providers()"
    if _has(venv, check):
        return
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
    _pip(venv, "-e", f"{ROOT}[openvino]")
    # onnxruntime-openvino is a whole ONNX Runtime: it replaces onnxcam's (they share the module)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "uninstall", "-q", "-y", "onnxruntime-gpu", "onnxruntime"],
                   capture_output=True)
    _pip(venv, f"onnxruntime-openvino=={version}")


def export_models(keys: list[str], folder: Path) -> list[dict]:
    import onnx

    sys.path.insert(0, str(ROOT / "scripts"))
    sys.path.insert(0, str(ROOT))
    from bench_explain import MODELS, build, last_output_under

    from onnxcam import export

    index = []
    for key in keys:
        model = build(key)
        _, shape, prefix = MODELS[key]
        plain = folder / f"{key}.onnx"
        onnx.save(model, str(plain))
        entry = {"model": key, "plain": str(plain), "shape": list(shape), "input": model.graph.input[0].name,
                 "explain": {}, "tensors": {}}
        for label, layer in (("last", "auto"), ("middle", last_output_under(model, prefix))):
            result = export(model, layer=layer, target_inputs="required")
            path = folder / f"{key}-{label}.cam.onnx"
            result.save(str(path))
            entry["explain"][label], entry["tensors"][label] = str(path), result.plan.layer.tensor
            meta = {p.key: p.value for p in result.model.metadata_props}
            entry["score_shape"] = [int(d) for d in meta["onnxcam.score_shape"].split("x")[1:]]
        index.append(entry)
    (folder / "index.json").write_text(json.dumps(index))
    return index


def run_worker(venv: Path, folder: Path, backends: list[str], repeat: int, batches: str) -> dict:
    done = subprocess.run([str(venv / "bin" / "python"), str(Path(__file__).resolve()), "--worker", str(folder),
                           "--backends", ",".join(backends), "--repeat", str(repeat), "--batches", batches],
                          capture_output=True, text=True, cwd=tempfile.gettempdir())
    if done.returncode:
        tail = (done.stderr or done.stdout).strip().splitlines()
        raise RuntimeError(f"the worker in {venv} failed: {tail[-1] if tail else done.returncode}")
    path = json.loads(done.stdout.strip().splitlines()[-1])["result"]
    return json.loads(Path(path).read_text())


NAMES = {"cpu": "ORT CPU EP", "ovep-plugin": "ORT + onnxruntime-ep-openvino", "ovep": "ORT + OpenVINO EP (onnxruntime-openvino)",
         "openvino": "openvino runtime (onnxcam's backend)"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--models", default="demo,resnet50,mobilenet_v2")
    parser.add_argument("--venv", default="/tmp/onnxcam-ovep-venv")
    parser.add_argument("--legacy-venv", default="/tmp/onnxcam-ortov-venv")
    parser.add_argument("--no-legacy", action="store_true", help="leave onnxruntime-openvino out")
    parser.add_argument("--ep-version", default="1.8.1", help="onnxruntime-ep-openvino's version")
    parser.add_argument("--legacy-version", default="1.24.1", help="onnxruntime-openvino's version")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--backends", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    if args.worker:
        return worker(Path(args.worker), args.backends.split(","), args.repeat, batches)

    plans = []  # (venv, backends) of each environment that could be built
    notes = []
    try:
        make_plugin_venv(Path(args.venv), args.ep_version)
        plans.append((Path(args.venv), ["cpu", "ovep-plugin", "openvino"]))
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        notes.append(f"plugin venv {args.venv}: cannot be built: {exc}")
    if not args.no_legacy:
        try:
            make_legacy_venv(Path(args.legacy_venv), args.legacy_version)
            plans.append((Path(args.legacy_venv), ["cpu", "ovep"]))
        except (RuntimeError, subprocess.CalledProcessError) as exc:
            notes.append(f"onnxruntime-openvino venv {args.legacy_venv}: cannot be built: {exc}")
    if not plans:
        print("bench_openvino_ep: skipped: " + "; ".join(notes))
        return 0

    with tempfile.TemporaryDirectory(prefix="onnxcam-ovep-") as workdir:
        folder = Path(workdir)
        # the EPs first, without models: none that loads means nothing to measure
        probes = []
        for venv, backends in plans:
            try:
                probe = run_worker(venv, folder, [b for b in backends if b.startswith("ovep")] or ["cpu"], 1, "1")
            except RuntimeError as exc:
                notes.append(str(exc))
                continue
            notes += probe["notes"]
            if not probe["notes"]:
                probes.append((venv, backends))
        if not probes:
            print("bench_openvino_ep: skipped: no OpenVINO execution provider loads here: " + "; ".join(notes))
            return 0
        export_models(args.models.split(","), folder)
        results = []
        for venv, backends in plans:
            try:
                results.append((venv, run_worker(venv, folder, backends, args.repeat, args.batches)))
            except RuntimeError as exc:
                notes.append(str(exc))

    print(f"CPU: {platform.processor() or platform.machine()} ({os.cpu_count()} cores), medians of {args.repeat} "
          f"interleaved rounds per process; explain = the explain model's call asking for cam")
    for note in dict.fromkeys(notes):
        print(f"note: {note}")
    for venv, result in results:
        print(f"\n{venv}: onnxruntime {result['ort']}, openvino {result.get('openvino', '-')}, "
              f"load average {result['load']:.2f} at the end")
        for backend in dict.fromkeys(r["backend"] for r in result["rows"]):
            print(f"  {backend} = {NAMES[backend]}")
        print("| model | layer | batch | backend | plain (ms) | explain (ms) | explain/plain | vs ORT CPU explain "
              "| max abs(map − ORT CPU map) |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in result["rows"]:
            print(f"| {r['model']} | {r['layer']} (`{r['tensor']}`) | {r['batch']} | {r['backend']} | {r['plain']:.1f} "
                  f"| {r['explain']:.1f} | {r['ratio']:.2f}× | {r['vs_cpu']:.2f}× | {r['diff']:.1e} |")
        for key, nodes in result["nodes"].items():
            print(f"nodes on OpenVINO, {key}: " + ", ".join(f"{label} {how}" for label, how in nodes.items()))
        for d in result["default_precision"]:
            print(f"{d['backend']} without precision=FP32, {d['model']} {d['layer']}: max abs(map − ORT CPU map) "
                  f"{d['diff']:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
