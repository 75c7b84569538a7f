"""The package's structure: imports flow one way (config <- data, models, kernels <- engine <-
cli, bench), form no cycle, and every module imports on its own."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Where each package lives in the repository (kernels/, bench/ and configs/ install inside s2d_fast).
PACKAGES = {"s2d_fast": REPO / "s2d_fast", "s2d_fast.kernels": REPO / "kernels", "s2d_fast.bench": REPO / "bench",
            "s2d_fast.configs": REPO / "configs"}

# Each layer may import the layers listed for it (and itself), nothing above.
MAY_IMPORT = {
    "base": set(),  # s2d_fast, errors, config, configs
    "checkpoint": {"base"},
    "kernels": set(),
    "data": {"base", "cli_support"},  # its `prepare` commands
    "models": {"base", "checkpoint", "kernels"},
    "engine": {"base", "checkpoint", "kernels", "data", "models"},
    "cli_support": {"base", "checkpoint"},
    "bench": {"base", "checkpoint", "kernels", "data", "models", "engine", "cli_support"},
    "cli": {"base", "checkpoint", "kernels", "data", "models", "engine", "cli_support", "bench"},
}


def layer(module: str) -> str:
    if module in ("s2d_fast", "s2d_fast.errors") or module.startswith(("s2d_fast.config.", "s2d_fast.configs")) \
            or module == "s2d_fast.config":
        return "base"
    if module in ("s2d_fast.cli", "s2d_fast.__main__"):
        return "cli"
    return module.split(".")[1]


def package_modules() -> dict[str, Path]:
    modules = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            if package == "s2d_fast" and parts and f"s2d_fast.{parts[0]}" in PACKAGES:
                continue
            modules[".".join([package, *parts])] = path
    return modules


def _targets(module: str, path: Path, node: ast.AST, modules) -> list[str]:
    """The package modules an import statement imports: `from pkg import name` imports the
    module `pkg.name` if there is one (the package itself only for the other names)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        base = base.rpartition(".")[0]
    target = (f"{base}.{node.module}" if node.module else base) if node.level else node.module
    return [f"{target}.{alias.name}" if f"{target}.{alias.name}" in modules else target for alias in node.names]


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports, at the top or inside functions."""
    modules = package_modules()
    graph = {}
    for module, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _targets(module, path, node, modules):
                    while target not in modules and "." in target:
                        target = target.rpartition(".")[0]
                    if target in modules and target != module:
                        deps.add(target)
        graph[module] = deps
    return graph


def test_the_graph_sees_every_module_and_its_imports():
    graph = import_graph()
    assert {"s2d_fast.cli", "s2d_fast.kernels.temporal_shift", "s2d_fast.bench.proof", "s2d_fast.data.loader"} <= set(graph)
    assert "s2d_fast.data.dataset" in graph["s2d_fast.data.loader"]
    assert "s2d_fast.checkpoint" in graph["s2d_fast.models.weights"]  # from s2d_fast.checkpoint import ...


def test_no_import_cycle():
    graph = import_graph()
    state: dict[str, str] = {}
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for dep in sorted(graph[module]):
            if state.get(dep) == "open":
                cycles.append(path[path.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, path + [dep])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_imports_flow_one_way():
    upward = [f"{module} ({layer(module)}) imports {dep} ({layer(dep)})"
              for module, deps in import_graph().items() for dep in sorted(deps)
              if layer(dep) != layer(module) and layer(dep) not in MAY_IMPORT[layer(module)]]
    assert not upward, "\n".join(upward)


# Run in one fresh interpreter: third-party libraries are imported once, then each package
# module is imported by a forked child that has none of s2d_fast loaded.
_ISOLATED = r"""
import importlib, json, os, sys, traceback
import av, click, fvcore.common.config, numpy, PIL.Image, sklearn.metrics, torch, torchvision, tqdm, yaml
import torch.utils.tensorboard
results = {}
for name in sys.argv[1:]:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            importlib.import_module(name)
            message = ""
        except BaseException:
            message = traceback.format_exc()
        os.write(write, message.encode())
        os._exit(0)
    os.close(write)
    chunks = []
    while chunk := os.read(read, 65536):
        chunks.append(chunk)
    os.close(read)
    os.waitpid(pid, 0)
    results[name] = b"".join(chunks).decode()
print(json.dumps(results))
"""


@pytest.mark.skipif(sys.platform == "win32", reason="forks a child per module")
def test_every_module_imports_on_its_own():
    modules = sorted(m for m in package_modules() if m != "s2d_fast.__main__")  # __main__ runs the CLI
    done = subprocess.run([sys.executable, "-c", _ISOLATED, *modules], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    failures = {name: error for name, error in json.loads(done.stdout.splitlines()[-1]).items() if error}
    assert not failures, "\n\n".join(f"{name}:\n{error}" for name, error in failures.items())


def test_torch_paths_work_without_triton():
    """Triton exists for Linux only: the kernels' torch paths import and run without it, and
    asking for the Triton path says what is missing."""
    code = r"""
import sys
sys.modules["triton"] = None  # as on a machine without Triton
import torch
from s2d_fast.kernels import gather_frames, temporal_shift, temporal_shift_reference
x = torch.randn(4, 8, 3, 3)
assert torch.equal(temporal_shift(x, 2), temporal_shift_reference(x, 2))
frames = torch.randint(0, 256, (1, 4, 3, 5, 5), dtype=torch.uint8)
assert gather_frames(frames, torch.tensor([[0, 3]])).shape == (1, 2, 3, 5, 5)
try:
    temporal_shift(x, 2, backend="triton")
except RuntimeError as err:
    print(err)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "backend='triton' needs Triton, which is not installed" in done.stdout


def test_one_backbone_table_and_the_configs_choices_are_its_names():
    from s2d_fast.config import CHOICES
    from s2d_fast.models import BACKBONES

    assert sorted(CHOICES["SNET.ARCH"]) == sorted(CHOICES["DNET.ARCH"]) == sorted(BACKBONES)
