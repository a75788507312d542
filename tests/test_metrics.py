from __future__ import annotations

import numpy as np
import pytest

from c2lst import metrics as M


def _normal(n=300, d=5, shift=0.0, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d)) + shift


# ----------------------------------------------------------------------------- regression
def test_pearson_perfect_anti_and_constant():
    rng = np.random.default_rng(0)
    t = rng.normal(size=(50, 3))
    p = np.c_[t[:, 0] * 2 + 1, -t[:, 1], np.full(50, 3.0)]
    r = M.pearson_per_gene(t, p)
    assert r[0] == pytest.approx(1.0)
    assert r[1] == pytest.approx(-1.0)
    assert np.isnan(r[2])  # constant prediction: NaN, no warning
    with np.errstate(all="raise"):
        M.pearson_per_gene(np.ones((10, 2)), np.ones((10, 2)))


def test_pearson_matches_numpy():
    rng = np.random.default_rng(1)
    t, p = rng.normal(size=(40, 4)), rng.normal(size=(40, 4))
    expected = [np.corrcoef(t[:, j], p[:, j])[0, 1] for j in range(4)]
    assert np.allclose(M.pearson_per_gene(t, p), expected)


def test_mse_mae_known_values():
    t = np.zeros((4, 2))
    p = np.array([[1, 2], [1, -2], [1, 2], [1, -2]], dtype=float)
    assert np.allclose(M.mse_per_gene(t, p), [1, 4])
    assert np.allclose(M.mae_per_gene(t, p), [1, 2])


def test_regression_shape_mismatch():
    with pytest.raises(ValueError, match="same"):
        M.pearson_per_gene(np.zeros((3, 2)), np.zeros((3, 3)))


# ----------------------------------------------------------------------------- Moran's I
def _grid(n=15):
    yy, xx = np.mgrid[0:n, 0:n]
    return np.c_[xx.ravel(), yy.ravel()].astype(float)


def test_morans_i_smooth_high_shuffled_near_zero():
    xy = _grid()
    smooth = np.sin(xy[:, 0] / 4) + np.cos(xy[:, 1] / 5)
    assert M.morans_i(smooth, xy)[0] > 0.8
    rng = np.random.default_rng(0)
    shuffled = [M.morans_i(rng.permutation(smooth), xy)[0] for _ in range(20)]
    assert abs(np.mean(shuffled)) < 0.05
    even = _grid(14)
    checker = (even.sum(axis=1) % 2) * 2 - 1.0  # alternating on the rook lattice: perfect dispersion
    assert M.morans_i(checker, even, radius=1.01)[0] == pytest.approx(-1.0)


def test_morans_i_multi_column_radius_and_constant():
    xy = _grid(8)
    vals = np.c_[xy[:, 0], np.ones(len(xy))]
    out = M.morans_i(vals, xy, radius=1.01)
    assert out[0] > 0.5 and np.isnan(out[1])
    w = M.spatial_weights(xy, radius=1.01)
    assert (w != w.T).nnz == 0 and w.diagonal().sum() == 0


def test_morans_i_bad_input():
    with pytest.raises(ValueError, match="coords"):
        M.morans_i(np.arange(5.0))
    with pytest.raises(ValueError, match="k"):
        M.spatial_weights(_grid(3), k=20)


# ----------------------------------------------------------------------------- distributions
def test_frechet_identical_zero_and_shift_grows():
    a = _normal()
    assert M.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    d1 = M.frechet_distance(a, _normal(shift=0.5, seed=1))
    d2 = M.frechet_distance(a, _normal(shift=2.0, seed=1))
    assert 0 < d1 < d2
    # mean-shift term: ||mu1 - mu2||^2 = 5 * 2^2 for a pure translation
    assert M.frechet_distance(a, a + 2.0) == pytest.approx(20.0, rel=1e-6)


def test_kid_same_distribution_small_shift_large():
    a, b = _normal(seed=0), _normal(seed=1)
    same, _ = M.kid(a, b, seed=0)
    far, _ = M.kid(a, _normal(shift=2.0, seed=1), seed=0)
    assert abs(same) < 0.05 < far
    assert M.kid(a, b, seed=3) == M.kid(a, b, seed=3)


def test_prdc_identical_and_disjoint():
    a = _normal(100)
    res = M.prdc(a, a, k=5)
    assert res["precision"] == 1.0 and res["recall"] == 1.0 and res["coverage"] == 1.0
    assert res["density"] == pytest.approx(1.0, abs=0.2)
    far = M.prdc(a, a + 100.0, k=5)
    assert far["precision"] == 0.0 and far["recall"] == 0.0 and far["coverage"] == 0.0 and far["density"] == 0.0


def test_standardize_clip_out_of_range_and_diversity():
    real = _normal(200)
    syn = np.vstack([real[:9], real.mean(axis=0) + 10 * real.std(axis=0)])
    rz, sz = M.standardize_on_real(real, syn, clip=5.0)
    assert np.abs(rz.mean(axis=0)).max() < 1e-9 and sz.max() == 5.0
    assert M.out_of_range_share(real, syn) == pytest.approx(0.1)
    mu = real.mean(axis=0)
    assert M.diversity_ratio(real, mu + 0.5 * (real - mu)) == pytest.approx(0.5)


def test_fidelity_report_keys_and_identical():
    a = _normal(60)
    rep = M.fidelity_report(a, a)
    assert rep["frechet"] == pytest.approx(0, abs=1e-6) and rep["precision"] == 1 and rep["recall"] == 1
    assert {"kid", "diversity_ratio", "out_of_range", "coverage", "density"} <= set(rep)


def test_fidelity_floor_real_halves_against_a_shifted_set():
    real = _normal(120)
    floor = M.fidelity_floor(real, real + 2.0, seed=0)
    assert floor["n_floor"] == 60 and "n_real_floor" not in floor
    assert floor == M.fidelity_floor(real, real + 2.0, seed=0)  # seeded halves and draw
    # two real halves are close; the shifted set, scored at the same sizes, is far beyond that floor
    assert floor["frechet_floor"] < 0.25 * floor["frechet_vs_half"] and floor["kid_floor"] < 0.25 * floor["kid_vs_half"]
    assert floor["precision_floor"] > 0.8 and floor["recall_floor"] > 0.8 and floor["precision_vs_half"] < 0.5
    assert 0.8 < floor["diversity_ratio_floor"] < 1.25
    # a fresh draw of the real distribution scores near the floor, far from the shifted set
    same = M.fidelity_floor(real, _normal(120, seed=1), seed=0)
    assert same["frechet_vs_half"] < 0.1 * floor["frechet_vs_half"] and same["precision_vs_half"] > 0.8
    with pytest.raises(ValueError, match="n >= 12"):
        M.fidelity_floor(real[:11], real)
    # floor_halves names the halves: scoring half B as the "synthetic" set reproduces the floor itself
    a, b = M.floor_halves(120, seed=0)
    assert len(a) == len(b) == 60 and not set(a) & set(b)
    as_synthetic = M.fidelity_floor(real, real[b], seed=0)
    for key in ("frechet", "precision", "recall", "coverage"):
        assert as_synthetic[f"{key}_vs_half"] == pytest.approx(floor[f"{key}_floor"])



# ----------------------------------------------------------------------------- patch features
def _nuclei_patch(n_nuclei: int, px: int = 64) -> np.ndarray:
    img = np.empty((px, px, 3), np.uint8)
    img[:] = (235, 190, 215)  # eosin-pink background
    yy, xx = np.mgrid[0:px, 0:px]
    centres = [(10 + 14 * (i % 4), 10 + 14 * (i // 4)) for i in range(n_nuclei)]
    for cx, cy in centres:
        img[(xx - cx) ** 2 + (yy - cy) ** 2 <= 9] = (70, 40, 130)  # haematoxylin-purple disks, r = 3 px
    return np.moveaxis(img, -1, 0)


def test_nuclei_count_on_drawn_disks():
    patches = np.stack([_nuclei_patch(n) for n in (0, 3, 8)])
    stats = M.nuclei_stats(patches)
    assert stats[:, 0].tolist() == [0, 3, 8]
    assert stats[1, 1] == pytest.approx(29, abs=4)  # disk of radius 3 = 29 px
    assert stats[2, 3] > stats[1, 3] > stats[0, 3] == 0


def test_handcrafted_features_shape_names_deterministic():
    rng = np.random.default_rng(0)
    patches = rng.integers(0, 256, size=(4, 3, 32, 32), dtype=np.uint8)
    f = M.handcrafted_features(patches)
    assert f.shape == (4, len(M.handcrafted_feature_names())) and f.dtype == np.float32
    assert np.isfinite(f).all() and np.array_equal(f, M.handcrafted_features(patches))
    white = np.full((1, 3, 32, 32), 255, np.uint8)
    assert M.handcrafted_features(white)[0, M.handcrafted_feature_names().index("tissue_fraction")] == 0
    with pytest.raises(ValueError, match="uint8"):
        M.handcrafted_features(patches.astype(np.float32))
    with pytest.raises(ValueError, match="RGB"):
        M.handcrafted_features(patches[:, :1])


def test_composition_identical_zero_and_different_positive():
    a = np.stack([_nuclei_patch(n) for n in (1, 2, 3, 4)])
    same = M.composition_distances(a, a)
    assert same["nuclei_count_wasserstein"] == 0 and same["nuclear_area_wasserstein"] == 0
    b = np.stack([_nuclei_patch(n) for n in (8, 9, 10, 11)])
    assert M.composition_distances(a, b)["nuclei_count_wasserstein"] == pytest.approx(7.0)


def test_memorisation_detects_copies():
    rng = np.random.default_rng(0)
    train, held = rng.normal(size=(200, 6)), rng.normal(size=(100, 6))
    copies = M.memorisation_audit(train, train[:50] + 1e-6, held)
    fresh = M.memorisation_audit(train, rng.normal(size=(100, 6)), held)
    assert copies["share_below_heldout_q"] == 1.0 and copies["nn_ratio"] < 0.01
    assert fresh["share_below_heldout_q"] < 0.2 and 0.7 < fresh["nn_ratio"] < 1.4


def test_embed_2d_pca_and_umap():
    a, b = _normal(30), _normal(20, shift=3)
    xy = M.embed_2d(a, b, method="pca")
    assert xy.shape == (50, 2)
    # the two groups separate along the first component
    assert abs(xy[:30, 0].mean() - xy[30:, 0].mean()) > 2
    assert M.embed_2d(a, b, method="umap", seed=0).shape == (50, 2)
    with pytest.raises(ValueError, match="method"):
        M.embed_2d(a, b, method="tsne")


def test_finite_mean_skips_nan_and_is_nan_when_nothing_is_finite():
    import warnings

    from c2lst.metrics._regression import finite_mean

    assert finite_mean(np.array([0.2, np.nan, 0.4])) == pytest.approx(0.3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "Mean of empty slice"
        assert np.isnan(finite_mean(np.array([np.nan, np.nan])))
