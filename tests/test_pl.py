from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import spatialdata as sd
from spatialdata.models import Image2DModel, ShapesModel, TableModel
from spatialdata.transformations import Identity, Scale

import c2lst
from c2lst.pl._geometry import section_layout

GENES = ["G0", "G1", "G2", "G3"]


def make_sdata(n_side: int = 6, image_scale: float = 2.0, with_synthetic: bool = True, seed: int = 0) -> sd.SpatialData:
    """Spots on a grid over a striped image; the image is stored downscaled and mapped up by `image_scale`."""
    rng = np.random.default_rng(seed)
    pitch, radius = 40.0, 12.0
    gx, gy = np.meshgrid(np.arange(n_side), np.arange(n_side))
    xy = np.column_stack([gx.ravel(), gy.ravel()]).astype(float) * pitch + 50.0  # circles' coordinates
    n = len(xy)
    h = w = int((n_side * pitch + 100) / image_scale)
    img = np.full((3, h, w), 220, dtype=np.uint8)
    img[0, :, : w // 2] = 120  # left half reddish-dark
    image = Image2DModel.parse(img, dims=("c", "y", "x"), scale_factors=[2],
                               transformations={"global": Scale([image_scale, image_scale], axes=("y", "x"))})
    shapes = ShapesModel.parse(xy, geometry=0, radius=np.full(n, radius), transformations={"global": Identity()})
    counts = rng.poisson(5, size=(n, len(GENES))).astype(np.float32)
    obs = pd.DataFrame({"region": pd.Categorical(["s1_spots"] * n), "spot_id": np.arange(n),
                        "library_id": pd.Categorical(["s1"] * n)}, index=[f"{i}x{j}" for i, j in zip(gx.ravel(), gy.ravel(), strict=True)])
    table = ad.AnnData(X=counts, obs=obs, var=pd.DataFrame(index=GENES))
    table.layers["lognorm"] = np.log1p(counts)
    pred = table.layers["lognorm"] * 0.5 + rng.normal(0, 0.3, size=counts.shape)
    pred[:, 3] = np.nan  # gene outside the panel: NaN, as tl.predict writes it
    table.layers["c2lst_pred"] = pred.astype(np.float32)
    table.var["c2lst_pred_panel"] = [True, True, True, False]
    table.obsm["c2lst_patch"] = rng.integers(0, 255, size=(n, 3, 16, 16), dtype=np.uint8)
    table = TableModel.parse(table, region="s1_spots", region_key="region", instance_key="spot_id")
    tables = {"table": table}
    if with_synthetic:
        m = 30
        syn = ad.AnnData(X=rng.normal(1.5, 0.5, size=(m, 3)).astype(np.float32), var=pd.DataFrame(index=GENES[:3]))
        syn.obsm["c2lst_patch"] = rng.integers(0, 255, size=(m, 3, 16, 16), dtype=np.uint8)
        syn.uns["c2lst"] = {"synthetic": True}  # as tl.generate marks it
        tables["c2lst_synthetic"] = syn
    return sd.SpatialData(images={"s1_image": image}, shapes={"s1_spots": shapes}, tables=tables)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_layout_composes_transformations():
    sdata = make_sdata(image_scale=2.0)
    layout = section_layout(sdata)
    # circles live in global units; the image is 2x downscaled, so spots sit at half their coordinates
    xy_global = np.column_stack([sdata.shapes["s1_spots"].geometry.x, sdata.shapes["s1_spots"].geometry.y])
    np.testing.assert_allclose(layout.xy, xy_global / 2.0)
    np.testing.assert_allclose(layout.radius, 6.0)
    h0, w0 = sdata.images["s1_image"]["scale0"]["image"].shape[1:]
    assert layout.extent == (0.0, float(w0), float(h0), 0.0)
    assert layout.image.shape[-1] == 3 and layout.image.dtype == np.uint8


def test_spatial_genes_titles_use_heldout_spots(tmp_path):
    sdata = make_sdata()
    table = sdata.tables["table"]
    train = np.zeros(table.n_obs, dtype=bool)
    train[:20] = True
    out = tmp_path / "spatial.png"
    fig = c2lst.pl.spatial_genes(sdata, ["G0", "G1"], train_mask=train, show=False, save=out)
    assert out.stat().st_size > 0
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert len(titles) == 4
    m, p = table.layers["lognorm"][~train, 1], table.layers["c2lst_pred"][~train, 1]
    expected = np.corrcoef(m, p)[0, 1]
    assert f"r = {expected:.2f} (held-out, n = {int((~train).sum())})" in titles[3]
    # spot circles drawn with the measured values as colours
    coll = fig.axes[0].collections[0]
    np.testing.assert_allclose(np.asarray(coll.get_array()), table.layers["lognorm"][:, 0])


def test_spatial_genes_error_layer():
    sdata = make_sdata()
    table = sdata.tables["table"]
    fig = c2lst.pl.spatial_genes(sdata, "G1", layers=("lognorm", "error"), show=False)
    coll = fig.axes[1].collections[0]
    np.testing.assert_allclose(np.asarray(coll.get_array()), table.layers["c2lst_pred"][:, 1] - table.layers["lognorm"][:, 1],
                               rtol=1e-5)
    lo, hi = coll.get_clim()
    assert lo == -hi and coll.get_cmap().name == "PiYG"


def test_spatial_genes_reads_recorded_train_spots():
    sdata = make_sdata()
    table = sdata.tables["table"]
    table.uns["c2lst_pred"] = {"params": {"train_spots": list(table.obs_names[:10])}}
    fig = c2lst.pl.spatial_genes(sdata, "G2", show=False)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert f"(held-out, n = {table.n_obs - 10})" in titles[1]


def test_spatial_genes_errors():
    sdata = make_sdata()
    with pytest.raises(ValueError, match="not in the table's var_names"):
        c2lst.pl.spatial_genes(sdata, "NOPE", show=False)
    with pytest.raises(ValueError, match="outside the predicted gene panel"):
        c2lst.pl.spatial_genes(sdata, "G3", show=False)
    with pytest.raises(ValueError, match="missing_pred"):
        c2lst.pl.spatial_genes(sdata, "G0", layers=("lognorm", "missing_pred"), show=False)


def test_spatial_genes_on_anndata_visium_convention():
    sdata = make_sdata()
    adata = sdata.tables["table"].copy()
    adata.obsm["spatial"] = np.column_stack([sdata.shapes["s1_spots"].geometry.x, sdata.shapes["s1_spots"].geometry.y])
    hires = np.full((50, 50, 3), 200, dtype=np.uint8)
    adata.uns["spatial"] = {"s1": {"images": {"hires": hires},
                                   "scalefactors": {"tissue_hires_scalef": 0.1, "spot_diameter_fullres": 24.0}}}
    fig = c2lst.pl.spatial_genes(adata, "G0", show=False)
    ax = fig.axes[0]
    assert ax.images[0].get_extent() == [0.0, 500.0, 500.0, 0.0]
    assert ax.collections[0].get_paths()  # circles drawn


def test_synthetic_grid_groups():
    sdata = make_sdata()
    fig = c2lst.pl.synthetic_grid(sdata, n=4, groupby="G1", show=False)
    labels = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert [lab.split("\n")[0] for lab in labels] == ["G1 low", "G1 mid", "G1 high"]
    # every real spot and every synthetic patch lands in exactly one group
    n_real = sum(int(lab.split("\n")[1].split(" real")[0]) for lab in labels)
    n_syn = sum(int(lab.split("/ ")[1].split(" syn")[0]) for lab in labels)
    assert n_real == sdata.tables["table"].n_obs and n_syn == sdata.tables["c2lst_synthetic"].n_obs
    fig = c2lst.pl.synthetic_grid(sdata, n=3, groupby="cluster", n_clusters=2, show=False)
    assert len([t for ax in fig.axes for t in ax.texts]) == 2
    with pytest.raises(ValueError, match="panel gene"):
        c2lst.pl.synthetic_grid(sdata, groupby="G3", show=False)
    del sdata.tables["c2lst_synthetic"]
    with pytest.raises(ValueError, match="run c2lst.tl.generate"):
        c2lst.pl.synthetic_grid(sdata, show=False)


def test_embedding_overlap_features_and_sdata():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(40, 5))
    fig = c2lst.pl.embedding_overlap((real, rng.normal(size=(30, 5)) + 10.0), method="pca", show=False)
    ax = fig.axes[0]
    assert [len(c.get_offsets()) for c in ax.collections] == [40, 30]
    assert "precision 0.00" in ax.get_title()  # disjoint clouds
    fig = c2lst.pl.embedding_overlap((real, rng.normal(size=(30, 5))), method="pca", show=False)
    assert float(fig.axes[0].get_title().split("precision ")[1].split(" ")[0]) > 0.5  # same distribution
    fig = c2lst.pl.embedding_overlap(make_sdata(), method="pca", show=False)
    assert [len(c.get_offsets()) for c in fig.axes[0].collections] == [36, 30]


def test_plot_docstrings_have_their_shared_parameters_filled_in():
    for name in c2lst.pl.__all__:
        doc = getattr(c2lst.pl, name).__doc__ or ""
        assert "{ax}" not in doc and "{show_save}" not in doc, f"c2lst.pl.{name}: decorate it with @figure_doc"


def test_benchmark_plot(tmp_path):
    rows = [{"condition": c, "test_section": sec, "fraction": f, "seed": s, "pcc": base + f * 0.2 + 0.01 * s + (sec == "C3") * 0.1}
            for c, base in (("real only", 0.1), ("real + synthetic", 0.2)) for f in (0.25, 0.5, 1.0)
            for s in range(3) for sec in ("C2", "C3")]
    path = tmp_path / "results.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    fig = c2lst.pl.benchmark(path, show=False)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["real only (3 seeds)", "real + synthetic (3 seeds)"]
    ys = ax.lines[0].get_ydata()
    np.testing.assert_allclose(ys, [0.1 + f * 0.2 + 0.01 + 0.05 for f in (0.25, 0.5, 1.0)])  # mean of folds, seeds
    from c2lst.benchmark import summarize  # the benchmark's own summary gives the same curve

    ref = summarize(pd.DataFrame(rows))
    ref = ref[ref["condition"] == "real only"].sort_values("fraction")
    np.testing.assert_allclose(ys, ref["mean"])
    bar = ax.containers[0].lines[2][0].get_segments()  # the error bars are the same sd as summary.md's ±
    np.testing.assert_allclose([seg[1, 1] - seg[0, 1] for seg in bar], 2 * ref["std"])
    np.testing.assert_allclose(ref["std"], np.std([0.0, 0.01, 0.02], ddof=1))
    fig = c2lst.pl.benchmark(path, baseline="real only", show=False)  # paired by fraction, seed and section
    ax = fig.axes[0]
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [0.1, 0.1, 0.1])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["real only", "real + synthetic (3 seeds)"]
    np.testing.assert_allclose([seg[1, 1] - seg[0, 1] for seg in ax.containers[0].lines[2][0].get_segments()], 0.0,
                               atol=1e-12)  # the seed offsets cancel in the paired difference
    with pytest.raises(ValueError, match="no 'real only' row"):
        c2lst.pl.benchmark(pd.DataFrame(rows[1:]), baseline="real only", show=False)
    fewer = pd.DataFrame([r for r in rows if not (r["condition"] == "real + synthetic" and r["seed"] > 0 and r["fraction"] > 0.25
                                                  and (r["seed"] == 2 or r["fraction"] == 1.0))])
    labels = [t.get_text() for t in c2lst.pl.benchmark(fewer, show=False).axes[0].get_legend().get_texts()]
    assert labels == ["real only (3 seeds)", "real + synthetic (3 seeds, 1 at f = 1, 2 at f = 0.5)"]
    with pytest.raises(ValueError, match="baseline 'nope'"):
        c2lst.pl.benchmark(path, baseline="nope", show=False)
    with pytest.raises(ValueError, match="lack columns"):
        c2lst.pl.benchmark(pd.DataFrame({"fraction": [1.0]}), show=False)
