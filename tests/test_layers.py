"""The floors of docs/architecture.md: every import of a package points to a package it may use."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FOLDERS = {"contract": "tpo/contract", "data": "data", "model": "model", "train": "train", "export": "export",
           "calibration": "calibration", "kernels": "kernels", "runtime": "runtime", "bench": "bench",
           "torch_backend": "torch_backend"}
GROUND = {"errors", "sampling", "engine_cache", "signals"}          # tpo's own modules on the ground floor
ALLOWED = {
    "contract": set(),
    "data": {"contract"},
    "kernels": set(),
    "model": {"contract", "data", "kernels"},
    "calibration": {"contract", "data", "model", "runtime"},     # floor 3: runs the fp32 graphs
    "runtime": {"contract", "kernels"},
    "torch_backend": {"contract", "model", "runtime"},
    "export": {"contract", "data", "model", "calibration", "runtime", "kernels"},
    "train": {"contract", "data", "model"},
    "bench": {"contract", "data", "model", "runtime", "kernels", "export", "torch_backend", "calibration"},
}


def _imports(path: Path, package: str) -> set[str]:
    """The tpo packages (and ground modules) `path` imports, relative imports resolved."""
    tree = ast.parse(path.read_text())
    depth = len(path.relative_to(REPO / FOLDERS[package]).parts) - 1
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:                                   # relative: inside its own package unless it climbs out
                if node.level - 1 > depth:
                    raise AssertionError(f"{path}: relative import leaves its package")
                continue
            names = [node.module or ""]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "tpo" and len(parts) > 1:
                found.add(parts[1])
    return found


def test_every_import_points_down():
    wrong = []
    for package, folder in FOLDERS.items():
        for path in (REPO / folder).rglob("*.py"):
            used = _imports(path, package) - {package} - GROUND
            bad = used - ALLOWED[package]
            if bad:
                wrong.append(f"{path.relative_to(REPO)} imports {sorted(bad)}")
    assert not wrong, "\n".join(wrong)


def test_the_runtime_never_reaches_torch():
    """The runtime imports no torch anywhere, lazily included (an edge box has none)."""
    for path in (REPO / "runtime").rglob("*.py"):
        text = path.read_text()
        assert "import torch" not in text and "from torch" not in text, path
