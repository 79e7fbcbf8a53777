"""The package's shape: no import cycles, a light ``import onnxcam`` and CLI, an autodiff engine
that needs neither ONNX Runtime nor OpenCV."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "onnxcam"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top_level_imports(path: Path, modules: set[str]) -> set[str]:
    """onnxcam modules imported at module level (function-level imports are lazy by design)."""
    found = set()
    for node in ast.parse(path.read_text()).body:
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def test_no_import_cycles():
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {name: _top_level_imports(path, set(files)) - {name} for name, path in files.items()}
    # a package's __init__ importing its own submodules is not a cycle with them
    graph = {m: {d for d in deps if not (m.startswith(d + ".") and files[d].name == "__init__.py")}
             for m, deps in graph.items()}
    state: dict[str, int] = {}

    def visit(module, path):
        state[module] = 1
        for dep in graph[module]:
            if state.get(dep) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*path, module, dep]))
            if dep not in state:
                visit(dep, [*path, module])
        state[module] = 2

    for module in graph:
        if module not in state:
            visit(module, [])


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    return set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split())


def test_import_and_version_load_no_runtime():
    for statement in ("import onnxcam", "from onnxcam.cli import cli"):
        loaded = _loaded_after(statement)
        assert not {"onnxruntime", "cv2", "onnx", "numpy"} & loaded, statement
    version = subprocess.run([sys.executable, "-m", "onnxcam", "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and "onnxcam, version" in version.stdout


def test_autodiff_needs_neither_onnxruntime_nor_opencv():
    loaded = _loaded_after("import onnxcam.autodiff")
    assert not {"onnxruntime", "cv2"} & loaded
