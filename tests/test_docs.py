from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
DOCUMENTED = ["io", "pp", "tl", "pl", "datasets", "metrics"]


@pytest.mark.parametrize("module", DOCUMENTED)
def test_every_public_name_is_in_the_api_page(module):
    api = (DOCS / "api.md").read_text()
    mod = importlib.import_module(f"c2lst.{module}")
    missing = [name for name in mod.__all__ if f"{module}.{name}\n" not in api]
    assert not missing, f"add {missing} to docs/api.md"


def test_toctree_includes_design_and_tutorials():
    index = (DOCS / "index.md").read_text()
    assert "\ndesign\n" in index
    for nb in sorted((ROOT / "tutorials").glob("*.ipynb")):
        assert f"generated/tutorials/{nb.stem}\n" in index


@pytest.mark.slow
def test_sphinx_build_has_no_warnings(tmp_path):
    pytest.importorskip("sphinx", reason="docs dependencies missing: pip install 'c2lst[docs]'")
    pytest.importorskip("myst_nb", reason="docs dependencies missing: pip install 'c2lst[docs]'")
    pytest.importorskip("sphinx_book_theme", reason="docs dependencies missing: pip install 'c2lst[docs]'")
    pytest.importorskip("numpydoc", reason="docs dependencies missing: pip install 'c2lst[docs]'")
    proc = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", "-d",
                           str(tmp_path / "doctrees"), str(DOCS), str(tmp_path / "html")],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert (tmp_path / "html" / "generated" / "c2lst.tl.run.html").exists()
    assert (tmp_path / "html" / "generated" / "tutorials" / "01_quickstart.html").exists()
