"""Diffusion core on the tiny configuration: real training, sampling and persistence code paths, CPU, 1 thread."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from c2lst.core import CONFIGS, CentralModel, DiffusionConfig, get_config
from c2lst.core.adaptation import adapt_local
from c2lst.core.checkpoint import state_sha256
from c2lst.core.models import LocalModel
from c2lst.core.modulation import GeneModulation
from c2lst.core.networks import build_autoencoder, build_unet
from c2lst.core.training import _Run, pretrain_central

TINY = get_config("tiny")
N_GENES = 12


def he_tiles(n: int, px: int = 32, seed: int = 0, *, dark: np.ndarray | None = None) -> np.ndarray:
    """Synthetic H&E-like tiles: pink stroma with purple nuclei; ``dark[i]`` gives tile i dense dark nuclei."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:px, :px]
    out = np.empty((n, 3, px, px), np.uint8)
    for i in range(n):
        img = np.empty((px, px, 3), float)
        img[:] = (235, 170, 200) if dark is None or not dark[i] else (150, 90, 160)
        img += rng.normal(0, 6, img.shape)
        for _ in range(rng.integers(3, 8) if dark is None or not dark[i] else rng.integers(10, 16)):
            cy, cx, r = rng.uniform(0, px), rng.uniform(0, px), rng.uniform(1.5, 3.5)
            img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = (80, 40, 120)
        out[i] = np.clip(img, 0, 255).astype(np.uint8).transpose(2, 0, 1)
    return out


def paired_spots(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Spots whose expression determines the tissue: type 1 (dark, nuclei-dense) vs type 0 (light stroma)."""
    rng = np.random.default_rng(seed)
    kind = rng.random(n) < 0.5
    genes = rng.normal(0, 0.3, (n, N_GENES)).astype(np.float32)
    genes[:, :4] += np.where(kind, 1.5, -1.5)[:, None]
    return he_tiles(n, seed=seed + 1, dark=kind), genes, kind


def _panel(n: int = N_GENES) -> dict:
    return {"genes": [f"g{i}" for i in range(n)], "identity": f"panel-{n}"}


@pytest.fixture(scope="module")
def central() -> CentralModel:
    torch.set_num_threads(1)
    tiles = np.concatenate([he_tiles(48, seed=0), he_tiles(48, seed=1, dark=np.ones(48, bool))])
    return pretrain_central(tiles, TINY, steps=200, batch_size=16, lr=5e-3, seed=0, mixed_precision="no", out=None,
                            resume=False, checkpoint_every=1, progress=False)


@pytest.fixture(scope="module")
def adapted(central: CentralModel) -> tuple[LocalModel, str]:
    torch.set_num_threads(1)
    before = state_sha256(central.autoencoder.state_dict(), central.unet.state_dict())
    patches, genes, _ = paired_spots(96, seed=10)
    local = adapt_local(central, patches, genes, _panel(), steps=150, batch_size=16, lr=1e-2, cond_dropout=0.1,
                        lora_rank=0, seed=0)
    return local, before


def test_configs_roundtrip_and_unknown():
    for cfg in CONFIGS.values():
        assert DiffusionConfig.from_dict(cfg.to_dict()) == cfg
        assert cfg.tile_px // cfg.latent_px == 2 ** len(cfg.ae_channels)
    assert get_config(TINY) is TINY
    with pytest.raises(ValueError, match="unknown model configuration"):
        get_config("huge")
    with pytest.raises(ValueError, match="unknown configuration fields"):
        DiffusionConfig.from_dict(TINY.to_dict() | {"bogus": 1})


@pytest.mark.parametrize("name", ["tiny", "cpu", "gpu"])
def test_adapter_at_most_5_percent(name):
    cfg = get_config(name)
    unet, ae = build_unet(cfg), build_autoencoder(cfg)
    mod = GeneModulation.for_unet(unet, cfg.n_top_genes, hidden=cfg.gene_hidden, cond_dim=cfg.cond_dim)
    n_central = sum(p.numel() for p in unet.parameters()) + sum(p.numel() for p in ae.parameters())
    n_adapter = sum(p.numel() for p in mod.parameters())
    assert 0 < n_adapter <= 0.05 * n_central


@pytest.mark.parametrize("local_component", [False, True])
def test_zero_init_equals_central(central, local_component):
    mod = GeneModulation.for_unet(central.unet, N_GENES, hidden=TINY.gene_hidden, cond_dim=TINY.cond_dim,
                                  local=local_component)
    assert mod.local is local_component and (mod.local_film is not None) is local_component
    local = LocalModel(central, mod, _panel())
    g = torch.Generator().manual_seed(3)
    z = torch.randn(5, 4, TINY.latent_px, TINY.latent_px, generator=g)
    t = torch.tensor([0, 10, 200, 500, 999])
    genes = torch.randn(5, N_GENES, generator=g) * 3
    with torch.no_grad():
        assert torch.equal(local.eps(z, t, genes), central.unet(z, t).sample)
        assert torch.equal(local.eps(z, t, genes, torch.tensor([1.0, 0, 1, 0, 0])), central.unet(z, t).sample)
    # and the sampler path end to end: identical tiles with and without the (untrained) adapter
    a = local.generate(genes.numpy(), seeds=[1, 2, 3, 4, 5], steps=3, guidance_scale=1.0)
    b = local.generate(genes.numpy(), seeds=[1, 2, 3, 4, 5], steps=3, guidance_scale=0.0)
    assert np.array_equal(a, b)


def test_unadapted_is_the_central_model(central):
    local = LocalModel.unadapted(central)
    g = torch.Generator().manual_seed(4)
    z = torch.randn(3, 4, TINY.latent_px, TINY.latent_px, generator=g)
    t = torch.tensor([5, 300, 900])
    with torch.no_grad():
        assert torch.equal(local.eps(z, t, torch.randn(3, 1, generator=g)), central.unet(z, t).sample)
    assert local.n_genes == 1 and local.n_trainable < 0.05 * central.n_params


def test_adaptation_leaves_central_unchanged(central, adapted):
    local, before = adapted
    assert state_sha256(central.autoencoder.state_dict(), central.unet.state_dict()) == before
    assert not any(p.requires_grad for p in central.unet.parameters())
    assert local.n_trainable <= 0.05 * central.n_params


def test_adaptation_is_seeded_and_goes_through_accelerate(central, monkeypatch):
    """Same seed, same adapter and local decoder (CPU); the optimiser steps and clipping are accelerate's."""
    from accelerate import Accelerator

    calls = {"prepare": 0, "clip": 0}
    prepare, clip = Accelerator.prepare, Accelerator.clip_grad_norm_

    def counted_prepare(self, *args, **kwargs):
        calls["prepare"] += 1
        return prepare(self, *args, **kwargs)

    def counted_clip(self, *args, **kwargs):
        calls["clip"] += 1
        return clip(self, *args, **kwargs)

    monkeypatch.setattr(Accelerator, "prepare", counted_prepare)
    monkeypatch.setattr(Accelerator, "clip_grad_norm_", counted_clip)
    patches, genes, _ = paired_spots(16, seed=3)

    def run(seed: int) -> str:
        local = adapt_local(central, patches, genes, _panel(), steps=3, batch_size=4, lr=1e-2, cond_dropout=0.1,
                            lora_rank=0, seed=seed, decoder_steps=2)
        return state_sha256(local.modulation.state_dict(), local.decoder.state_dict())

    first = run(0)
    assert calls == {"prepare": 2, "clip": 5}  # adapter + decoder prepared; 3 + 2 clipped steps
    assert run(0) == first and run(1) != first


def test_conditioning_changes_images(adapted):
    local, _ = adapted
    profiles = np.zeros((2, N_GENES), np.float32)
    profiles[0, :4], profiles[1, :4] = 1.5, -1.5  # dark/nuclei-dense vs light stroma
    seeds = list(range(8))
    dark = local.generate(np.repeat(profiles[:1], 8, 0), seeds=seeds, steps=10, guidance_scale=2.0)
    light = local.generate(np.repeat(profiles[1:], 8, 0), seeds=seeds, steps=10, guidance_scale=2.0)
    diff = np.abs(dark.astype(float) - light.astype(float)).mean()
    assert diff > 15, diff
    assert dark.mean() < light.mean() - 15, (dark.mean(), light.mean())


def test_guidance_against_the_mean_profile(adapted):
    local, _ = adapted
    profiles = np.zeros((2, N_GENES), np.float32)
    profiles[0, :4], profiles[1, :4] = 1.5, -1.5
    seeds, mean = [5, 6], np.zeros((2, N_GENES), np.float32)

    def tiles(genes: np.ndarray, g: float, ref: str = "mean") -> np.ndarray:
        return local.generate(genes, seeds=seeds, steps=4, guidance_scale=g, guidance_reference=ref).astype(float)

    # guidance 1 has no reference branch; guidance 0 is the reference: the mean profile's conditional model
    assert np.array_equal(tiles(profiles, 1.0), tiles(profiles, 1.0, "unconditional"))
    assert np.array_equal(tiles(profiles, 0.0), tiles(mean, 1.0))
    # the mean profile is its own reference, so guidance leaves its tiles as they are (up to batching round-off)
    assert np.abs(tiles(mean, 3.0) - tiles(mean, 1.0)).max() <= 1
    assert np.abs(tiles(profiles, 2.0) - tiles(profiles, 2.0, "unconditional")).mean() > 1
    # it amplifies what sets the two profiles apart: the dark/light gap widens
    dark, light = np.repeat(profiles[:1], 2, 0), np.repeat(profiles[1:], 2, 0)
    gap = {g: tiles(light, g).mean() - tiles(dark, g).mean() for g in (1.0, 2.0)}
    assert gap[2.0] > gap[1.0] > 0, gap
    with pytest.raises(ValueError, match="guidance_reference"):
        local.generate(profiles, seeds=seeds, steps=2, guidance_reference="zero")


def test_true_pairs_fit_better_than_shuffled(adapted):
    local, _ = adapted
    patches, genes, kind = paired_spots(48, seed=99)  # held-out spots
    shuffled = genes[np.random.default_rng(0).permutation(len(genes))]
    true_loss = local.denoising_loss(patches, genes, seed=1, n_draws=6)
    shuffled_loss = local.denoising_loss(patches, shuffled, seed=1, n_draws=6)
    central_loss = local.denoising_loss(patches, genes, seed=1, n_draws=6, conditional=False)
    assert true_loss < 0.98 * shuffled_loss, (true_loss, shuffled_loss)
    assert true_loss < central_loss
    # per pair and draw, on the same seeded timesteps for every conditioning
    own, t = local.denoising_losses(patches, genes, seed=1, n_draws=6)
    other, t_other = local.denoising_losses(patches, shuffled, seed=1, n_draws=6)
    assert own.shape == t.shape == (48, 6) and np.array_equal(t, t_other)
    assert np.isclose(own.mean(), true_loss) and np.isclose(other.mean(), shuffled_loss)
    assert t.min() >= 0 and t.max() < local.central.config.num_train_timesteps


def test_generation_deterministic_and_seeded(adapted, tmp_path):
    local, _ = adapted
    genes = paired_spots(4, seed=5)[1]
    for sampler, steps in (("dpmsolver++", 4), ("ddim", 4), ("ddpm", 6)):
        a = local.generate(genes, seeds=[0, 1, 2, 3], sampler=sampler, steps=steps, batch_size=3)
        b = local.generate(genes, seeds=[0, 1, 2, 3], sampler=sampler, steps=steps, batch_size=3)
        assert a.dtype == np.uint8 and a.shape == (4, 3, TINY.tile_px, TINY.tile_px)
        assert np.array_equal(a, b)
        c = local.generate(genes, seeds=[10, 11, 12, 13], sampler=sampler, steps=steps)
        assert not np.array_equal(a, c)
    with pytest.raises(ValueError, match="unknown sampler"):
        local.generate(genes, seeds=[0, 1, 2, 3], sampler="euler")
    with pytest.raises(ValueError, match="one seed per profile"):
        local.generate(genes, seeds=[0])
    with pytest.raises(ValueError, match="NaN"):
        local.generate(np.full_like(genes, np.nan), seeds=[0, 1, 2, 3])


def test_save_load_bit_identical(central, adapted, tmp_path):
    local, _ = adapted
    genes = paired_spots(3, seed=7)[1]
    before = local.generate(genes, seeds=[5, 6, 7], steps=4)
    central.save(tmp_path / "central")
    local.save(tmp_path / "local")
    central2 = CentralModel.load(tmp_path / "central")
    local2 = LocalModel.load(tmp_path / "local", central2)
    assert central2.weights_sha256 == central.weights_sha256
    assert np.array_equal(local2.generate(genes, seeds=[5, 6, 7], steps=4), before)
    assert "CentralModel(config='tiny'" in repr(central2) and "LocalModel(" in repr(local2)
    with pytest.raises(ValueError, match="already exists"):
        local.save(tmp_path / "local")


def test_corrupt_or_mismatched_files(central, adapted, tmp_path):
    local, _ = adapted
    local.save(tmp_path / "local")
    central.save(tmp_path / "central")
    # another central model (different weights) -> refused
    other = CentralModel(build_autoencoder(TINY), build_unet(TINY), TINY, central.scaling_factor)
    with pytest.raises(ValueError, match="another central model"):
        LocalModel.load(tmp_path / "local", other)

    # another gene panel -> refused
    class Panel:
        def identity(self) -> str:
            return "something-else"

    with pytest.raises(ValueError, match="another gene panel"):
        LocalModel.load(tmp_path / "local", central, panel=Panel())
    # truncated adapter weights -> refused
    weights = tmp_path / "local" / "adapter.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(ValueError, match="truncated or modified"):
        LocalModel.load(tmp_path / "local", central)
    # truncated central weights -> refused
    unet = tmp_path / "central" / "unet" / "diffusion_pytorch_model.safetensors"
    unet.write_bytes(unet.read_bytes()[: len(unet.read_bytes()) // 2])
    with pytest.raises(ValueError, match="truncated or modified"):
        CentralModel.load(tmp_path / "central")
    with pytest.raises(ValueError, match="not found"):
        CentralModel.load(tmp_path / "nowhere")
    (tmp_path / "central" / "c2lst_central.json").write_text("{not json")
    with pytest.raises(ValueError, match="corrupt"):
        CentralModel.load(tmp_path / "central")


def test_features(central):
    patches = he_tiles(5, px=48, seed=3)
    f1 = central.features(patches, t=50, seed=0, batch_size=2)
    f2 = central.features(patches.transpose(0, 2, 3, 1), t=50, seed=0, batch_size=2)
    assert f1.shape == (5, sum(TINY.unet_channels) + TINY.unet_channels[-1]) and f1.dtype == np.float32
    assert np.array_equal(f1, f2) and np.isfinite(f1).all()
    assert not np.array_equal(f1, central.features(patches, t=50, seed=1, batch_size=2))
    np.testing.assert_allclose(f1, central.features(patches, t=50, seed=0, batch_size=5), atol=1e-5)
    with pytest.raises(ValueError, match="uint8"):
        central.features(patches.astype(np.float32))
    with pytest.raises(ValueError, match="`t`"):
        central.features(patches, t=1000)


def _train(tiles: np.ndarray, out: Path | None, *, resume: bool = False) -> CentralModel:
    return pretrain_central(tiles, TINY, steps=12, batch_size=8, lr=1e-3, seed=3, mixed_precision="no", out=out,
                            resume=resume, checkpoint_every=2, progress=False)


# 4 autoencoder steps then 8 unet steps, a checkpoint every 2: interrupt right after phase 1, and inside phase 2
@pytest.mark.parametrize(("stop_at", "left"), [(5, ["step-2", "step-4"]), (9, ["step-6", "step-8"])])
def test_resume_equals_uninterrupted(tmp_path, monkeypatch, stop_at, left):
    tiles = he_tiles(24, seed=4)
    full = _train(tiles, tmp_path / "full")
    real_step = _Run.unet_step

    def crash(self, k):
        if k == stop_at:
            raise KeyboardInterrupt
        return real_step(self, k)

    with monkeypatch.context() as m:
        m.setattr(_Run, "unet_step", crash)
        with pytest.raises(KeyboardInterrupt):
            _train(tiles, tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == left
    with pytest.raises(ValueError, match="unfinished run"):
        from c2lst.tl._pretrain import _prepare_out

        _prepare_out(tmp_path / "run", resume=False, overwrite=False, config=TINY, run={})
    resumed = _train(tiles, tmp_path / "run", resume=True)
    assert resumed.weights_sha256 == full.weights_sha256
    assert resumed.scaling_factor == full.scaling_factor
    # a different run must not resume from these checkpoints
    with pytest.raises(ValueError, match="belongs to another run"):
        _train(he_tiles(24, seed=5), tmp_path / "run", resume=True)
    # a truncated latest checkpoint is skipped for the intact older one (same result); temp folders of a kill go
    latest = max((tmp_path / "run" / "checkpoints").iterdir(), key=lambda p: int(p.name.split("-")[1]))
    state = latest / "state.safetensors"
    state.write_bytes(state.read_bytes()[:1000])
    (tmp_path / "run" / "checkpoints" / ".step-99.tmp-killed").mkdir()
    with pytest.warns(UserWarning, match="truncated or modified"):
        again = _train(tiles, tmp_path / "run", resume=True)
    assert again.weights_sha256 == full.weights_sha256
    assert not list((tmp_path / "run" / "checkpoints").glob(".step-*"))


def test_features_depend_on_the_patch_not_its_position():
    from c2lst.core.configs import get_config
    from c2lst.core.training import pretrain_central

    rng = np.random.default_rng(0)
    tiles = rng.integers(0, 255, size=(16, 3, 32, 32), dtype=np.uint8)
    model = pretrain_central(tiles, get_config("tiny"), steps=2, batch_size=4, lr=1e-3, seed=0,
                             mixed_precision="no", out=None, resume=False, checkpoint_every=10, progress=False)
    a = model.features(tiles[:4], seed=3)
    b = model.features(tiles[[3, 2, 1, 0]], seed=3)
    np.testing.assert_allclose(a[::-1], b, rtol=1e-5, atol=1e-5)
    assert not np.allclose(model.features(tiles[:4], seed=4), a)


def _recon_error(local: LocalModel, tiles: np.ndarray) -> float:
    from c2lst.core.images import to_model

    z = local.central.encode(to_model(tiles, TINY.tile_px))
    return float(np.abs(local.decode(z).astype(float) - tiles.astype(float)).mean())


@pytest.fixture(scope="module")
def restained(central: CentralModel) -> tuple[LocalModel, np.ndarray, str]:
    """A local model with a local decoder, adapted on tiles of another stain (red and blue swapped)."""
    torch.set_num_threads(1)
    before = state_sha256(central.autoencoder.state_dict(), central.unet.state_dict())
    patches, genes, _ = paired_spots(64, seed=20)
    blue = np.ascontiguousarray(patches[:, ::-1])
    local = adapt_local(central, blue, genes, _panel(), steps=20, batch_size=16, lr=1e-2, cond_dropout=0.1,
                        lora_rank=0, seed=0, decoder_steps=150)
    return local, blue, before


def test_local_decoder_learns_the_local_stain(central, restained):
    local, blue, before = restained
    assert local.decoder is not None and local.summary["decoder"]["steps"] == 150
    held_out = np.ascontiguousarray(paired_spots(32, seed=21)[0][:, ::-1])  # same stain, unseen tiles
    central_err = _recon_error(LocalModel(central, local.modulation, local.panel), held_out)
    local_err = _recon_error(local, held_out)
    assert local_err < 0.7 * central_err, (local_err, central_err)
    assert local.summary["decoder"]["loss_last"] < local.summary["decoder"]["loss_first"]
    # the central model is untouched and the encoder (latent space) is shared
    assert state_sha256(central.autoencoder.state_dict(), central.unet.state_dict()) == before
    assert state_sha256(local.decoder.encoder.state_dict()) == state_sha256(central.autoencoder.encoder.state_dict())
    assert local.n_conditioned <= 0.05 * central.n_params < local.n_trainable
    assert "local_decoder=True" in repr(local)


def test_local_decoder_save_load(central, restained, tmp_path):
    local, _, _ = restained
    genes = paired_spots(3, seed=8)[1]
    before = local.generate(genes, seeds=[1, 2, 3], steps=4)
    local.save(tmp_path / "local")
    again = LocalModel.load(tmp_path / "local", central)
    assert again.decoder is not None
    assert np.array_equal(again.generate(genes, seeds=[1, 2, 3], steps=4), before)
    plain = LocalModel(central, local.modulation, local.panel)
    assert not np.array_equal(plain.generate(genes, seeds=[1, 2, 3], steps=4), before)
    plain.save(tmp_path / "plain")
    assert LocalModel.load(tmp_path / "plain", central).decoder is None


def test_image_to_image_strength(adapted):
    local, _ = adapted
    from c2lst.core.images import to_model

    init, genes, _ = paired_spots(6, seed=30)
    seeds = list(range(6))
    recon = local.decode(local.central.encode(to_model(init, TINY.tile_px))).astype(float)  # what strength -> 0 gives

    def distance(strength: float) -> float:
        out = local.generate(genes, seeds=seeds, steps=10, init_tiles=init, strength=strength)
        return float(np.abs(out.astype(float) - recon).mean())

    low, mid, full = distance(0.1), distance(0.6), distance(1.0)
    assert low < mid < full and low < 0.5 * full, (low, mid, full)
    a = local.generate(genes, seeds=seeds, steps=10, init_tiles=init, strength=0.5)
    assert np.array_equal(a, local.generate(genes, seeds=seeds, steps=10, init_tiles=init, strength=0.5, batch_size=4))
    # strength 1 ignores the starting tiles
    assert np.array_equal(local.generate(genes, seeds=seeds, steps=4, init_tiles=init, strength=1.0),
                          local.generate(genes, seeds=seeds, steps=4))
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="strength"):
            local.generate(genes, seeds=seeds, init_tiles=init, strength=bad)
    with pytest.raises(ValueError, match="init_tiles"):
        local.generate(genes, seeds=seeds, strength=0.5)
    with pytest.raises(ValueError, match="one tile per profile"):
        local.generate(genes, seeds=seeds, init_tiles=init[:2], strength=0.5)


def test_tissue_tiles_train_an_unconditional_local_component(central, monkeypatch):
    """Tissue tiles: unconditional samples in each batch, a zero-initialised local component, the local decoder."""
    from c2lst.core import adaptation

    patches, genes, _ = paired_spots(16, seed=40)
    blue = np.ascontiguousarray(he_tiles(64, seed=41)[:, ::-1])  # the lab's other stain, no expression
    seen = {}
    real_decoder = adaptation.adapt_decoder

    def spy(autoencoder, tiles, **kw):
        seen["decoder_tiles"] = len(tiles)
        return real_decoder(autoencoder, tiles, **kw)

    monkeypatch.setattr(adaptation, "adapt_decoder", spy)
    kw = {"steps": 60, "batch_size": 16, "lr": 1e-2, "cond_dropout": 0.1, "lora_rank": 0, "decoder_steps": 2}
    local = adapt_local(central, patches, genes, _panel(), seed=0, tissue=blue, **kw)
    assert seen["decoder_tiles"] == 16 + 64  # spot patches and tissue tiles
    assert local.summary["n_tissue"] == 64 and local.summary["tissue_per_batch"] == 8
    assert local.modulation.local and float(local.modulation.local_time.detach().abs().sum()) > 0
    # the unconditional model learned the local morphology: on unseen tiles of that stain it denoises better
    held_out = np.ascontiguousarray(he_tiles(24, seed=42)[:, ::-1])
    none = np.zeros((24, N_GENES), np.float32)
    plain = LocalModel(central, GeneModulation.for_unet(central.unet, N_GENES, hidden=TINY.gene_hidden,
                                                        cond_dim=TINY.cond_dim), _panel())
    ours = local.denoising_loss(held_out, none, seed=2, n_draws=4, conditional=False)
    theirs = plain.denoising_loss(held_out, none, seed=2, n_draws=4, conditional=False)
    assert ours < theirs, (ours, theirs)
    # seeded; without tissue the adapter is the one adapted without the option, with no local component
    again = adapt_local(central, patches, genes, _panel(), seed=0, tissue=blue, **kw)
    assert state_sha256(again.modulation.state_dict()) == state_sha256(local.modulation.state_dict())
    short = kw | {"steps": 3, "decoder_steps": 0}
    without = adapt_local(central, patches, genes, _panel(), seed=0, **short)
    empty = adapt_local(central, patches, genes, _panel(), seed=0, tissue=blue[:0], **short)
    assert not without.modulation.local and "n_tissue" not in without.summary
    assert state_sha256(without.modulation.state_dict()) == state_sha256(empty.modulation.state_dict())
    for bad, match in (({"tissue_share": 1.0}, "tissue_share"), ({"batch_size": 1}, "batch_size")):
        with pytest.raises(ValueError, match=match):
            adapt_local(central, patches, genes, _panel(), seed=0, tissue=blue, **(short | bad))


def test_local_component_save_load_and_older_adapters(central, tmp_path):
    import json

    patches, genes, _ = paired_spots(8, seed=50)
    blue = np.ascontiguousarray(he_tiles(8, seed=51)[:, ::-1])
    kw = {"steps": 3, "batch_size": 4, "lr": 1e-2, "cond_dropout": 0.1, "lora_rank": 0, "seed": 0}
    local = adapt_local(central, patches, genes, _panel(), tissue=blue, **kw)
    before = local.generate(genes[:3], seeds=[1, 2, 3], steps=3, guidance_scale=0.0)  # local-unconditional
    assert not np.array_equal(before, LocalModel(central, GeneModulation.for_unet(
        central.unet, N_GENES, hidden=TINY.gene_hidden, cond_dim=TINY.cond_dim), _panel()).generate(
        genes[:3], seeds=[1, 2, 3], steps=3, guidance_scale=0.0))  # no longer the central model
    local.save(tmp_path / "local")
    back = LocalModel.load(tmp_path / "local", central)
    assert back.modulation.local
    assert np.array_equal(back.generate(genes[:3], seeds=[1, 2, 3], steps=3, guidance_scale=0.0), before)
    # an adapter written before the local component: no "local" setting, no such weights
    plain = adapt_local(central, patches, genes, _panel(), **kw)
    plain.save(tmp_path / "old")
    manifest = tmp_path / "old" / "c2lst_local.json"
    meta = json.loads(manifest.read_text())
    del meta["modulation"]["local"]
    manifest.write_text(json.dumps(meta))
    old = LocalModel.load(tmp_path / "old", central)
    assert not old.modulation.local
    assert state_sha256(old.modulation.state_dict()) == state_sha256(plain.modulation.state_dict())
    # a manifest claiming a local component the weights lack is refused
    meta["modulation"]["local"] = True
    manifest.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="do not fit"):
        LocalModel.load(tmp_path / "old", central)


def test_lora_tissue_stage_round_trips_and_leaves_the_central_model(central, tmp_path, monkeypatch):
    """LoRA on a copy of the UNet, trained with the tissue tiles: zero-init, saved without pixels, loaded bit for bit."""
    pytest.importorskip("peft")
    from safetensors.numpy import load_file

    from c2lst.core.models import add_lora

    before = state_sha256(central.autoencoder.state_dict(), central.unet.state_dict())
    z, t = torch.randn(2, TINY.latent_channels, TINY.latent_px, TINY.latent_px), torch.tensor([10, 500])
    with torch.no_grad():  # zero-initialised: the LoRA copy is the central UNet until trained
        assert torch.equal(add_lora(central.unet, 2)(z, t).sample, central.unet(z, t).sample)
    patches, genes, _ = paired_spots(16, seed=50)
    tissue = np.ascontiguousarray(he_tiles(32, seed=51)[:, ::-1])
    local = adapt_local(central, patches, genes, _panel(), steps=6, batch_size=8, lr=1e-2, cond_dropout=0.1,
                        lora_rank=2, seed=0, tissue=tissue)
    assert state_sha256(central.autoencoder.state_dict(), central.unet.state_dict()) == before
    trained = [v for k, v in local.lora_unet.state_dict().items() if "lora_B" in k]
    assert trained and any(float(v.abs().sum()) > 0 for v in trained)  # the LoRA weights moved
    local.save(tmp_path / "local")
    arrays = load_file(str(tmp_path / "local" / "adapter.safetensors"))
    assert any(k.startswith("lora.") for k in arrays)
    assert all(a.ndim < 4 or a.shape[-1] <= 3 for a in arrays.values())  # weights, never (n, 3, px, px) tiles
    assert sum(a.size for a in arrays.values()) < patches.size + tissue.size
    loaded = LocalModel.load(tmp_path / "local", central)
    seeds = [3, 4]
    assert np.array_equal(loaded.generate(genes[:2], seeds=seeds, steps=3), local.generate(genes[:2], seeds=seeds, steps=3))
    # without peft a LoRA adapter is refused with a clear error, at adaptation and at loading
    monkeypatch.setitem(sys.modules, "peft", None)
    with pytest.raises(ValueError, match="peft"):
        LocalModel.load(tmp_path / "local", central)
    with pytest.raises(ValueError, match="peft"):
        adapt_local(central, patches, genes, _panel(), steps=1, batch_size=8, lr=1e-2, cond_dropout=0.1, lora_rank=2,
                    seed=0)
