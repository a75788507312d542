"""The C2L-ST synthesis recipe on arrays: one configuration, section-aware spatial mixup, seeded tiles.

:func:`c2lst.tl.generate`, :func:`c2lst.tl.run` and every condition of :mod:`c2lst.benchmark` draw their mixup
profiles and tile seeds with the functions below, and :func:`c2lst.tl.run` and the benchmark take their defaults
from :data:`RECIPE`, so the benchmark measures the recipe users run. Called on its own, :func:`c2lst.tl.generate`
takes its sampler, steps, guidance, mixup range and neighbours (and, for spot and mixup profiles, its strength)
from :data:`RECIPE`, but makes one tile per profile (``n_per_profile=1``; the recipe's is 2), and
:func:`c2lst.tl.adapt` takes its steps from the central model's configuration, not ``RECIPE.adapt_steps``.
"""
from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import numpy as np

from .._deprecation import renamed_kwargs

# Defaults of the public functions for synthetic rows (tl.predict, tl.run, the benchmark, the CLI), measured on
# her2st (benchmarks/README.md): aligned rows at weight 0.25 gained at every paired fraction < 1, raw rows at
# weight 1 lost at f = 0.25 and 0.5. Predictor.fit itself stays neutral (weight 1, no alignment) for other extra rows.
SYNTHETIC_WEIGHT, SYNTHETIC_ALIGN = 0.25, "moments"
SAMPLER_NAMES = ("dpmsolver++", "ddim", "ddpm")  # the keys of core.sampling.SAMPLERS (checked by a test)
# the reference branch of classifier-free guidance (LocalModel.generate): the modulation off, or the mean profile
GUIDANCE_REFERENCES = ("unconditional", "mean")


@dataclass(frozen=True)
class RecipeConfig:
    """Settings of the synthesis recipe (adapt -> spatial mixup -> generate -> weighted predictor rows).

    The defaults are the setting measured on the her2st benchmark (``benchmarks/README.md``).

    Attributes
    ----------
    n_top_genes
        Conditioning genes (highly variable on the training spots); ``panel_size`` is its deprecated old name.
    adapt_steps
        Adaptation steps of the gene-conditioned modulation.
    decoder_steps
        Local decoder fine-tuning steps (0: the central decoder).
    n_per_profile
        Synthetic tiles per training spot (one spatial-mixup profile each).
    n_neighs
        Spatial neighbours a mixup partner is drawn from (same section); ``n_neighbors`` is its deprecated old name.
    mix_range
        ``(low, high)``: the source spot's weight ``w ~ U(low, high)`` in ``w * x_i + (1 - w) * x_j``.
    generate_steps
        Denoising steps per tile (of the whole schedule; ``strength`` runs its last share).
    sampler
        ``"dpmsolver++"``, ``"ddim"`` or ``"ddpm"`` (:data:`c2lst.core.sampling.SAMPLERS`).
    guidance_scale
        Classifier-free guidance of generation (1: the conditional prediction alone). With ancestral DDPM, 50 steps
        and guidance 1 instead of DPM-Solver++, 20 steps and guidance 2 (her2st, f = 0.25, five folds, seed 0;
        ``benchmarks/README.md``) the tiles' Fréchet distance fell from 46.4 to 31.1, precision rose from 0.18 to
        0.41 and nuclei per tile from 10.6 to 26.3 (41.3 real), and delta r went from 0.35 to 0.34. The gain over real
        pairs was +0.0047 (5/5 folds up) against +0.0026. Over seeds 0 and 1 the gain is +0.0021 ± 0.0037, against
        +0.0019 ± 0.0038 before (three seeds): the same within the seed spread, with closer tiles. Guidance above 1
        smooths the tiles of this small model.
    guidance_reference
        The reference branch guidance contrasts the profile with (``LocalModel.generate``): ``"unconditional"``
        (the modulation off) or ``"mean"`` (the mean training profile: guidance above 1 then amplifies only what
        sets the profile apart from the average spot). Only used with ``guidance_scale`` other than 1.
    strength
        Share of the denoising path run; below 1 each tile starts from its source spot's own patch.
    synthetic_weight
        Ridge sample weight of the synthetic rows (real rows weigh 1), or ``"cv"``.
    synthetic_align
        ``"moments"``: the synthetic rows' features standardised on their own moments; ``None``: not.
    local_unconditional
        Adapt with the modulation's unconditional local component (``tl.adapt(local_unconditional=True)``): on
        her2st (f = 0.25, five folds, three seeds; ``benchmarks/README.md``) the generated tiles' Fréchet distance fell
        from 59.4 to 45.5, and on seed 0 the held-out profile share rose from 0.10 to 0.24 and delta r from 0.32 to
        0.35, at a gain over real pairs within the seed spread of the former one.
    n_comps
        Principal components of the panel the gene encoder reads (``tl.adapt(n_comps=)``; 0: the panel).
    lora_rank
        Rank of LoRA adapters on a copy of the central UNet, trained with the modulation (``tl.adapt(lora_rank=)``,
        needs peft; 0: none).
    """

    n_top_genes: int = 50
    adapt_steps: int = 300
    decoder_steps: int = 200
    n_per_profile: int = 2
    n_neighs: int = 6
    mix_range: tuple[float, float] = (0.5, 1.0)
    generate_steps: int = 50
    sampler: str = "ddpm"
    guidance_scale: float = 1.0
    guidance_reference: str = "unconditional"
    strength: float = 0.8
    synthetic_weight: float | str = SYNTHETIC_WEIGHT
    synthetic_align: str | None = SYNTHETIC_ALIGN
    local_unconditional: bool = True
    n_comps: int = 0
    lora_rank: int = 0

    def __post_init__(self) -> None:
        for name in ("n_top_genes", "adapt_steps", "n_per_profile", "n_neighs", "generate_steps"):
            value = getattr(self, name)
            if not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"RecipeConfig.{name} must be an integer >= 1, got {value!r}.")
        for name in ("decoder_steps", "lora_rank"):
            value = getattr(self, name)
            if not isinstance(value, int | np.integer) or value < 0:
                raise ValueError(f"RecipeConfig.{name} must be an integer >= 0, got {value!r}.")
        check_mix_range(self.mix_range)
        if self.sampler not in SAMPLER_NAMES:
            raise ValueError(f"RecipeConfig.sampler must be one of {list(SAMPLER_NAMES)}, got {self.sampler!r}.")
        if not 0 < self.strength <= 1:
            raise ValueError(f"RecipeConfig.strength must be in (0, 1] (1: from pure noise), got {self.strength}.")
        if not self.guidance_scale >= 0:
            raise ValueError(f"RecipeConfig.guidance_scale must be >= 0, got {self.guidance_scale}.")
        check_guidance_reference(self.guidance_reference, name="RecipeConfig.guidance_reference")

    def to_dict(self) -> dict[str, object]:
        """JSON-safe copy of the settings (``mix_range`` as a list)."""
        return {**asdict(self), "mix_range": list(self.mix_range)}


RecipeConfig.__init__ = renamed_kwargs(panel_size="n_top_genes", n_neighbors="n_neighs")(  # type: ignore[method-assign]
    RecipeConfig.__init__)


def check_guidance_reference(value: str, *, name: str = "`guidance_reference`") -> str:
    """Validate the reference branch of guidance (one of :data:`GUIDANCE_REFERENCES`); return it."""
    if value not in GUIDANCE_REFERENCES:
        raise ValueError(f"{name} must be one of {list(GUIDANCE_REFERENCES)} (the modulation off, or the mean training "
                         f"profile), got {value!r}.")
    return value


def check_mix_range(mix_range: tuple[float, float]) -> tuple[float, float]:
    """Validate ``(low, high)`` with ``0 <= low <= high <= 1``; return it as floats."""
    try:
        low, high = (float(v) for v in mix_range)
    except (TypeError, ValueError):
        raise ValueError(f"`mix_range` must be two numbers (low, high), got {mix_range!r}.") from None
    if not 0 <= low <= high <= 1:
        raise ValueError(f"`mix_range` must satisfy 0 <= low <= high <= 1, got {mix_range!r}.")
    return low, high


RECIPE = RecipeConfig()


@renamed_kwargs(n_neighbors="n_neighs")
def spatial_mixup(expr: np.ndarray, xy: np.ndarray, groups: np.ndarray | None = None, *, n_per_profile: int,
                  n_neighs: int = RECIPE.n_neighs, mix_range: tuple[float, float] = RECIPE.mix_range,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mix each training profile with a random spatial neighbour from its own section.

    Profile ``i`` gets ``n_per_profile`` partners ``j`` drawn among its ``n_neighs`` nearest spots of the
    same group (section: sections differ in stain, so a partner never comes from another one) and weights
    ``w ~ U(*mix_range)``; the mixed profile is ``w * x_i + (1 - w) * x_j``. Rows come group by group
    (groups in sorted order), each spot's copies together.

    Parameters
    ----------
    expr
        ``(n, g)`` expression (log-normalised or standardised; the mixture is linear).
    xy
        ``(n, 2)`` spot positions.
    groups
        ``(n,)`` section of each spot; ``None``: one section.
    n_per_profile
        Mixed profiles per spot.
    n_neighs
        Neighbourhood size (capped at the group's size minus one; ``n_neighbors`` is its deprecated old name).
    mix_range
        Range of the source spot's weight.
    seed
        Seed of the partners and weights.

    Returns
    -------
    ``(mixed profiles float32, source index, partner index, weight)``, indices into ``expr``.

    Raises
    ------
    ValueError
        When no group has two spots, or on shapes that do not match.
    """
    expr, xy = np.asarray(expr), np.asarray(xy, dtype=np.float64)
    groups = np.zeros(len(expr), dtype=int) if groups is None else np.asarray(groups)
    if xy.ndim != 2 or len(xy) != len(expr) or len(groups) != len(expr):
        raise ValueError(f"mixup needs one position and one group per profile: expr {expr.shape}, xy {xy.shape}, "
                         f"groups {groups.shape}.")
    if not isinstance(n_per_profile, int | np.integer) or n_per_profile < 1:
        raise ValueError(f"`n_per_profile` must be an integer >= 1, got {n_per_profile!r}.")
    low, high = check_mix_range(mix_range)
    from scipy.spatial import cKDTree

    from .seeding import derive_seed  # torch: loaded on use, so the command line starts fast

    rng = np.random.default_rng(derive_seed(seed, "mixup"))
    src_all, partner_all, alone = [], [], []
    for g in np.unique(groups):
        rows = np.flatnonzero(groups == g)
        if len(rows) < 2:
            alone.append(str(g))
            continue
        k = min(n_neighs, len(rows) - 1)
        _, nn = cKDTree(xy[rows]).query(xy[rows], k=k + 1)
        src = np.repeat(np.arange(len(rows)), n_per_profile)
        partner = nn[src, 1 + rng.integers(0, k, len(src))]
        src_all.append(rows[src])
        partner_all.append(rows[partner])
    if not src_all:
        raise ValueError("mixup needs at least two training spots in one section; train on more spots or use "
                         "source='spots'.")
    if alone:
        warnings.warn(f"{len(alone)} section(s) with one training spot ({alone[:3]}) give no mixup profile: a partner "
                      "comes from the same section. Pair more of their spots or use source='spots'.", UserWarning,
                      stacklevel=3)
    src, partner = np.concatenate(src_all), np.concatenate(partner_all)
    w = rng.uniform(low, high, len(src))
    mixed = (w[:, None] * expr[src] + (1 - w[:, None]) * expr[partner]).astype(np.float32)
    return mixed, src, partner, w


def synthesis_seeds(seed: int, n: int) -> np.ndarray:
    """Seed of each of ``n`` synthetic tiles: tile ``i`` is sampled from ``derive_seed(seed, "synthetic", i)``."""
    from .seeding import derive_seed

    return np.array([derive_seed(seed, "synthetic", i) for i in range(n)], dtype=np.int64)
