"""The stages depend in one direction only: train -> export -> runtime. Checked on the source, by
parsing every import statement (at the top of a module or inside a function alike), so an import
that a test run never reaches is caught too."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# What each stage (a top-level folder, installed as hybrid.<stage>) may not import.
FORBIDDEN = {
    "runtime": (
        "hybrid.train",
        "hybrid.export",
        "hybrid.cli",
        "torch",
        "onnx",
        "onnxscript",
        "safetensors",
        "datasets",
        "triton",
        "matplotlib",
    ),
    "export": ("hybrid.cli",),
    "train": ("hybrid.export", "hybrid.cli"),
}


def imported_modules(path: Path, package: str) -> list[tuple[int, str]]:
    """(line, module) for every import in a file; relative imports resolved against `package`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")  # the module's own name: level 1 is its package
                base = parts[: len(parts) - node.level]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found += [(node.lineno, module)] + [(node.lineno, f"{module}.{a.name}") for a in node.names]
    return found


def _matches(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


@pytest.mark.parametrize("stage", sorted(FORBIDDEN))
def test_a_stage_imports_nothing_above_it(stage):
    files = sorted((ROOT / stage).rglob("*.py"))
    assert files, f"no Python files under {stage}/"
    bad = []
    for path in files:
        package = "hybrid." + ".".join(path.relative_to(ROOT).with_suffix("").parts[1:])
        for line, module in imported_modules(path, package):
            if any(_matches(module, p) for p in FORBIDDEN[stage]):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert bad == []


def test_the_import_parser_sees_imports_inside_functions(tmp_path):
    f = tmp_path / "m.py"
    f.write_text(
        "def f():\n    from hybrid.train.trainer import train\n    import torch.nn\nfrom ..train import model\n"
    )
    mods = [m for _, m in imported_modules(f, "hybrid.runtime.m")]
    assert "hybrid.train.trainer" in mods and "torch.nn" in mods and "hybrid.train.model" in mods
