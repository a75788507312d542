"""Execute the tutorials at tiny settings (``C2LST_TUTORIAL_TINY=1``) and check they are stored without outputs."""
from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = ROOT / "tutorials"
SHARED = ROOT / ".." / "shared" / "data"
NOTEBOOKS = sorted(TUTORIALS.glob("*.ipynb"))


def test_three_tutorials_stored_without_outputs():
    nbformat = pytest.importorskip("nbformat")
    assert [p.name for p in NOTEBOOKS] == ["01_quickstart.ipynb", "02_bring_your_own_data.ipynb",
                                           "03_central_model.ipynb"]
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, f"{path.name}: strip outputs"
        assert "C2LST_TUTORIAL_TINY" in nb.cells[1].source


def test_stored_tutorials_are_what_the_generator_writes(tmp_path):
    pytest.importorskip("nbformat")
    import runpy

    runpy.run_path(str(TUTORIALS / "make_notebooks.py"))["main"](tmp_path)
    for path in NOTEBOOKS:
        assert (tmp_path / path.name).read_text() == path.read_text(), (
            f"{path.name} differs from tutorials/make_notebooks.py: edit the generator and run it")


def _needs(path: Path) -> None:
    if path.name.startswith("03") and not (SHARED / "histology").is_dir():
        pytest.skip(f"histology tiles absent: {SHARED / 'histology'}")


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_tutorial_runs_at_tiny_settings(path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    _needs(path)
    monkeypatch.setenv("C2LST_TUTORIAL_TINY", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                                     resources={"metadata": {"path": str(TUTORIALS)}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
