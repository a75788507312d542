"""The package's shape: layers import one way, no cycle, the command line uses public names, light imports."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import c2lst

SRC = Path(c2lst.__file__).resolve().parent
# what each part may never import (the brief: io -> pp -> tl -> pl; core and metrics underneath; cli on top)
NEVER = {"core": {"tl", "pp", "pl", "io", "benchmark", "cli", "datasets"},
         "metrics": {"core", "tl", "pp", "pl", "io", "benchmark", "cli", "datasets"},
         "io": {"tl", "pp", "pl", "benchmark", "cli"}, "pp": {"tl", "pl", "benchmark", "cli"},
         "tl": {"pl", "benchmark", "cli"}, "pl": {"benchmark", "cli"}, "benchmark": {"cli"}}


def _part(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imported(path: Path) -> list[str]:
    """Every c2lst module ``path`` imports, function-level imports included."""
    package = list(path.relative_to(SRC.parent).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
                found += [base] if node.module else [f"{base}.{a.name}" for a in node.names]
            elif node.module and node.module.startswith("c2lst"):
                found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("c2lst")]
    return found


def _edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for f in SRC.rglob("*.py*"):
        if f.suffix not in (".py", ".pyi"):
            continue
        for module in _imported(f):
            parts = module.split(".")
            target = parts[1] if len(parts) > 1 else ""
            if target and target != _part(f):
                edges.setdefault(_part(f), set()).add(target)
    return edges


def test_layers_point_one_way_without_cycles():
    edges = _edges()
    upward = sorted(f"{a} -> {b}" for a, bs in NEVER.items() for b in edges.get(a, set()) & bs)
    assert not upward
    assert "tl" in edges["benchmark"]  # the benchmark runs the recipe users run

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n})) for n in edges.get(start, ()))

    assert not [part for part in edges if reaches(part, part, set())]


def test_cli_uses_public_names_only():
    private = [m for m in _imported(SRC / "cli.py")
               if any(p.startswith("_") and not p.startswith("__") for p in m.split(".")[1:])]
    assert not private


def test_import_and_help_load_no_heavy_dependency():
    code = ("import sys, c2lst, c2lst.cli, contextlib, io\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    c2lst.cli.main(['--help']); c2lst.cli.main(['benchmark', '--help'])\n"
            "print(sorted(m for m in ('torch', 'diffusers', 'scanpy', 'matplotlib.pyplot', 'spatialdata', 'anndata') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert c2lst.tl.adapt.__module__ == "c2lst.tl._adapt"  # loaded on first use
    assert c2lst.LocalModel.__name__ == "LocalModel" and c2lst.Predictor.__name__ == "Predictor"


def test_split_spots_writes_obs_and_is_seeded():
    from anndata import AnnData

    lib = np.repeat(["a", "b"], [10, 6])
    adata = AnnData(np.zeros((16, 2), np.float32), obs={"library_id": lib})
    mask = c2lst.pp.split_spots(adata, 0.5, seed=3)
    assert mask.dtype == bool and np.array_equal(adata.obs["c2lst_train"].to_numpy(), mask)
    assert mask[lib == "a"].sum() == 5 and mask[lib == "b"].sum() == 3
    with pytest.raises(ValueError, match="already exists"):
        c2lst.pp.split_spots(adata, 0.5, seed=3)
    again = c2lst.pp.split_spots(adata, 0.5, seed=3, overwrite=True)
    assert np.array_equal(again, mask)
    assert not np.array_equal(c2lst.pp.split_spots(adata, 0.5, seed=4, key_added="other"), mask)
    with pytest.raises(ValueError, match="fraction"):
        c2lst.pp.split_spots(adata, 0.0, key_added="bad")
