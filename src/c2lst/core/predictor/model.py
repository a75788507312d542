"""The predictor: a patch encoder, per-group feature standardisation and a regression head (real + extra rows)."""
from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ...metrics import check_patches, handcrafted_features, pearson_per_gene
from .encoders import FeatureModel, PatchCNN, ResNetEncoder, _batches, _load_checkpoint, _to_tensor
from .extra_rows import (
    _X_STD_FLOOR,
    _Y_STD_FLOOR,
    EXTRA_WEIGHTS,
    _check_augment,
    _check_groups,
    _fold_rows,
    _group_labels,
    _moments,
    _pooled_group_std,
    _restandardised_fold,
    _row_weights,
    _standardise_extra,
    _standardise_per_group,
    augment_patches,
    check_extra_options,
)
from .heads import HEADS, MLPHead
from .persistence import FORMAT, load_predictor, save_predictor
from .ridge import RIDGE_ALPHAS, group_cv_alpha, ridge_per_target

ENCODERS = ("handcrafted", "cnn", "central")
ALPHA_CV = ("loo", "groups")  # how the ridge penalties are chosen


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


class Predictor:
    """Patch encoder + regression head predicting log-normalised expression of a gene panel.

    Parameters
    ----------
    encoder
        ``"handcrafted"``, ``"cnn"``, ``"central"``, the path of a ResNet ``.safetensors`` checkpoint, a
        :class:`ResNetEncoder` or a feature callable.
    handcrafted
        Append handcrafted features to a learned encoder's (``True``), or not (``False``); a callable is used
        in place of :func:`c2lst.metrics.handcrafted_features` (e.g. a cached version). ``None``: ``True``
        for frozen encoders, ``False`` for ``"cnn"``.
    head
        ``"ridge"`` or ``"mlp"``.
    genes
        Names of the predicted genes, in target-column order (stored with the model).
    central
        Model with a ``features`` method; required for ``encoder="central"``: a ``CentralModel``, or an adapted
        ``LocalModel`` (the features of the locally adapted model, without any profile).
    central_t
        Diffusion timestep at which central features are read.
    seed
        Seed of every random choice (initialisation, batches, mixup).
    epochs, batch_size, lr, weight_decay
        Optimisation of the CNN encoder and of the MLP head.
    cnn_width, feat_dim
        Size of the CNN encoder.
    hidden
        Hidden units of the MLP head.
    alphas
        Ridge penalties searched (per gene) by cross-validation on the real rows.
    alpha_cv
        ``"loo"``: penalties by leave-one-out CV (the default); ``"groups"``: by leave-one-group-out CV over the
        ``groups`` given to :meth:`fit` (e.g. sections; at least two). Spots of one section are correlated, so
        leave-one-out favours small penalties that fit within-section structure: on the her2st benchmark (f = 0.25,
        five folds) that cost the diffusion models' 448 features about half their held-out r (0.144 against 0.276
        with the handcrafted ones appended), while the 35 handcrafted features did about as well either way (0.325
        against 0.322; ``benchmarks/README.md``).
    mixup_alpha
        Beta(``mixup_alpha``, ``mixup_alpha``) mixing weights of feature-space mixup rows.
    batch_features
        Batch size when encoding patches with a network.
    group_norm
        Standardise each group's features (e.g. each section's or slide's) on that group's own patches, and centre
        the training targets per group, so the head learns how expression varies *within* a section from how the
        tissue varies within it. This removes between-slide shifts in stain and texture. Each group's feature sd is
        shrunk toward the training spots' pooled within-group sd (weight :data:`GROUP_STD_PRIOR` patches against the
        group's own), so a section more homogeneous than the training ones (one tissue type, few spots) is not
        blown up. Groups are given to :meth:`fit` (``groups``, ``extra_groups``) and :meth:`predict` (``groups``;
        ``None``: all patches are one group, e.g. one new slide); each needs at least :data:`MIN_GROUP_ROWS`
        patches. Predictions are centred on the training mean. Frozen encoders only; extra rows are always
        standardised on their own group's moments (``extra_align`` has no further effect). ``extra_weight="cv"``
        holds out one group at a time.
    """

    def __init__(self, *, encoder: str | Path | ResNetEncoder | Callable[[np.ndarray], np.ndarray] = "cnn",
                 handcrafted: bool | Callable[[np.ndarray], np.ndarray] | None = None, head: str = "ridge",
                 genes: list[str] | tuple[str, ...] | None = None, central: FeatureModel | None = None,
                 central_t: int = 50, seed: int = 0, epochs: int = 30, batch_size: int = 32, lr: float = 2e-3,
                 weight_decay: float = 1e-4, cnn_width: int = 16, feat_dim: int = 64, hidden: int = 256,
                 alphas: tuple[float, ...] = RIDGE_ALPHAS, mixup_alpha: float = 0.4, batch_features: int = 64,
                 group_norm: bool = False, alpha_cv: str = "loo") -> None:
        if head not in HEADS:
            raise ValueError(f"unknown head {head!r}; use one of {HEADS}.")
        if alpha_cv not in ALPHA_CV:
            raise ValueError(f"`alpha_cv` must be one of {ALPHA_CV}, got {alpha_cv!r}.")
        if alpha_cv == "groups" and head != "ridge":
            raise ValueError("alpha_cv='groups' chooses the ridge head's penalties; use head='ridge' or alpha_cv='loo'.")
        if encoder == "central" and (central is None or not callable(getattr(central, "features", None))):
            raise ValueError("encoder='central' needs `central=`, a model with a features(patches) method "
                             "(a c2lst CentralModel); or choose encoder='cnn'/'handcrafted'.")
        if int(epochs) < 1 or int(batch_size) < 1:
            raise ValueError(f"`epochs` and `batch_size` must be >= 1, got {epochs} and {batch_size}.")
        self.resnet: ResNetEncoder | None = None
        self.encoder_path: str | None = None
        self.encoder_fn = encoder if callable(encoder) and not isinstance(encoder, nn.Module) else None
        if isinstance(encoder, ResNetEncoder):
            self.resnet = encoder.eval()
        elif self.encoder_fn is None and str(encoder) not in ENCODERS:
            self.encoder_path = str(encoder)
            self.resnet = ResNetEncoder.from_state_dict(_load_checkpoint(encoder))
        self.encoder_kind = ("resnet" if self.resnet is not None else "callable" if self.encoder_fn is not None
                             else str(encoder))
        if handcrafted is None:
            handcrafted = self.encoder_kind != "cnn"
        self.handcrafted_fn = (None if self.encoder_kind == "handcrafted" or handcrafted is False
                               else handcrafted if callable(handcrafted) else handcrafted_features)
        if group_norm and self.encoder_kind == "cnn":
            raise ValueError("group_norm needs a frozen encoder ('handcrafted', 'central' or a checkpoint); the 'cnn' "
                             "encoder is trained on the raw patches.")
        self.head_kind = head
        self.genes = list(genes) if genes is not None else None
        self.central = central
        self.hparams: dict[str, Any] = {
            "central_t": int(central_t), "seed": int(seed), "epochs": int(epochs), "batch_size": int(batch_size),
            "lr": float(lr), "weight_decay": float(weight_decay), "cnn_width": int(cnn_width), "feat_dim": int(feat_dim),
            "hidden": int(hidden), "alphas": [float(a) for a in alphas], "mixup_alpha": float(mixup_alpha),
            "batch_features": int(batch_features), "group_norm": bool(group_norm), "alpha_cv": alpha_cv,
        }
        self.cnn: PatchCNN | None = None
        self.mlp: MLPHead | None = None
        self.stats: dict[str, np.ndarray] = {}
        self.fit_info: dict[str, Any] = {}

    # ------------------------------------------------------------------ encoding
    def _net_features(self, net: nn.Module, patches: np.ndarray) -> np.ndarray:
        net.eval()
        bs = self.hparams["batch_features"]
        with torch.no_grad():
            out = [net(_to_tensor(patches[s])).numpy() for s in _batches(len(patches), bs)]
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 0), np.float32)

    def _learned(self, p: np.ndarray) -> np.ndarray:
        if self.encoder_kind == "callable":
            return np.asarray(self.encoder_fn(p), dtype=np.float32).reshape(len(p), -1)
        if self.encoder_kind == "central":
            f = self.central.features(p, t=self.hparams["central_t"], batch_size=self.hparams["batch_features"],
                                      seed=self.hparams["seed"])
            return np.asarray(f, dtype=np.float32).reshape(len(p), -1)
        net = self.cnn if self.encoder_kind == "cnn" else self.resnet
        if net is None:
            raise ValueError("the CNN encoder is not trained yet; call fit() first.")
        return self._net_features(net, p)

    def features(self, patches: np.ndarray) -> np.ndarray:
        """Raw (unstandardised) features ``(n, F)`` float32 of uint8 ``(n, 3, H, W)`` patches."""
        p = check_patches(patches)
        if self.encoder_kind == "handcrafted":
            return handcrafted_features(p)
        learned = self._learned(p)
        if self.handcrafted_fn is None:
            return learned
        return np.concatenate([np.asarray(self.handcrafted_fn(p), dtype=np.float32), learned], axis=1)

    def _train_cnn(self, patches: np.ndarray, z: np.ndarray, weight: np.ndarray) -> None:
        hp = self.hparams
        gen = _seeded(hp["seed"])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(hp["seed"])
            cnn = PatchCNN(hp["cnn_width"], hp["feat_dim"])
            probe = nn.Linear(hp["feat_dim"], z.shape[1])
        params = list(cnn.parameters()) + list(probe.parameters())
        opt = torch.optim.AdamW(params, lr=hp["lr"], weight_decay=hp["weight_decay"])
        n = len(patches)
        steps = hp["epochs"] * max(1, int(np.ceil(n / hp["batch_size"])))
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=hp["lr"], total_steps=steps, pct_start=0.2)
        zt, wt = torch.from_numpy(z), torch.from_numpy(weight.astype(np.float32))
        cnn.train()
        losses = []
        for _ in range(hp["epochs"]):
            order = torch.randperm(n, generator=gen)
            for s in _batches(n, hp["batch_size"]):
                idx = order[s]
                pred = probe(cnn(_to_tensor(patches[idx.numpy()])))
                loss = (((pred - zt[idx]) ** 2).mean(dim=1) * wt[idx]).sum() / wt[idx].sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                losses.append(loss.item())
        self.cnn = cnn.eval()
        self.fit_info["cnn_final_loss"] = float(np.mean(losses[-max(1, len(losses) // 10):]))

    # ------------------------------------------------------------------ heads
    def _ridge_alpha(self, x_real: np.ndarray, z_real: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
        """One ridge penalty per target by CV on the real rows (the largest if < 3 rows).

        Leave-one-out (efficient), or with ``alpha_cv="groups"`` leave-one-group-out over ``groups`` where they hold
        at least two groups (an inner fold of ``extra_weight="cv"`` left with one group falls back to leave-one-out).
        """
        from sklearn.linear_model import RidgeCV

        alphas = np.asarray(self.hparams["alphas"])
        if self.hparams["alpha_cv"] == "groups" and groups is not None and len(np.unique(groups)) >= 2:
            return group_cv_alpha(x_real, z_real, groups, alphas)
        if len(x_real) < 3:
            return np.full(z_real.shape[1], alphas.max())
        cv = RidgeCV(alphas=alphas, alpha_per_target=True).fit(x_real, z_real)
        return np.broadcast_to(np.asarray(cv.alpha_, dtype=np.float64), (z_real.shape[1],)).copy()

    def _fit_ridge(self, x_real: np.ndarray, z_real: np.ndarray, x_all: np.ndarray, z_all: np.ndarray,
                   w_all: np.ndarray, groups: np.ndarray | None = None) -> None:
        alpha = self._ridge_alpha(x_real, z_real, groups)
        coef, intercept = ridge_per_target(x_all, z_all, w_all, alpha)
        self.stats.update({"ridge_coef": coef, "ridge_intercept": intercept, "ridge_alpha": alpha})

    def _fit_mlp(self, x: np.ndarray, z: np.ndarray, w: np.ndarray) -> None:
        hp = self.hparams
        gen = _seeded(hp["seed"] + 1)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(hp["seed"] + 1)
            mlp = MLPHead(x.shape[1], z.shape[1], hp["hidden"])
        opt = torch.optim.AdamW(mlp.parameters(), lr=hp["lr"], weight_decay=max(hp["weight_decay"], 1e-2))
        xt, zt, wt = torch.from_numpy(x.astype(np.float32)), torch.from_numpy(z), torch.from_numpy(w.astype(np.float32))
        n = len(x)
        mlp.train()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(hp["seed"] + 2)  # dropout masks
            for _ in range(max(hp["epochs"], 100)):
                order = torch.randperm(n, generator=gen)
                for s in _batches(n, hp["batch_size"]):
                    idx = order[s]
                    loss = (((mlp(xt[idx]) - zt[idx]) ** 2).mean(dim=1) * wt[idx]).sum() / wt[idx].sum()
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
        self.mlp = mlp.eval()

    def _head(self, x: np.ndarray) -> np.ndarray:
        if self.head_kind == "ridge":
            return x @ self.stats["ridge_coef"].T + self.stats["ridge_intercept"]
        with torch.no_grad():
            return self.mlp(torch.from_numpy(x.astype(np.float32))).numpy()

    # ------------------------------------------------------------------ public API
    def fit(self, patches: np.ndarray, targets: np.ndarray, *, extra_patches: np.ndarray | None = None,
            extra_targets: np.ndarray | None = None, extra_weight: float | str = 1.0, extra_align: str | None = None,
            groups: np.ndarray | None = None, extra_groups: np.ndarray | None = None, n_mixup: int = 0,
            n_augment: int = 0, augment_weight: float = 1.0) -> Predictor:
        """Fit the encoder (``"cnn"``) and the head.

        Parameters
        ----------
        patches
            ``(n, 3, H, W)`` uint8 patches of the real training spots.
        targets
            ``(n, G)`` log-normalised expression of the panel genes at those spots.
        extra_patches, extra_targets
            Additional training pairs (synthetic or augmented patches); never used for statistics or the
            ridge penalty.
        extra_weight
            Sample weight of each extra row (real rows weigh 1), or ``"cv"``: the weight among
            :data:`EXTRA_WEIGHTS` (0 included) with the best mean per-gene Pearson r in leave-one-group-out
            cross-validation on the real rows (ridge head; needs ``groups`` and ``extra_groups``). In each
            inner fold the extra rows of the held-out group are left out, so no extra row derived from a
            validation spot is trained on.
        extra_align
            ``"moments"``: standardise the extra rows' features on their own mean and standard deviation
            (instead of the real rows'), which moves them onto the real rows' distribution feature by
            feature. This removes a generator's global shift (e.g. fewer nuclei in every synthetic tile) and
            keeps how features vary with expression among the extra rows. ``None``: no alignment.
        groups, extra_groups
            Group (e.g. section) of each real row and of each extra row, for ``extra_weight="cv"`` and
            ``group_norm`` (where ``None`` makes all rows one group).
        n_mixup
            Number of feature-space mixup rows added to the head's training set: random pairs of real
            training spots, features and expression mixed with the same Beta weight.
        n_augment
            Classic augmentation: ``n_augment`` flip/rot90/HED-stain-jittered copies of each real training patch
            (:func:`augment_patches`, seeded by ``seed``) with that spot's expression, added as their own set of
            rows next to the extra rows. They are standardised like real rows (with ``group_norm``: per group, on
            their own moments), so stacking them with synthetic rows keeps each set's alignment separate.
        augment_weight
            Sample weight of each augmented row (a fixed weight; not with ``extra_weight="cv"``).

        Returns
        -------
        ``self``.
        """
        p = check_patches(patches)
        y = np.asarray(targets, dtype=np.float32)
        if y.ndim != 2 or len(y) != len(p):
            raise ValueError(f"targets {y.shape} must be (n_patches={len(p)}, n_genes).")
        if len(p) < 2:
            raise ValueError(f"need at least 2 training spots to fit a predictor, got {len(p)}; add training spots.")
        if not np.isfinite(y).all():
            raise ValueError("training targets contain NaN or infinite values.")
        if self.genes is not None and len(self.genes) != y.shape[1]:
            raise ValueError(f"{y.shape[1]} target columns but {len(self.genes)} genes were given.")
        if (extra_patches is None) != (extra_targets is None):
            raise ValueError("pass both `extra_patches` and `extra_targets`, or neither.")
        if extra_patches is not None:
            ep = check_patches(extra_patches, "extra_patches")
            ey = np.asarray(extra_targets, dtype=np.float32)
            if ey.shape != (len(ep), y.shape[1]):
                raise ValueError(f"extra targets {ey.shape} must be (n_extra={len(ep)}, {y.shape[1]}) in the same gene order.")
            if ep.shape[2:] != p.shape[2:]:
                raise ValueError(f"extra patches are {ep.shape[2:]} px, training patches {p.shape[2:]}; extract both at one size.")
        else:
            ep, ey = p[:0], y[:0]
        check_extra_options(extra_weight, extra_align, cv_possible=self.head_kind == "ridge" and self.encoder_kind != "cnn")
        cv_weight = extra_weight == "cv"
        n_augment = _check_augment(n_augment, augment_weight, cv_weight)
        ap, a_src = (augment_patches(p, n_copies=n_augment, seed=self.hparams["seed"]) if n_augment
                     else (p[:0], np.zeros(0, dtype=np.int64)))
        group_norm = self.hparams["group_norm"]
        alpha_groups = None
        if self.hparams["alpha_cv"] == "groups":
            alpha_groups = _group_labels(groups, len(p), "groups")
            if len(np.unique(alpha_groups)) < 2:
                raise ValueError("alpha_cv='groups' needs `groups` (e.g. each training spot's section) with at least two "
                                 "groups; pass them or use alpha_cv='loo'.")
        if cv_weight:
            g_real, g_extra = _check_groups(groups, extra_groups, len(p), len(ep))
        if group_norm:
            g_real = _group_labels(groups, len(p), "groups")
            if len(ep) and (groups is None) != (extra_groups is None):
                raise ValueError("group_norm with extra rows: pass both `groups` and `extra_groups` (the group each "
                                 "extra row comes from), or neither (one group).")
            g_extra = _group_labels(extra_groups, len(ep), "extra_groups")
            unknown = sorted(set(g_extra) - set(g_real))
            if unknown:
                raise ValueError(f"extra rows of groups {unknown[:3]} have no real rows; group_norm centres each extra "
                                 "row's target on its group's real rows.")
        y_mean, y_std = _moments(y, _Y_STD_FLOOR)
        self.stats = {"y_mean": y_mean.astype(np.float64), "y_std": y_std.astype(np.float64)}
        z_real, z_extra = (y - y_mean) / y_std, (ey - y_mean) / y_std
        all_p = np.concatenate([p, ep, ap]) if len(ep) or len(ap) else p
        if self.encoder_kind == "cnn":
            self._train_cnn(all_p, np.concatenate([z_real, z_extra, z_real[a_src]]).astype(np.float32),
                            np.concatenate([_row_weights(len(p), len(ep), extra_weight),
                                            np.full(len(ap), float(augment_weight))]))
        f_all = self.features(all_p).astype(np.float64)
        f_real, f_extra, f_aug = f_all[: len(p)], f_all[len(p): len(p) + len(ep)], f_all[len(p) + len(ep):]
        self.stats["x_mean"], self.stats["x_std"] = _moments(f_real, _X_STD_FLOOR)
        if group_norm:
            self.stats["x_group_std"] = pooled = _pooled_group_std(f_real, g_real)
            x_real = _standardise_per_group(f_real, g_real, "training spots", pooled)
            x_extra = _standardise_per_group(f_extra, g_extra, "extra rows", pooled) if len(ep) else f_extra
            centre = {g: z_real[g_real == g].mean(axis=0) for g in np.unique(g_real)}
            z_real = z_real - np.stack([centre[g] for g in g_real])
            z_extra = z_extra - (np.stack([centre[g] for g in g_extra]) if len(ep) else 0.0)
            x_aug = _standardise_per_group(f_aug, g_real[a_src], "augmented rows", pooled) if len(ap) else f_aug
        else:
            x_real = (f_real - self.stats["x_mean"]) / self.stats["x_std"]
            x_extra = _standardise_extra(f_extra, self.stats["x_mean"], self.stats["x_std"], extra_align)
            x_aug = (f_aug - self.stats["x_mean"]) / self.stats["x_std"]
        x_all = np.concatenate([x_real, x_extra, x_aug])
        z_all = np.concatenate([z_real, z_extra, z_real[a_src]]).astype(np.float32)
        if cv_weight:
            # with group_norm each group is standardised on its own rows, the same in every inner fold
            inner_fold = (partial(_fold_rows, x_real, z_real, x_extra, z_extra) if group_norm
                          else partial(_restandardised_fold, f_real, y, f_extra, ey, extra_align))
            scores = self._cv_scores(g_real, g_extra, inner_fold)
            extra_weight = max(EXTRA_WEIGHTS, key=lambda w: (scores[w], -w))  # ties: the smaller weight
            self.fit_info["extra_weight_cv"] = {str(w): float(v) for w, v in scores.items()}
        w_all = np.concatenate([_row_weights(len(p), len(ep), extra_weight), np.full(len(ap), float(augment_weight))])
        if n_mixup > 0:
            rng = np.random.default_rng(self.hparams["seed"] + 3)
            i, j = rng.integers(0, len(p), n_mixup), rng.integers(0, len(p), n_mixup)
            lam = rng.beta(self.hparams["mixup_alpha"], self.hparams["mixup_alpha"], n_mixup)[:, None]
            x_all = np.concatenate([x_all, lam * x_real[i] + (1 - lam) * x_real[j]])
            z_all = np.concatenate([z_all, (lam * z_real[i] + (1 - lam) * z_real[j]).astype(np.float32)])
            w_all = np.concatenate([w_all, np.ones(n_mixup)])
        if self.head_kind == "ridge":
            self._fit_ridge(x_real, z_real, x_all, z_all, w_all, alpha_groups)
        else:
            self._fit_mlp(x_all, z_all, w_all)
        self.fit_info.update({"patch_px": int(p.shape[-1]), "n_real": len(p), "n_extra": len(ep), "n_mixup": int(n_mixup),
                              "n_augmented": len(ap), "augment_weight": float(augment_weight),
                              "n_features": x_all.shape[1], "extra_weight": float(extra_weight),
                              "extra_align": "groups" if group_norm and len(ep) else extra_align})
        if group_norm:
            self.fit_info["n_groups"] = int(len(np.unique(g_real)))
        return self

    def _cv_scores(self, g_real: np.ndarray, g_extra: np.ndarray,
                   inner_fold: Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, ...]]
                   ) -> dict[float, float]:
        """Mean over held-out groups of the mean per-gene Pearson r, for each weight in :data:`EXTRA_WEIGHTS`.

        ``inner_fold(train, validation, extra_train)`` (row masks) returns the inner fold's standardised
        ``(x_train, z_train, x_extra, z_extra, x_validation, y_validation)``; its ridge penalties come from its real
        training rows, once for all weights.
        """
        scores: dict[float, list[float]] = {w: [] for w in EXTRA_WEIGHTS}
        for g in np.unique(g_real):
            tr, va, etr = g_real != g, g_real == g, g_extra != g
            if tr.sum() < 3 or va.sum() < 3:
                continue
            x_tr, z_tr, x_e, z_e, x_va, y_va = inner_fold(tr, va, etr)
            alpha = self._ridge_alpha(x_tr, z_tr, g_real[tr])
            for weight in EXTRA_WEIGHTS:
                w = _row_weights(len(x_tr), len(x_e), weight)
                coef, intercept = ridge_per_target(np.concatenate([x_tr, x_e]), np.concatenate([z_tr, z_e]), w, alpha)
                scores[weight].append(np.nanmean(pearson_per_gene(y_va, x_va @ coef.T + intercept)))
        if not scores[EXTRA_WEIGHTS[0]]:
            raise ValueError("extra_weight='cv' found no group with >= 3 validation and >= 3 training rows; pass a "
                             "fixed weight instead.")
        return {w: float(np.mean(v)) for w, v in scores.items()}

    def predict(self, patches: np.ndarray, *, groups: np.ndarray | None = None) -> np.ndarray:
        """Predicted log-normalised expression ``(n, G)`` float32 of ``(n, 3, H, W)`` uint8 patches.

        ``groups``: the group (section, slide) of each patch, used with ``group_norm`` only (``None``: one group).
        """
        if "x_mean" not in self.stats:
            raise ValueError("the predictor is not fitted; call fit() or Predictor.load().")
        f = self.features(patches).astype(np.float64)
        if f.shape[1] != len(self.stats["x_mean"]):
            raise ValueError(f"encoder gives {f.shape[1]} features, the head expects {len(self.stats['x_mean'])}.")
        if self.hparams["group_norm"]:
            x = _standardise_per_group(f, _group_labels(groups, len(f), "groups"), "patches to predict",
                                       self.stats.get("x_group_std"))
        else:
            x = (f - self.stats["x_mean"]) / self.stats["x_std"]
        z = self._head(x)
        return (z * self.stats["y_std"] + self.stats["y_mean"]).astype(np.float32)

    @property
    def params(self) -> dict[str, Any]:
        """JSON-safe description: encoder, head, genes, hyperparameters, fit summary."""
        central_id = getattr(self.central, "identity", None)
        return {
            "format": FORMAT, "encoder": self.encoder_kind, "encoder_path": self.encoder_path, "head": self.head_kind,
            "handcrafted": self.handcrafted_fn is not None,
            "genes": self.genes, **self.hparams, "fit": dict(self.fit_info),
            "central_identity": central_id() if callable(central_id) else None,
        }

    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write ``config.json`` + ``model.safetensors`` to the directory ``path`` (atomically).

        Returns
        -------
        The directory written.
        """
        return save_predictor(self, path, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | Path, *, central: FeatureModel | None = None) -> Predictor:
        """Read a predictor written by :meth:`save` (weights from safetensors, nothing unpickled).

        Parameters
        ----------
        path
            Directory holding ``config.json`` and ``model.safetensors``.
        central
            The model the predictor read its features from (a ``CentralModel`` or a ``LocalModel``), required when
            the predictor uses ``encoder="central"``; its identity is checked.
        """
        return load_predictor(cls, path, central=central)
