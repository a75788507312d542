import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

import c2lst
from c2lst.pp import GenePanel


def _adata(n=40, g=30, seed=0, sparse=False):
    rng = np.random.default_rng(seed)
    rates = rng.gamma(1.0, 5.0, size=(1, g)) * rng.uniform(0.5, 2.0, size=(n, 1))
    x = rng.poisson(rates).astype(np.float32)
    a = ad.AnnData(sp.csr_matrix(x) if sparse else x)
    a.var_names = [f"g{i}" for i in range(g)]
    a.obs_names = [f"s{i}" for i in range(n)]
    return a


@pytest.mark.parametrize("sparse", [False, True])
def test_normalize_matches_formula(sparse):
    a = _adata(sparse=sparse)
    mask = np.arange(a.n_obs) < 20
    c2lst.pp.normalize(a, train_mask=mask)
    x = a.X.toarray() if sparse else a.X
    lib = x.sum(1)
    target = np.median(lib[mask])
    np.testing.assert_allclose(a.layers["lognorm"], np.log1p(x / lib[:, None] * target), rtol=1e-5)
    assert a.uns["lognorm"]["params"]["target_sum"] == pytest.approx(target)


def test_normalize_refuses_overwrite_and_copy_leaves_input():
    a = _adata()
    out = c2lst.pp.normalize(a, copy=True)
    assert "lognorm" not in a.layers and "lognorm" in out.layers
    c2lst.pp.normalize(a)
    with pytest.raises(ValueError, match="overwrite=True"):
        c2lst.pp.normalize(a)
    c2lst.pp.normalize(a, overwrite=True)


@pytest.mark.parametrize("bad, msg", [(np.nan, "NaN"), (-1.0, "negative")])
def test_bad_counts(bad, msg):
    a = _adata()
    a.X[0, 0] = bad
    with pytest.raises(ValueError, match=msg):
        c2lst.pp.normalize(a)


def test_panel_uses_training_spots_only():
    a = _adata()
    mask = np.arange(a.n_obs) < 20
    panel = c2lst.pp.gene_panel(a, n_top_genes=10, train_mask=mask)
    b = a.copy()
    del b.uns["c2lst_panel"]
    b.X[~mask] = np.random.default_rng(5).poisson(50, size=b.X[~mask].shape)  # change test spots only
    assert c2lst.pp.gene_panel(b, n_top_genes=10, train_mask=mask) == panel
    b.X[mask] = b.X[mask][::-1] * 3 + 1  # change training spots
    assert c2lst.pp.gene_panel(b, n_top_genes=10, train_mask=mask, overwrite=True) != panel


def test_panel_ranks_by_training_variance_and_roundtrips():
    a = _adata()
    panel = c2lst.pp.gene_panel(a, n_top_genes=5, min_spots=0.0)
    c2lst.pp.normalize(a)
    v = a.layers["lognorm"].var(0)
    assert list(panel.genes) == list(a.var_names[np.argsort(-v, kind="stable")[:5]])
    assert a.var["c2lst_panel"].sum() == 5
    again = GenePanel.from_table(a)
    assert again == panel and again.identity() == panel.identity()
    expr = panel.expression(a)
    np.testing.assert_allclose(expr, a.layers["lognorm"][:, [a.var_names.get_loc(g) for g in panel.genes]], rtol=1e-5)
    z = panel.standardize(expr)
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(panel.destandardize(z), expr, rtol=1e-4, atol=1e-5)


def test_panel_old_keyword_and_copy():
    a = _adata()
    mask = np.arange(a.n_obs) < 20
    with pytest.warns(FutureWarning, match="`n_top` is now `n_top_genes`"):
        old = c2lst.pp.gene_panel(a, n_top=5, train_mask=mask)  # the old keyword still works for one release
    assert len(old) == 5 and old.params["n_top_genes"] == 5
    with pytest.raises(ValueError, match="pass `n_top_genes` only"):
        c2lst.pp.gene_panel(a, n_top=5, n_top_genes=5, key_added="both")
    out, panel = c2lst.pp.gene_panel(a, n_top_genes=5, train_mask=mask, key_added="copied", copy=True)
    assert panel == old and "copied" in out.uns and "copied" in out.var
    assert "copied" not in a.uns and "copied" not in a.var


def test_panel_errors():
    a = _adata()
    panel = c2lst.pp.gene_panel(a, n_top_genes=5)
    with pytest.raises(ValueError, match="missing from the data"):
        panel.validate(["g0", "g1"])
    with pytest.raises(ValueError, match="expected"):
        panel.standardize(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="NaN"):
        panel.standardize(np.full((3, 5), np.nan))
    with pytest.raises(ValueError, match="n_top_genes"):
        c2lst.pp.gene_panel(a, n_top_genes=500, overwrite=True)
    with pytest.raises(ValueError, match="empty"):
        c2lst.pp.gene_panel(a, train_mask=np.zeros(a.n_obs, bool), overwrite=True)
    d = panel.to_dict()
    d["genes"] = d["genes"][::-1]
    with pytest.raises(ValueError, match="corrupt"):
        GenePanel.from_dict(d)


def test_resolve_table_skips_generated_tables():
    from spatialdata import SpatialData

    from c2lst._utils import resolve_table

    measured, synthetic = _adata(), _adata(n=5)
    synthetic.uns["c2lst"] = {"synthetic": True}
    sdata = SpatialData(tables={"table": measured, "c2lst_synthetic": synthetic})
    assert resolve_table(sdata)[2] == "table"
    assert resolve_table(sdata, "c2lst_synthetic")[2] == "c2lst_synthetic"
    sdata.tables["other"] = _adata(n=3)
    with pytest.raises(ValueError, match="table_key"):
        resolve_table(sdata)


def _demo_table():
    return c2lst.datasets.demo().tables["table"]


def test_gene_panel_seurat_flavor_is_scanpy_on_training_spots_only():
    import scanpy as sc

    t = _demo_table()
    mask = np.random.default_rng(0).random(t.n_obs) < 0.5
    panel = c2lst.pp.gene_panel(t, n_top_genes=50, train_mask=mask, flavor="seurat", min_spots=0.0)
    assert len(panel) == 50 and panel.params["flavor"] == "seurat"
    # the same ranking as scanpy's own on the training spots' lognorm (at the panel's target sum)
    ref = t[mask].copy()
    sc.pp.normalize_total(ref, target_sum=panel.target_sum)
    sc.pp.log1p(ref)
    sc.pp.highly_variable_genes(ref, flavor="seurat", n_top_genes=50)
    assert set(panel.genes) == set(ref.var_names[ref.var["highly_variable"]])
    assert panel.genes != c2lst.pp.gene_panel(t, n_top_genes=50, train_mask=mask, key_added="v", min_spots=0.0).genes
    # held-out spots cannot move it
    other = t.copy()
    x = other.X.toarray()
    x[~mask] = np.random.default_rng(1).poisson(3.0, size=x[~mask].shape)
    other.X = sp.csr_matrix(x)
    assert c2lst.pp.gene_panel(other, n_top_genes=50, train_mask=mask, flavor="seurat", min_spots=0.0, key_added="o") == panel


def test_gene_panel_include_forces_genes_of_interest():
    sdata = c2lst.datasets.demo()
    t = sdata.tables["table"]
    mask = np.arange(t.n_obs) % 2 == 0
    plain = c2lst.pp.gene_panel(t, n_top_genes=20, train_mask=mask, key_added="plain")
    assert "ERBB2" not in plain.genes  # not among the 20 most variable: why it must be forced
    forced = c2lst.pp.gene_panel(t, n_top_genes=20, train_mask=mask, include=["ERBB2", "GRB7"], key_added="forced")
    assert forced.genes[:2] == ("ERBB2", "GRB7") and len(forced) == 20
    assert forced.genes[2:] == plain.genes[:18]  # then the best-ranked others, in order
    assert t.var.loc["ERBB2", "forced"] and forced.params["include"] == ["ERBB2", "GRB7"]
    back = GenePanel.from_table(t, "forced")
    assert back == forced
    c2lst.pp.extract_patches(sdata, patch_px=16)
    c2lst.tl.predict(sdata, train_mask=mask, panel=forced, encoder="handcrafted", synthetic=None, seed=0)
    assert t.var.loc["ERBB2", "c2lst_pred_panel"] and np.isfinite(t[:, "ERBB2"].layers["c2lst_pred"]).all()


def test_gene_panel_bad_include_and_flavor():
    t = _demo_table()
    with pytest.raises(ValueError, match=r"'erbb2': did you mean \['ERBB2'\]"):
        c2lst.pp.gene_panel(t, n_top_genes=10, include=["erbb2"])
    with pytest.raises(ValueError, match=r"'ERBB22': did you mean \[.*'ERBB2'"):
        c2lst.pp.gene_panel(t, n_top_genes=10, include="ERBB22")
    with pytest.raises(ValueError, match="raise `n_top_genes`"):
        c2lst.pp.gene_panel(t, n_top_genes=1, include=["ERBB2", "GRB7"])
    with pytest.raises(ValueError, match="unknown flavor 'hvg'"):
        c2lst.pp.gene_panel(t, n_top_genes=10, flavor="hvg")
    assert "c2lst_panel" not in t.uns


def test_gene_panel_seurat_v3_on_counts():
    pytest.importorskip("skmisc", reason="flavor='seurat_v3' needs scikit-misc")
    t = _demo_table()
    mask = np.arange(t.n_obs) % 2 == 0
    panel = c2lst.pp.gene_panel(t, n_top_genes=30, train_mask=mask, flavor="seurat_v3", include=["ERBB2"])
    assert panel.genes[0] == "ERBB2" and len(panel) == 30
