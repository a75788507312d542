"""scverse interop on fixtures built from the real her2st C2 files: HEST-1k and Space Ranger layouts, and
scanpy / squidpy / c2lst plots of a store read back from disk."""
from __future__ import annotations

import json

import anndata as ad
import matplotlib
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import spatialdata
from PIL import Image

import c2lst

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

WINDOW = 1800  # px of the real C2 image kept around its centre spot (keeps the fixtures small and fast)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _real_c2(her2st_files):
    """Counts, spot table and H&E crop of the spots inside a WINDOW px square of the real C2 section."""
    counts_path, spots_path, image_path = her2st_files("C2")
    counts = pd.read_csv(counts_path, sep="\t", index_col=0)
    spots = pd.read_csv(spots_path, sep="\t")
    spots.index = [f"{x}x{y}" for x, y in zip(spots["x"], spots["y"], strict=True)]
    spots = spots.loc[spots.index.intersection(counts.index)]
    xy = spots[["pixel_x", "pixel_y"]].to_numpy(float)
    centre = xy[np.argmin(np.linalg.norm(xy - np.median(xy, axis=0), axis=1))]
    x0, y0 = (centre - WINDOW / 2).astype(int)
    inside = np.all((xy >= [x0 + 60, y0 + 60]) & (xy < [x0 + WINDOW - 60, y0 + WINDOW - 60]), axis=1)
    spots = spots[inside]
    Image.MAX_IMAGE_PIXELS = None
    with Image.open(image_path) as im:
        crop = np.asarray(im.convert("RGB").crop((x0, y0, x0 + WINDOW, y0 + WINDOW)))
    from scipy.spatial import cKDTree

    d = cKDTree(xy).query(xy, k=2)[0][:, 1]  # the pitch of the whole section: 200 µm
    mpp = 200.0 / float(np.median(d))
    return counts.loc[spots.index], spots, crop, (x0, y0), mpp, (counts_path, spots_path, image_path)


@pytest.fixture
def hest_root(tmp_path, her2st_files):
    """A HEST-1k sample ``C2`` (st/, wsis/, metadata/) made from the real her2st C2 counts, spots and H&E."""
    import tifffile

    counts, spots, crop, (x0, y0), mpp, paths = _real_c2(her2st_files)
    for sub in ("st", "wsis", "metadata"):
        (tmp_path / sub).mkdir()
    scalef = 0.25
    small = np.asarray(Image.fromarray(crop).resize((WINDOW // 4, WINDOW // 4), Image.Resampling.BOX))
    adata = ad.AnnData(
        X=sp.csr_matrix(counts.to_numpy(np.float32)),
        obs=pd.DataFrame({"array_col": spots["x"].to_numpy(), "array_row": spots["y"].to_numpy(),
                          "pxl_col_in_fullres": spots["pixel_x"].to_numpy() - x0,
                          "pxl_row_in_fullres": spots["pixel_y"].to_numpy() - y0}, index=counts.index),
        var=pd.DataFrame(index=counts.columns),
    )
    adata.obsm["spatial"] = adata.obs[["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy()
    adata.uns["spatial"] = {"ST": {"images": {"downscaled_fullres": small},
                                   "scalefactors": {"tissue_downscaled_fullres_scalef": scalef,
                                                    "spot_diameter_fullres": 100 / mpp}}}
    adata.write_h5ad(tmp_path / "st" / "C2.h5ad")
    with tifffile.TiffWriter(tmp_path / "wsis" / "C2.tif") as tif:  # pyramidal generic TIFF, as HEST-1k ships
        tif.write(crop, tile=(256, 256), photometric="rgb", subifds=1, resolutionunit="CENTIMETER",
                  resolution=(1e4 / mpp, 1e4 / mpp))
        tif.write(crop[::2, ::2], tile=(256, 256), photometric="rgb", subfiletype=1)
    (tmp_path / "metadata" / "C2.json").write_text(json.dumps({
        "pixel_size_um_estimated": mpp, "pixel_size_um_embedded": None, "spot_diameter": 100.0,
        "inter_spot_dist": 200.0, "st_technology": "Spatial Transcriptomics", "fullres_px_height": WINDOW,
        "fullres_px_width": WINDOW, "spots_under_tissue": int(adata.n_obs), "organ": "Breast"}))
    return tmp_path, paths, (x0, y0), adata


@pytest.mark.data
def test_read_hest_end_to_end(hest_root):
    root, paths, (x0, y0), adata = hest_root
    sdata = c2lst.io.read_hest(root, "C2")
    table = sdata.tables["table"]
    assert list(sdata.images) == ["C2_image"] and table.n_obs == adata.n_obs >= 20
    np.testing.assert_array_equal(table.X.toarray(), adata.X.toarray())
    assert table.uns["c2lst"]["spatial"]["mpp"] == pytest.approx(adata.uns["spatial"]["ST"]["scalefactors"]
                                                                  ["spot_diameter_fullres"] ** -1 * 100)
    # scanpy's record comes from HEST's downscaled_fullres image (the WSI is not decoded for it)
    rec = table.uns["spatial"]["C2"]
    assert rec["images"]["hires"].shape == (WINDOW // 4, WINDOW // 4, 3)
    assert rec["scalefactors"]["tissue_hires_scalef"] == pytest.approx(0.25)
    c2lst.pp.extract_patches(sdata, patch_um=100, patch_px=32)
    # the same spots cut from the original JPEG by the legacy reader give the same patches
    legacy = c2lst.io.read_legacy_st(*paths)
    c2lst.pp.extract_patches(legacy, patch_um=100, patch_px=32)
    lt = legacy.tables["table"]
    ref = np.asarray(lt.obsm["c2lst_patch"])[lt.obs_names.get_indexer(table.obs_names)]
    got = np.asarray(table.obsm["c2lst_patch"])
    assert got.shape == ref.shape == (table.n_obs, 3, 32, 32)
    # (read from different pyramid levels, so equal up to anti-aliasing: same colours, same structure)
    assert np.abs(got.mean(axis=(2, 3)) - ref.mean(axis=(2, 3))).max() < 4.0
    assert np.corrcoef(got.ravel().astype(float), ref.ravel().astype(float))[0, 1] > 0.9


@pytest.mark.data
def test_read_hest_errors(hest_root):
    root = hest_root[0]
    with pytest.raises(ValueError, match=r"missing \['st/C9.h5ad'.*samples with an h5ad here: \['C2'\]"):
        c2lst.io.read_hest(root, "C9")
    meta = json.loads((root / "metadata" / "C2.json").read_text())
    meta["pixel_size_um_estimated"] = None
    (root / "metadata" / "C2.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="pixel_size_um_estimated.*pass `mpp=`"):
        c2lst.io.read_hest(root, "C2")
    assert c2lst.io.read_hest(root, "C2", mpp=meta["spot_diameter"] / 40).tables["table"].uns["c2lst"]["spatial"][
        "mpp"] == pytest.approx(2.5)


def _space_ranger(folder, her2st_files):
    """A Space Ranger ``outs/`` from the real C2 files: filtered_feature_bc_matrix.h5 and spatial/ (hires, lowres)."""
    import h5py

    counts, spots, crop, (x0, y0), mpp, _ = _real_c2(her2st_files)
    (folder / "spatial").mkdir(parents=True)
    x = sp.csc_matrix(counts.to_numpy(np.int32).T)  # features x barcodes, as 10x stores it
    barcodes = [f"{name}-1" for name in counts.index]
    genes = list(counts.columns)
    with h5py.File(folder / "filtered_feature_bc_matrix.h5", "w") as f:
        m = f.create_group("matrix")
        m["barcodes"] = np.array(barcodes, dtype="S")
        m["data"], m["indices"], m["indptr"] = x.data, x.indices, x.indptr
        m["shape"] = np.array(x.shape, dtype=np.int32)
        feats = m.create_group("features")
        feats["id"] = np.array(genes, dtype="S")
        feats["name"] = np.array(genes, dtype="S")
        feats["feature_type"] = np.array(["Gene Expression"] * len(genes), dtype="S")
        feats["genome"] = np.array(["GRCh38"] * len(genes), dtype="S")
        feats["_all_tag_keys"] = np.array([b"genome"])
    pd.DataFrame({"barcode": barcodes, "in_tissue": 1, "array_row": spots["y"].to_numpy(),
                  "array_col": spots["x"].to_numpy(), "pxl_row_in_fullres": spots["pixel_y"].to_numpy() - y0,
                  "pxl_col_in_fullres": spots["pixel_x"].to_numpy() - x0}).to_csv(
        folder / "spatial" / "tissue_positions.csv", index=False)
    hires, lowres = 0.5, 0.125
    (folder / "spatial" / "scalefactors_json.json").write_text(json.dumps(
        {"tissue_hires_scalef": hires, "tissue_lowres_scalef": lowres, "spot_diameter_fullres": 100 / mpp,
         "fiducial_diameter_fullres": 160 / mpp}))
    for name, f in (("tissue_hires_image.png", hires), ("tissue_lowres_image.png", lowres)):
        side = int(WINDOW * f)
        Image.fromarray(crop).resize((side, side), Image.Resampling.BOX).save(folder / "spatial" / name)
    return counts, mpp


@pytest.mark.data
def test_spatialdata_io_visium_needs_an_explicit_image(tmp_path, her2st_files):
    sdio = pytest.importorskip("spatialdata_io")
    counts, mpp = _space_ranger(tmp_path / "outs", her2st_files)
    raw = sdio.visium(tmp_path / "outs", dataset_id="C2")
    assert len(raw.images) == 2
    with pytest.raises(ValueError, match=r"several images \['C2_hires_image', 'C2_lowres_image'\].*image_key="):
        c2lst.io.from_spatialdata(raw)
    with pytest.raises(ValueError, match="several image elements.*image_key="):
        c2lst.pp.extract_patches(raw)  # the pp/tl resolver names the choice too
    sdata = c2lst.io.from_spatialdata(raw, image_key="C2_hires_image", spot_diameter_um=100, pitch_um=200)
    table = sdata.tables["table"]
    np.testing.assert_array_equal(table.X.toarray(), counts.to_numpy())
    assert table.uns["c2lst"]["spatial"]["mpp"] == pytest.approx(mpp, rel=1e-6)
    c2lst.pp.extract_patches(sdata, patch_um=100, patch_px=32)
    hi = np.asarray(table.obsm["c2lst_patch"], dtype=float)
    low = c2lst.io.from_spatialdata(raw, image_key="C2_lowres_image", spot_diameter_um=100, pitch_um=200)
    c2lst.pp.extract_patches(low, patch_um=100, patch_px=32)
    lo = np.asarray(low.tables["table"].obsm["c2lst_patch"], dtype=float)
    # the same tissue through either image (the lowres one is 4x coarser, so only roughly equal)
    assert np.corrcoef(hi.reshape(len(hi), -1).mean(1), lo.reshape(len(lo), -1).mean(1))[0, 1] > 0.8
    # pp works on the spatialdata-io object itself once the image is chosen (and the µm per spot unit given)
    with pytest.raises(ValueError, match="from_spatialdata"):
        c2lst.pp.extract_patches(raw, image_key="C2_hires_image")
    c2lst.pp.extract_patches(raw, image_key="C2_hires_image", mpp=mpp, patch_um=100, patch_px=32)
    direct = np.asarray(raw.tables["table"].obsm["c2lst_patch"], dtype=float)
    order = raw.tables["table"].obs_names.str.removesuffix("-1").get_indexer(table.obs_names.str.removesuffix("-1"))
    np.testing.assert_allclose(direct[order], hi, atol=1.0)
    # read_visium picks the hires image by itself and gives the same section
    via = c2lst.io.read_visium(tmp_path / "outs", library_id="C2", spot_diameter_um=100, pitch_um=200)
    np.testing.assert_allclose(via.tables["table"].obsm["spatial"], table.obsm["spatial"])


def _predicted_store(tmp_path):
    sd = c2lst.datasets.demo()
    c2lst.pp.extract_patches(sd)
    t = sd.tables["table"]
    mask = np.random.default_rng(0).random(t.n_obs) < 0.5
    c2lst.pp.normalize(sd, train_mask=mask)
    c2lst.tl.predict(sd, train_mask=mask, synthetic=None, seed=0, n_top_genes=32)
    sd.write(tmp_path / "s.zarr")
    back = spatialdata.read_zarr(tmp_path / "s.zarr")
    return back, mask


def test_predict_writes_split_imputed_outside_panel_and_scanpy_record(tmp_path):
    back, mask = _predicted_store(tmp_path)
    tb = back.tables["table"]
    split = tb.obs["c2lst_pred_split"]
    assert isinstance(split.dtype, pd.CategoricalDtype) and list(split.cat.categories) == ["train", "held_out"]
    np.testing.assert_array_equal(split.to_numpy() == "train", mask)
    panel = tb.var["c2lst_pred_panel"].to_numpy(bool)
    pred = np.asarray(tb.layers["c2lst_pred"])
    assert panel.sum() == 32 and np.isfinite(pred).all()  # outside the panel: imputed, never a constant fill
    assert (np.ptp(pred[:, ~panel], axis=0) > 0).mean() > 0.9
    rec = tb.uns["spatial"]["C2"]
    img = rec["images"]["hires"]
    assert img.dtype == np.uint8 and max(img.shape[:2]) <= 2000
    # spot centres land inside the hires image and on the same pixels as the full image's spots
    px = np.asarray(tb.obsm["spatial"]) * rec["scalefactors"]["tissue_hires_scalef"]
    assert (px >= 0).all() and (px[:, 0] < img.shape[1]).all() and (px[:, 1] < img.shape[0]).all()
    full = back.images["C2_image"]
    w0 = (full if not hasattr(full, "keys") else full["scale0"]["image"]).sizes["x"]
    assert rec["scalefactors"]["tissue_hires_scalef"] == pytest.approx(img.shape[1] / w0, rel=1e-6)
    res = c2lst.tl.evaluate(back)  # the recorded split is read back from obs; NaN columns are not scored
    assert len(res) == 32 and res["n_test"].iloc[0] == int((~mask).sum()) and res["pearson"].notna().all()


def test_scanpy_spatial_on_store_read_back(tmp_path):
    import scanpy as sc

    back, _ = _predicted_store(tmp_path)
    tb = back.tables["table"]
    gene = str(tb.var_names[tb.var["c2lst_pred_panel"].to_numpy(bool)][0])
    sc.pl.spatial(tb, color=[gene, "c2lst_pred_split"], layer="c2lst_pred", show=False)
    fig = plt.gcf()
    assert len(fig.axes) >= 2 and fig.axes[0].get_images()  # the H&E is drawn under the spots


def test_squidpy_spatial_scatter_on_store_read_back(tmp_path):
    import squidpy as sq

    back, _ = _predicted_store(tmp_path)
    tb = back.tables["table"]
    gene = str(tb.var_names[tb.var["c2lst_pred_panel"].to_numpy(bool)][0])
    sq.pl.spatial_scatter(tb, color=gene, layer="c2lst_pred")
    assert plt.gcf().axes[0].get_images()


def test_c2lst_spatial_genes_on_store_read_back(tmp_path):
    back, mask = _predicted_store(tmp_path)
    tb = back.tables["table"]
    genes = [str(g) for g in tb.var_names[tb.var["c2lst_pred_panel"].to_numpy(bool)][:2]]
    fig = c2lst.pl.spatial_genes(back, genes, show=False, save=tmp_path / "genes.png")
    assert (tmp_path / "genes.png").stat().st_size > 10_000
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert any(t.startswith(f"{genes[0]} · measured") for t in titles)
    assert any(t.startswith(f"{genes[0]} · predicted") and f"held-out, n = {int((~mask).sum())}" in t for t in titles)
    # measured and predicted maps of a gene share their colour limits
    panels = [ax for ax in fig.axes if ax.get_title()]
    clims = [ax.collections[0].get_clim() for ax in panels[:2]]
    assert clims[0] == clims[1]
    # held-out spots are outlined, training spots are not
    assert any(len(ax.collections) >= 2 for ax in panels)
    # a scale bar: 1 mm on the demo section (2 x 1.6 mm of tissue per panel)
    assert all(any(t.get_text() in {"500 µm", "1 mm"} for t in ax.texts) for ax in panels)


def _square_bins(side: float, n_side: int, region: str) -> tuple[object, object]:
    """Square bins (polygons) and their table, laid out as spatialdata_io.visium_hd writes one bin size."""
    import geopandas as gpd
    from shapely.geometry import box
    from spatialdata.models import ShapesModel, TableModel
    from spatialdata.transformations import Identity

    gx, gy = np.meshgrid(np.arange(n_side), np.arange(n_side))
    x0, y0 = 200 + gx.ravel() * side, 200 + gy.ravel() * side
    polys = gpd.GeoDataFrame(geometry=[box(a, b, a + side, b + side) for a, b in zip(x0, y0, strict=True)])
    shapes = ShapesModel.parse(polys, transformations={"HD": Identity()})
    n = len(x0)
    counts = np.random.default_rng(0).poisson(3.0, size=(n, 5)).astype(np.float32)
    table = ad.AnnData(counts, obs=pd.DataFrame({"region": pd.Categorical([region] * n), "location_id": np.arange(n),
                                                 "array_row": gy.ravel(), "array_col": gx.ravel()},
                                                index=[f"{region}_{i}" for i in range(n)]),
                       var=pd.DataFrame(index=[f"g{i}" for i in range(5)]))
    return shapes, TableModel.parse(table, region=region, region_key="region", instance_key="location_id")


def test_from_spatialdata_square_bins_at_a_chosen_size():
    from spatialdata.models import Image2DModel
    from spatialdata.transformations import Scale

    ramp = (np.arange(300) * 0.8).astype(np.uint8)  # red grows with x, green with y: a position is a colour
    img = np.stack([np.tile(ramp, (300, 1)), np.tile(ramp[:, None], (1, 300)), np.full((300, 300), 128, np.uint8)])
    # (a hires image: 4 full-resolution px per px)
    image = Image2DModel.parse(img, dims=("c", "y", "x"), transformations={"HD": Scale([4.0, 4.0], axes=("y", "x"))})
    s8, t8 = _square_bins(32.0, 6, "HD_square_008um")  # 8 µm bins at 0.25 µm/px
    s16, t16 = _square_bins(64.0, 3, "HD_square_016um")
    hd = spatialdata.SpatialData(images={"HD_hires_image": image}, shapes={"HD_square_008um": s8, "HD_square_016um": s16},
                                 tables={"square_008um": t8, "square_016um": t16})
    with pytest.raises(ValueError, match=r"several tables \['square_008um', 'square_016um'\].*table_key="):
        c2lst.io.from_spatialdata(hd)
    sdata = c2lst.io.from_spatialdata(hd, shapes_key="HD_square_016um", spot_diameter_um=16, pitch_um=16)
    table = sdata.tables["table"]
    assert table.n_obs == 9 and table.uns["c2lst"]["spatial"]["mpp"] == pytest.approx(0.25)
    np.testing.assert_allclose(table.obsm["spatial"][0], [232.0, 232.0])  # the bin centre, full-resolution px
    np.testing.assert_array_equal(table.X.toarray(), t16.X)
    assert table.uns["spatial"]["HD_square_016um"]["scalefactors"]["tissue_hires_scalef"] == pytest.approx(0.25)
    c2lst.pp.extract_patches(sdata, patch_um=16, patch_px=8)
    patch = np.asarray(table.obsm["c2lst_patch"], dtype=float)[4]  # the centre bin, at full-res (296, 296)
    assert patch[0].mean() == pytest.approx(296 / 4 * 0.8, abs=1.5)  # read at hires px 74 through the 4x scale
    assert patch[1].mean() == pytest.approx(296 / 4 * 0.8, abs=1.5)
    assert patch[0, :, -1].mean() - patch[0, :, 0].mean() == pytest.approx(16 * 0.8 * 7 / 8, abs=2.5)  # 16 µm wide
    assert c2lst.io.from_spatialdata(hd, table_key="square_008um", spot_diameter_um=8, pitch_um=8).tables[
        "table"].n_obs == 36


def test_spatialdata_plot_on_store_read_back(tmp_path):
    pytest.importorskip("spatialdata_plot")
    back, _ = _predicted_store(tmp_path)
    tb = back.tables["table"]
    gene = str(tb.var_names[tb.var["c2lst_pred_panel"].to_numpy(bool)][0])
    back.pl.render_images("C2_image").pl.render_shapes("C2_spots", color=gene, table_name="table",
                                                       table_layer="c2lst_pred").pl.show(coordinate_systems="global")
    fig = plt.gcf()
    ax, colorbar = fig.axes[0], fig.axes[-1]
    assert ax.get_images() and len(ax.collections[0].get_facecolors()) == tb.n_obs  # H&E, then one disc per spot
    values = np.asarray(tb[:, gene].layers["c2lst_pred"], dtype=float).ravel()
    np.testing.assert_allclose(sorted(colorbar.get_ylim()), [values.min(), values.max()], rtol=1e-4)  # the layer


@pytest.mark.data
def test_read_hest_from_the_command_line(hest_root, capsys):
    from c2lst.cli import main

    root = hest_root[0]
    assert main(["read", "hest", str(root), "C2", "--out", str(root / "c2.zarr")]) == 2  # never inside an input
    assert "input" in capsys.readouterr().err
    out = root.parent / f"{root.name}_c2.zarr"
    assert main(["read", "hest", str(root), "C2", "--out", str(out)]) == 0
    assert f"{hest_root[3].n_obs} spots x" in capsys.readouterr().out
    assert "spatial" in spatialdata.read_zarr(out).tables["table"].uns
    assert main(["read", "hest", str(root), "--out", str(root.parent / "x.zarr")]) == 2
    assert "ROOT" in capsys.readouterr().err
