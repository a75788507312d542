"""Handcrafted patch features that need no downloaded weights.

Colour (RGB and HED colour-deconvolution statistics), GLCM texture and nuclei statistics from a
haematoxylin threshold + watershed. They are the default feature space of the fidelity metrics and the
floor encoder of the predictor.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.color import rgb2gray, rgb2hed
from skimage.feature import graycomatrix, graycoprops
from skimage.filters import threshold_otsu
from skimage.segmentation import watershed

GLCM_PROPS = ("contrast", "dissimilarity", "homogeneity", "energy", "correlation", "ASM")
GLCM_DISTANCES = (1, 2, 4)
GLCM_LEVELS = 32
NUCLEI_FEATURES = ("nuclei_count", "nuclear_area", "nuclear_area_std", "haematoxylin_density")
_H_FLOOR = 0.03  # minimum haematoxylin optical density counted as nuclear (avoids segmenting blank tiles)


def check_patches(patches: np.ndarray, name: str = "patches") -> np.ndarray:
    """Validate ``(n, 3, H, W)`` uint8 RGB patches and return them as an array."""
    p = np.asarray(patches)
    if p.ndim != 4 or p.shape[1] != 3:
        raise ValueError(f"`{name}` must be (n, 3, H, W) RGB patches, got shape {p.shape}.")
    if p.dtype != np.uint8:
        raise ValueError(f"`{name}` must be uint8 (0-255), got {p.dtype}; convert with np.clip(x, 0, 255).astype(np.uint8).")
    return p


def handcrafted_feature_names() -> list[str]:
    """Names of the columns returned by :func:`handcrafted_features`, in order."""
    colour = [f"{s}_{c}" for c in ("R", "G", "B", "H", "E", "D") for s in ("mean", "std")]
    glcm = [f"glcm_{p}_d{d}" for d in GLCM_DISTANCES for p in GLCM_PROPS]
    return [*colour, "tissue_fraction", *glcm, *NUCLEI_FEATURES]


def _nuclei(h: np.ndarray, min_area: int) -> tuple[float, float, float, float]:
    thr = max(float(threshold_otsu(h)) if np.ptp(h) > 0 else np.inf, _H_FLOOR)
    mask = ndi.binary_fill_holes(h > thr)
    if not mask.any():
        return 0.0, 0.0, 0.0, 0.0
    dist = ndi.distance_transform_edt(mask)
    peaks = (ndi.maximum_filter(dist, size=5) == dist) & (dist >= 1)  # one marker per plateau of local maxima
    markers, n_markers = ndi.label(peaks)
    labels = watershed(-dist, markers, mask=mask) if n_markers else ndi.label(mask)[0]
    areas = np.bincount(labels.ravel())[1:]
    areas = areas[areas >= min_area]
    if areas.size == 0:
        return 0.0, 0.0, 0.0, float(mask.mean())
    return float(areas.size), float(areas.mean()), float(areas.std()), float(h[mask].mean() * mask.mean())


def nuclei_stats(patches: np.ndarray, *, min_area: int = 4) -> np.ndarray:
    """Nuclei per patch, mean/std nuclear area (pixels) and haematoxylin density.

    Nuclei are segmented on the haematoxylin channel of a colour deconvolution (``skimage.color.rgb2hed``):
    Otsu threshold (at least ``0.03`` optical density), hole filling, then a distance-transform watershed
    that splits touching nuclei; objects smaller than ``min_area`` pixels are dropped. Haematoxylin density
    is the mean haematoxylin inside nuclei times the nuclear area fraction.

    Returns
    -------
    ``(n, 4)`` float32: ``nuclei_count``, ``nuclear_area``, ``nuclear_area_std``, ``haematoxylin_density``.
    """
    p = check_patches(patches)
    h = rgb2hed(np.moveaxis(p, 1, -1))[..., 0]
    return np.array([_nuclei(hi, min_area) for hi in h], dtype=np.float32).reshape(len(p), len(NUCLEI_FEATURES))


def _glcm(gray_q: np.ndarray) -> np.ndarray:
    angles = (0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4)
    m = graycomatrix(gray_q, distances=GLCM_DISTANCES, angles=angles, levels=GLCM_LEVELS, symmetric=True, normed=True)
    props = np.stack([graycoprops(m, p).mean(axis=1) for p in GLCM_PROPS], axis=1)  # (distances, props)
    return np.nan_to_num(props, nan=0.0).ravel()


def handcrafted_features(patches: np.ndarray, *, min_area: int = 4, n_jobs: int = 1) -> np.ndarray:
    """Colour, texture and nuclei features of RGB patches.

    Parameters
    ----------
    patches
        ``(n, 3, H, W)`` uint8 RGB patches.
    min_area
        Smallest nucleus kept, in pixels (see :func:`nuclei_stats`).
    n_jobs
        Worker processes (joblib) for large sets; results do not depend on it.

    Returns
    -------
    ``(n, F)`` float32, columns named by :func:`handcrafted_feature_names`: RGB and HED mean/std, tissue
    fraction (pixels darker than 0.8 grey), GLCM contrast/dissimilarity/homogeneity/energy/correlation/ASM
    at distances 1, 2, 4 (averaged over 4 angles, 32 grey levels), and the nuclei statistics.
    """
    p = check_patches(patches)
    if len(p) == 0:
        return np.zeros((0, len(handcrafted_feature_names())), dtype=np.float32)
    if n_jobs != 1 and len(p) > 64:
        from joblib import Parallel, delayed

        chunks = np.array_split(p, min(len(p) // 32, 4 * abs(n_jobs)))
        parts = Parallel(n_jobs=n_jobs)(delayed(handcrafted_features)(c, min_area=min_area) for c in chunks)
        return np.concatenate(parts)
    rgb = np.moveaxis(p, 1, -1)
    hed = rgb2hed(rgb)
    flat_rgb = rgb.reshape(len(p), -1, 3).astype(np.float64) / 255.0
    flat_hed = hed.reshape(len(p), -1, 3)
    colour = np.concatenate([flat_rgb, flat_hed], axis=2)
    colour = np.stack([colour.mean(axis=1), colour.std(axis=1)], axis=2).reshape(len(p), -1)
    gray = rgb2gray(rgb)
    tissue = (gray < 0.8).reshape(len(p), -1).mean(axis=1, keepdims=True)
    gray_q = np.minimum((gray * GLCM_LEVELS).astype(np.uint8), GLCM_LEVELS - 1)
    glcm = np.stack([_glcm(g) for g in gray_q])
    nuclei = np.array([_nuclei(hi, min_area) for hi in hed[..., 0]], dtype=np.float64)
    return np.concatenate([colour, tissue, glcm, nuclei], axis=1).astype(np.float32)
