"""Pure array metrics (numpy / scipy / scikit-image). Never imports anndata or spatialdata."""
from ._composition import composition_distances
from ._conditioning import conditioning_scores, profile_response
from ._embedding import embed_2d
from ._features import check_patches, handcrafted_feature_names, handcrafted_features, nuclei_stats
from ._fidelity import (
    diversity_ratio,
    fidelity_floor,
    fidelity_report,
    floor_halves,
    frechet_distance,
    kid,
    out_of_range_share,
    prdc,
    standardize_on_real,
)
from ._memorisation import memorisation_audit
from ._regression import mae_per_gene, mse_per_gene, pearson_per_gene
from ._spatial import morans_i, spatial_weights
from ._synthetic import reconstruction_ceiling, synthetic_report

__all__ = [
    "check_patches",
    "composition_distances",
    "conditioning_scores",
    "diversity_ratio",
    "embed_2d",
    "fidelity_floor",
    "floor_halves",
    "fidelity_report",
    "frechet_distance",
    "handcrafted_feature_names",
    "handcrafted_features",
    "kid",
    "mae_per_gene",
    "memorisation_audit",
    "morans_i",
    "mse_per_gene",
    "nuclei_stats",
    "out_of_range_share",
    "pearson_per_gene",
    "prdc",
    "profile_response",
    "reconstruction_ceiling",
    "spatial_weights",
    "standardize_on_real",
    "synthetic_report",
]
