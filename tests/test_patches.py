from __future__ import annotations

import dask.array as da
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from spatialdata import SpatialData
from spatialdata.models import Image2DModel, ShapesModel
from spatialdata.transformations import Identity, Scale, set_transformation

import c2lst


def _table(sdata):
    return sdata.tables["table"]


def _with_image(sdata, hwc, *, transformation=None, scale_factors=None):
    """The same spots and table with another image element (optionally transformed / a pyramid)."""
    image = Image2DModel.parse(da.from_array(hwc.transpose(2, 0, 1), chunks=(3, 256, 256)), dims=("c", "y", "x"),
                               transformations={"global": transformation or Identity()}, scale_factors=scale_factors)
    table = _table(sdata).copy()
    table.obsm.pop("c2lst_patch", None)
    return SpatialData(images={"img": image}, shapes=dict(sdata.shapes), tables={"table": table})


def _blob_image(size, centres, sigma=1.5):
    """White image with a dark Gaussian dot at each (x, y) centre (sub-pixel), as uint8 RGB."""
    yy, xx = np.mgrid[0:size, 0:size] + 0.5  # pixel centres in continuous coordinates
    dark = np.zeros((size, size))
    for cx, cy in centres:
        dark += np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma**2))
    return np.repeat((255 * (1 - np.clip(dark, 0, 1)))[..., None], 3, axis=2).astype(np.uint8)


def _centroid(patch):
    w = 255.0 - patch[0].astype(float)
    yy, xx = np.mgrid[0 : w.shape[0], 0 : w.shape[1]]
    return (w * yy).sum() / w.sum(), (w * xx).sum() / w.sum()


def test_patches_layout(tiny_sdata):
    c2lst.pp.extract_patches(tiny_sdata)
    table = _table(tiny_sdata)
    patches = table.obsm["c2lst_patch"]
    assert patches.shape == (25, 3, 64, 64) and patches.dtype == np.uint8
    assert table.obs["c2lst_patch_padded"].dtype == bool and table.obs["c2lst_patch_inside"].dtype == float
    params = table.uns["c2lst_patch"]["params"]
    assert params["patch_um"] == 100 and params["patch_px"] == 64 and params["image_key"] == "tiny_image"
    assert params["mpp"] == pytest.approx(table.uns["c2lst"]["spatial"]["mpp"])
    # spots 100 px from the border, patches 50 px wide at 2 µm/px: none is padded
    assert not table.obs["c2lst_patch_padded"].any() and (table.obs["c2lst_patch_inside"] == 1).all()
    assert patches.std() > 10  # real image content, not padding


def test_log_message(tiny_sdata, caplog):
    import logging

    logger = logging.getLogger("c2lst")
    logger.addHandler(caplog.handler)
    try:
        c2lst.pp.extract_patches(tiny_sdata)
    finally:
        logger.removeHandler(caplog.handler)
    assert "added .obsm['c2lst_patch']" in caplog.text


def test_patch_is_centred_and_scaled(tiny_sdata):
    """A dot at the spot centre lands in the patch centre; a dot 25 µm to the right lands 16 px to the right."""
    table = _table(tiny_sdata)
    circles = tiny_sdata.shapes["tiny_spots"]
    mpp = table.uns["c2lst"]["spatial"]["mpp"]
    xy = np.c_[circles.geometry.x, circles.geometry.y]
    sdata = _with_image(tiny_sdata, _blob_image(600, [*xy, *(xy + [25 / mpp, 0])]))
    c2lst.pp.extract_patches(sdata, patch_um=100, patch_px=64)
    patches = _table(sdata).obsm["c2lst_patch"]
    for p in patches[:5]:
        centre = _centroid(p[:, 24:40, 24:40])  # the centre dot only: (31.5, 31.5) -> (7.5, 7.5) in this crop
        assert centre == pytest.approx((7.5, 7.5), abs=0.3)
        right = _centroid(p[:, 24:40, 40:56])  # the dot 25 µm = 16 px to the right: column 47.5 -> 7.5
        assert right == pytest.approx((7.5, 7.5), abs=0.3)


def test_same_patch_from_rescaled_image(tiny_sdata, tiny_files):
    """The image upscaled 2x with a Scale(0.5) transformation, or with the spots scaled 2x, gives the same patches."""
    rgb = np.asarray(Image.open(tiny_files[2]))
    big = np.asarray(Image.fromarray(rgb).resize((1200, 1200), Image.Resampling.BICUBIC))
    c2lst.pp.extract_patches(tiny_sdata, patch_px=32)  # 3.1 µm/px: coarser than the 2 µm/px image
    ref = _table(tiny_sdata).obsm["c2lst_patch"].astype(float)

    scaled = _with_image(tiny_sdata, big, transformation=Scale([0.5, 0.5], axes=("y", "x")))
    c2lst.pp.extract_patches(scaled, patch_px=32)
    got = _table(scaled).obsm["c2lst_patch"].astype(float)
    r = [np.corrcoef(a.ravel(), b.ravel())[0, 1] for a, b in zip(ref, got, strict=True)]
    assert np.median(r) > 0.97 and np.abs(ref - got).mean() < 4

    circles = tiny_sdata.shapes["tiny_spots"]
    moved = ShapesModel.parse(np.c_[circles.geometry.x * 2, circles.geometry.y * 2], geometry=0,
                              radius=circles["radius"].to_numpy() * 2, index=circles.index)
    table = _table(tiny_sdata).copy()
    table.uns["c2lst"] = {"spatial": {**table.uns["c2lst"]["spatial"], "mpp": table.uns["c2lst"]["spatial"]["mpp"] / 2}}
    image = Image2DModel.parse(big.transpose(2, 0, 1), dims=("c", "y", "x"))
    direct = SpatialData(images={"img": image}, shapes={"tiny_spots": moved}, tables={"table": table})
    c2lst.pp.extract_patches(direct, patch_px=32, overwrite=True)
    np.testing.assert_allclose(_table(direct).obsm["c2lst_patch"], got, atol=1)


def test_pyramid_level_is_used(tiny_sdata, tiny_files):
    rgb = np.asarray(Image.open(tiny_files[2]))
    flat = _with_image(tiny_sdata, rgb)
    c2lst.pp.extract_patches(flat, patch_px=16)  # 6.25 µm/px
    pyramid = _with_image(tiny_sdata, rgb, scale_factors=[2, 2])  # 2, 4, 8 µm/px, derived lazily from level 0
    c2lst.pp.extract_patches(pyramid, patch_px=16)
    assert _table(pyramid).uns["c2lst_patch"]["params"]["level"] == 0  # lazily derived levels are skipped
    # a stored pyramid (levels of their own, as read back from zarr) is used: level 1 at 4 µm/px
    element = pyramid.images["img"]
    for name in list(element)[1:]:
        lazy = element[name]["image"]
        element[name]["image"] = lazy.copy(data=da.from_array(lazy.data.compute(), chunks=(3, 128, 128)))
    c2lst.pp.extract_patches(pyramid, patch_px=16, overwrite=True)
    params = _table(pyramid).uns["c2lst_patch"]["params"]
    assert params["level"] == 1 and params["level_um_per_px"] == pytest.approx(2 * params["mpp"])
    a, b = (_table(s).obsm["c2lst_patch"].astype(float) for s in (flat, pyramid))
    assert np.median([np.corrcoef(x.ravel(), y.ravel())[0, 1] for x, y in zip(a, b, strict=True)]) > 0.95


def test_edge_spot_padded(tiny_sdata):
    circles = tiny_sdata.shapes["tiny_spots"].copy()
    circles.loc[circles.index[0], "geometry"] = circles.geometry.iloc[0].__class__(10.0, 300.0)
    tiny_sdata.shapes["tiny_spots"] = ShapesModel.parse(circles)
    c2lst.pp.extract_patches(tiny_sdata, pad_value=7)
    table = _table(tiny_sdata)
    row = int(np.flatnonzero(table.obs["spot_id"].to_numpy() == circles.index[0])[0])
    assert table.obs["c2lst_patch_padded"].iloc[row] and table.obs["c2lst_patch_padded"].sum() == 1
    # 50 px wide patch centred 10 px from the left border: 35 of 50 px inside
    assert table.obs["c2lst_patch_inside"].iloc[row] == pytest.approx(35 / 50, abs=0.02)
    patch = table.obsm["c2lst_patch"][row]
    assert (patch[:, :, :18] == 7).all() and (patch[:, :, 22:] != 7).mean() > 0.95


def test_centre_outside_image_refused(tiny_sdata):
    circles = tiny_sdata.shapes["tiny_spots"].copy()
    circles.loc[circles.index[3], "geometry"] = circles.geometry.iloc[3].__class__(650.0, 300.0)
    tiny_sdata.shapes["tiny_spots"] = ShapesModel.parse(circles)
    name = _table(tiny_sdata).obs_names[int(np.flatnonzero(_table(tiny_sdata).obs["spot_id"] == circles.index[3])[0])]
    with pytest.raises(ValueError, match=f"outside.*{name}"):
        c2lst.pp.extract_patches(tiny_sdata)


def test_table_order_follows_instance_key(tiny_sdata):
    c2lst.pp.extract_patches(tiny_sdata)
    ref = _table(tiny_sdata).obsm["c2lst_patch"]
    shuffled = _table(tiny_sdata)[::-1].copy()
    del shuffled.obsm["c2lst_patch"]
    sdata = SpatialData(images=dict(tiny_sdata.images), shapes=dict(tiny_sdata.shapes), tables={"table": shuffled})
    c2lst.pp.extract_patches(sdata, batch_size=4)  # small batches: same result
    np.testing.assert_array_equal(_table(sdata).obsm["c2lst_patch"], ref[::-1])


def test_overwrite_and_copy(tiny_sdata):
    out = c2lst.pp.extract_patches(tiny_sdata, copy=True)
    assert "c2lst_patch" not in _table(tiny_sdata).obsm and "c2lst_patch_padded" not in _table(tiny_sdata).obs
    assert _table(out).obsm["c2lst_patch"].shape == (25, 3, 64, 64)
    assert out.images["tiny_image"] is tiny_sdata.images["tiny_image"]  # elements shared, not copied
    assert c2lst.pp.extract_patches(tiny_sdata) is None
    with pytest.raises(ValueError, match="overwrite=True"):
        c2lst.pp.extract_patches(tiny_sdata)
    c2lst.pp.extract_patches(tiny_sdata, patch_px=32, overwrite=True)
    assert _table(tiny_sdata).obsm["c2lst_patch"].shape == (25, 3, 32, 32)
    c2lst.pp.extract_patches(tiny_sdata, key_added="other")
    assert "other_padded" in _table(tiny_sdata).obs and "other" in _table(tiny_sdata).uns


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"patch_px": 4}, "patch_px"), ({"patch_px": 2048}, "patch_px"), ({"patch_um": 0}, "patch_um"),
     ({"pad_value": 300}, "pad_value"), ({"mpp": -1.0}, "mpp"), ({"image_key": "nope"}, "image_key")],
)
def test_bad_arguments(tiny_sdata, kwargs, match):
    with pytest.raises(ValueError, match=match):
        c2lst.pp.extract_patches(tiny_sdata, **kwargs)


def test_bad_images_and_inputs(tiny_sdata, tiny_files):
    rgb = np.asarray(Image.open(tiny_files[2]))
    as_float = _with_image(tiny_sdata, rgb.astype(np.float32) / 255)
    with pytest.raises(ValueError, match="uint8"):
        c2lst.pp.extract_patches(as_float)
    gray = _with_image(tiny_sdata, rgb[..., :1])
    with pytest.raises(ValueError, match="3 channels"):
        c2lst.pp.extract_patches(gray)
    with pytest.raises(ValueError, match="SpatialData"):
        c2lst.pp.extract_patches(_table(tiny_sdata))
    table = _table(tiny_sdata)
    table.obs["spot_id"] = table.obs["spot_id"] + 100
    with pytest.raises(ValueError, match="no circle"):
        c2lst.pp.extract_patches(tiny_sdata)


def test_from_anndata_transform_composition(tiny_files):
    """Circles in full-resolution px and a 4x smaller 'hires' image (Scale transform) cut the same tissue."""
    import anndata as ad

    rgb = np.asarray(Image.open(tiny_files[2]))  # plays the hires image, full resolution is 4x larger
    rng = np.random.default_rng(0)
    xy_hires = rng.uniform(100, 500, size=(15, 2))
    adata = ad.AnnData(rng.poisson(2.0, size=(15, 5)).astype(np.float32))
    adata.obsm["spatial"] = xy_hires * 4
    adata.uns["spatial"] = {"v": {"images": {"hires": rgb}, "scalefactors": {"tissue_hires_scalef": 0.25,
                                                                              "spot_diameter_fullres": 110.0}}}
    sdata = c2lst.io.from_anndata(adata)  # 55 µm / 110 px = 0.5 µm per full-resolution px: 2 µm per hires px
    c2lst.pp.extract_patches(sdata, patch_um=100, patch_px=32)
    got = _table(sdata).obsm["c2lst_patch"].astype(float)
    # reference: the same spots in hires pixels on an untransformed image, 2 µm per unit
    circles = ShapesModel.parse(xy_hires, geometry=0, radius=np.full(15, 13.75), index=pd.Index(np.arange(15)))
    table = _table(sdata).copy()
    del table.obsm["c2lst_patch"]
    table.uns["c2lst"] = {"spatial": {**table.uns["c2lst"]["spatial"], "mpp": 2.0}}
    ref_sdata = SpatialData(images={"img": Image2DModel.parse(rgb.transpose(2, 0, 1), dims=("c", "y", "x"))},
                            shapes={"v_spots": circles}, tables={"table": table})
    c2lst.pp.extract_patches(ref_sdata, patch_um=100, patch_px=32)
    np.testing.assert_allclose(_table(ref_sdata).obsm["c2lst_patch"], got, atol=1)


def test_moving_the_image_moves_the_patches(tiny_sdata, tiny_files):
    """A Translation on the image (not the circles) shifts what each patch shows."""
    from spatialdata.transformations import Translation

    c2lst.pp.extract_patches(tiny_sdata)
    ref = _table(tiny_sdata).obsm["c2lst_patch"].astype(float)
    set_transformation(tiny_sdata.images["tiny_image"], Translation([10.0], axes=("x",)), "global")
    c2lst.pp.extract_patches(tiny_sdata, overwrite=True)
    got = _table(tiny_sdata).obsm["c2lst_patch"].astype(float)
    # image moved 10 px (= 12.8 patch px at 1.5625/2 µm) to the right: patch content shifts right by 12.8 px
    np.testing.assert_allclose(got[:, :, :, 20:50], ref[:, :, :, 7:37], atol=25)
    assert np.abs(got - ref).mean() > 5


@pytest.mark.data
def test_her2st_patches_match_a_hand_cut_crop(her2st_files):
    counts, spots, image = her2st_files("C4")
    sdata = c2lst.io.read_legacy_st(counts, spots, image)
    c2lst.pp.extract_patches(sdata)
    table = _table(sdata)
    assert table.obsm["c2lst_patch"].shape == (184, 3, 64, 64)
    mpp = table.uns["c2lst"]["spatial"]["mpp"]
    sel = pd.read_csv(spots, sep="\t").iloc[::20]
    Image.MAX_IMAGE_PIXELS = None
    img = Image.open(image)
    half = 50 / mpp
    rs = []
    for r in sel.itertuples():
        ref = img.crop((r.pixel_x - half, r.pixel_y - half, r.pixel_x + half, r.pixel_y + half)).resize((64, 64))
        got = table.obsm["c2lst_patch"][table.obs_names.get_loc(f"{r.x}x{r.y}")].transpose(1, 2, 0)
        rs.append(np.corrcoef(np.asarray(ref, float).ravel(), got.astype(float).ravel())[0, 1])
    assert np.median(rs) > 0.95
