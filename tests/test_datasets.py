from __future__ import annotations

from importlib import resources

import numpy as np
import pytest

import c2lst


def test_demo_is_a_real_small_section():
    sdata = c2lst.datasets.demo()
    table = sdata.tables["table"]
    assert (table.n_obs, table.n_vars) == (187, 2000)
    assert list(sdata.images) == ["C2_image"] and list(sdata.shapes) == ["C2_spots"]
    x = table.X.toarray()
    assert np.array_equal(x, np.round(x)) and x.min() >= 0 and np.median(x.sum(1)) > 1000
    assert table.uns["c2lst"]["spatial"]["mpp"] == pytest.approx(1.5, rel=0.02)
    image = sdata.images["C2_image"]
    assert image.dtype == np.uint8 and max(image.shape[1:]) < 4096
    c2lst.pp.extract_patches(sdata)
    patches = table.obsm["c2lst_patch"]
    assert patches.shape == (187, 3, 64, 64) and not table.obs["c2lst_patch_padded"].any()
    assert patches.mean() < 230  # tissue, not white background


def test_demo_files_ship_inside_the_package():
    demo = resources.files("c2lst.datasets") / "data" / "demo"
    names = {p.name for p in demo.iterdir()}
    assert {"C2.tsv.gz", "C2_selection.tsv", "C2_HE.jpg", "README.md"} <= names
    assert sum((demo / n).stat().st_size for n in names if n != "README.md") < 5_000_000
    assert "Andersson" in (demo / "README.md").read_text()


@pytest.mark.data
def test_her2st_from_root_and_env(shared_data, monkeypatch, tmp_path):
    sdata = c2lst.datasets.her2st("C3", root=shared_data / "her2st")
    assert sdata.tables["table"].n_obs == 180 and list(sdata.images) == ["C3_image"]
    monkeypatch.setenv("C2LST_DATA_DIR", str(shared_data / "her2st"))
    assert c2lst.datasets.her2st("C6").tables["table"].n_obs == 178
    monkeypatch.setenv("C2LST_DATA_DIR", str(tmp_path))
    with pytest.raises(ValueError, match="Zenodo 3957257|Zenodo record 3957257"):
        c2lst.datasets.her2st("C2")


def test_her2st_missing_data_says_where(tmp_path, monkeypatch):
    monkeypatch.delenv("C2LST_DATA_DIR", raising=False)
    (tmp_path / "C2").mkdir()
    with pytest.raises(ValueError, match="C2.tsv.gz.*almaan/her2st"):
        c2lst.datasets.her2st("C2", root=tmp_path)
