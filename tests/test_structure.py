"""The package's shape: layers import one way, no cycle, the command line uses public names, light imports."""
from __future__ import annotations

import ast
import inspect
import re
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
    mask = c2lst.pp.split_spots(adata, fraction=0.5, seed=3)
    assert mask.dtype == bool and np.array_equal(adata.obs["c2lst_train"].to_numpy(), mask)
    assert mask[lib == "a"].sum() == 5 and mask[lib == "b"].sum() == 3
    with pytest.raises(ValueError, match="already exists"):
        c2lst.pp.split_spots(adata, fraction=0.5, seed=3)
    again = c2lst.pp.split_spots(adata, fraction=0.5, seed=3, overwrite=True)
    assert np.array_equal(again, mask)
    assert not np.array_equal(c2lst.pp.split_spots(adata, fraction=0.5, seed=4, key_added="other"), mask)
    with pytest.raises(ValueError, match="fraction"):
        c2lst.pp.split_spots(adata, fraction=0.0, key_added="bad")
    # sections from `library_key`; a column that is not there is refused, the default absent is one section
    adata.obs["half"] = np.repeat(["x", "y"], 8)
    by_half = c2lst.pp.split_spots(adata, fraction=0.5, library_key="half", key_added="by_half")
    assert by_half[:8].sum() == 4 and by_half[8:].sum() == 4
    with pytest.raises(ValueError, match="library_key"):
        c2lst.pp.split_spots(adata, fraction=0.5, library_key="slide", key_added="bad")
    one = AnnData(np.zeros((10, 2), np.float32))
    assert c2lst.pp.split_spots(one, fraction=0.5).sum() == 5
    # fraction by position: deprecated, still works; copy=True returns (copy, mask) and leaves the input alone
    with pytest.warns(FutureWarning, match="pass `fraction` by keyword"):
        positional = c2lst.pp.split_spots(adata, 0.5, seed=3, key_added="positional")
    assert np.array_equal(positional, mask)
    out, copied = c2lst.pp.split_spots(adata, fraction=0.5, seed=3, key_added="copied", copy=True)
    assert np.array_equal(copied, mask) and "copied" in out.obs and "copied" not in adata.obs


def test_renamed_kwargs_helper():
    from c2lst._deprecation import renamed_kwargs

    @renamed_kwargs(old="new")
    def f(x, *, new=1):
        return x, new

    assert f(0, new=2) == (0, 2)
    with pytest.warns(FutureWarning, match="`old` is now `new`; pass `new=`"):
        assert f(0, old=3) == (0, 3)
    with pytest.raises(ValueError, match="pass `new` only"):
        f(0, old=3, new=3)
    assert f.__name__ == "f" and "new" in str(inspect.signature(f))


def test_recipe_old_field_names():
    from dataclasses import replace

    from c2lst.core.recipe import RECIPE, RecipeConfig, spatial_mixup

    with pytest.warns(FutureWarning, match="`panel_size` is now `n_top_genes`"):
        assert RecipeConfig(panel_size=7).n_top_genes == 7
    with pytest.warns(FutureWarning, match="`n_neighbors` is now `n_neighs`"):
        assert RecipeConfig(n_neighbors=3).n_neighs == 3
    assert replace(RECIPE, n_top_genes=5).n_top_genes == 5 and RECIPE.n_top_genes == 50
    expr, xy = np.eye(6, dtype=np.float32), np.c_[np.arange(6.0), np.zeros(6)]
    new = spatial_mixup(expr, xy, n_per_profile=1, n_neighs=2, seed=0)
    with pytest.warns(FutureWarning, match="`n_neighbors` is now `n_neighs`"):
        old = spatial_mixup(expr, xy, n_per_profile=1, n_neighbors=2, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(new, old, strict=True))


def _pp_tl_functions():
    """``(qualified name, function)`` of every public function of ``c2lst.pp`` and ``c2lst.tl``."""
    for mod in (c2lst.pp, c2lst.tl):
        for name in mod.__all__:
            func = getattr(mod, name)
            if inspect.isfunction(func):
                yield f"{mod.__name__}.{name}", func


def test_shared_parameter_docs_fill_every_function():
    from c2lst._docs import PARAMS

    for name, func in _pp_tl_functions():
        doc = inspect.getdoc(func)
        assert not re.search(r"^\{\w+\}$", doc, re.M), f"{name}: unfilled placeholder"
        params = set(inspect.signature(func).parameters)
        for key in params & {"table_key", "copy", "seed", "library_key", "patch_key", "train_mask"}:
            assert f"\n{key}\n" in doc, f"{name} does not document {key}"
        if {"copy", "key_added"} <= params:
            assert PARAMS["copy"].split("\n", 1)[1].strip()[:40] in doc, f"{name}: copy text not shared"


def test_writers_follow_one_signature_convention():
    for name, func in _pp_tl_functions():
        params = list(inspect.signature(func).parameters.values())
        positional = [p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]
        assert len(positional) <= 2, f"{name}: only the data object and the model are positional"
        names = {p.name for p in params}
        if "key_added" in names:  # a writer
            assert {"copy", "overwrite"} <= names, f"{name} writes but lacks copy/overwrite"
        assert not names & {"n_top", "panel_size", "n_neighbors"}, f"{name}: old spelling"
