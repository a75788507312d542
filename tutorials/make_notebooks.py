"""Write the tutorial notebooks (outputs stripped) from the cell sources below: ``python tutorials/make_notebooks.py``.

Every notebook reads ``C2LST_TUTORIAL_TINY=1`` in its first cell to switch to tiny settings, which is how
``tests/test_notebooks.py`` executes them.
"""
from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).parent

def setup(stdlib: tuple[str, ...] = (), pyplot: bool = True) -> str:
    """Return the first code cell: the imports (``stdlib`` beside ``os``; matplotlib when ``pyplot``), settings."""
    first = sorted(("import os", *stdlib), key=lambda line: (line.startswith("from"), line.split()[1]))
    third = ["import matplotlib.pyplot as plt"] * pyplot + ["import numpy as np"]
    return "\n".join([*first, "", *third, "", "import c2lst", "", SETTINGS])


SETTINGS = """\
TINY = os.environ.get("C2LST_TUTORIAL_TINY") == "1"  # tiny settings: used by the test suite
c2lst.settings.n_threads = 2
"""

QUICKSTART = [
    new_markdown_cell("""\
# Quick start: from a few paired spots to a better predictor

This tutorial runs C2L-ST end to end on the demo section shipped with c2lst: a real legacy-ST section of a
HER2-positive breast tumour (her2st, section C2; 187 spots of 100 µm, 200 µm apart, with the H&E image).

We pretend only half of the spots were sequenced. The other half are held out to measure how well gene
expression is predicted from the H&E alone, with and without synthetic patches from the adapted central
model."""),
    new_code_cell(setup() + """
ADAPT_STEPS = 5 if TINY else 300        # local adaptation steps (a few minutes on 2 free CPU cores)
DENOISE_STEPS = 4 if TINY else 50       # denoising steps per synthetic patch (the recipe's)
N_SYNTHETIC = 1 if TINY else 2          # synthetic patches per mixup profile
ENCODER = "handcrafted"                 # or "central": its features lowered r on the her2st benchmark
"""),
    new_markdown_cell("## The data\n\nReaders return a `SpatialData` object: the H&E image, the spot circles and a table of raw counts."),
    new_code_cell("""\
sdata = c2lst.datasets.demo()
sdata"""),
    new_code_cell("""\
table = sdata.tables["table"]
print(table)
print(table.uns["c2lst"]["spatial"])"""),
    new_markdown_cell("""\
## Patches

Each spot gets a 100 µm patch resampled to 64 px (1.5625 µm/px), the scale of the central model's tiles."""),
    new_code_cell("""\
c2lst.pp.extract_patches(sdata)
patches = table.obsm["c2lst_patch"]
fig, axes = plt.subplots(2, 8, figsize=(10, 2.6))
for ax, i in zip(axes.ravel(), np.linspace(0, len(patches) - 1, 16).astype(int), strict=True):
    ax.imshow(np.moveaxis(patches[i], 0, -1))
    ax.set_axis_off()"""),
    new_markdown_cell("""\
## Training and held-out spots

Everything fitted (normalisation, gene panel, adapter, predictor) sees the training spots only."""),
    new_code_cell("""\
rng = np.random.default_rng(0)
train = np.zeros(table.n_obs, dtype=bool)
train[rng.choice(table.n_obs, size=table.n_obs // 2, replace=False)] = True
c2lst.pp.normalize(sdata, train_mask=train)
panel = c2lst.pp.gene_panel(sdata, n_top_genes=50, train_mask=train)  # the recipe's panel
panel"""),
    new_markdown_cell("""\
## Baseline: a predictor trained on the real spots alone

A patch encoder (handcrafted colour/texture/nuclei features, the default; `encoder="central"` uses the
central model's denoiser features, which scored lower on the her2st benchmark) and a ridge head, fitted on the training spots, scored on the held-out spots."""),
    new_code_cell("""\
central = c2lst.datasets.central_default()
real_model = c2lst.tl.predict(sdata, train_mask=train, synthetic=None, encoder=ENCODER, central=central, seed=0,
                              key_added="pred_real")
real_only = c2lst.tl.evaluate(sdata, train_mask=train, layer="pred_real", key_added="eval_real")
real_only.head()"""),
    new_markdown_cell("""\
## Central → local

The central model was pretrained on public histology-only tiles (no genes, no her2st tissue). Adaptation
trains a small gene-conditioned modulation of it on the training spots; the central weights never change.
The modulation also has an unconditional local component, shared by every spot: it learns the local tissue and
stain, so the gene-conditioned part learns what is specific to each profile (`local_unconditional`, the
recipe's default).

The section's image also holds hundreds of unlabelled tissue tiles between and around the spots. With
`tissue=2000` (and, with `peft` installed, `lora_rank=8`) `tl.adapt` trains the local stage on them too, never
on a tile touching a held-out spot: `c2lst.tl.adapt(sdata, central, panel=panel, train_mask=train, tissue=2000,
lora_rank=8, seed=0)`. On the her2st benchmark this made the tiles closer to real patches at the same predictor
gain, for about 1.6 times the adaptation time (1.3–1.9 times seed by seed, partly measured on a shared CPU), so
it is not the default here. For tiles to look at, `lora_rank=32, steps=1000` brings them closer still (precision
0.56 against 0.45 with rank 8 on the same three seeds; 30 nuclei per tile against 28, real ones 42) for about twice
the adaptation time, again without a better predictor. Refining the central model itself on the section's tissue
first (`refined = c2lst.tl.pretrain(c2lst.pp.tissue_tiles(sdata, max_tiles=2000, exclude_spots=~train, seed=0),
init=central, steps=2000)`, about 17 minutes on 2 cores, then `c2lst.tl.adapt(sdata, refined, ..., tissue=2000,
lora_rank=32, steps=1000)`) gave the most realistic tiles so far (precision 0.89, −19% nuclei; five folds, one
seed: `docs/benchmark_history.md`), and still no better predictor."""),
    new_code_cell("""\
local = c2lst.tl.adapt(sdata, central, panel=panel, train_mask=train, steps=ADAPT_STEPS, seed=0)
local"""),
    new_markdown_cell("""\
## Synthetic patches

`source="mixup"` conditions on mixtures of each training spot's profile with a spatial neighbour's, so the
synthetic patches cover expression states between the measured spots."""),
    new_code_cell("""\
c2lst.tl.generate(sdata, local, source="mixup", n_per_profile=N_SYNTHETIC, steps=DENOISE_STEPS, seed=0)
sdata.tables["c2lst_synthetic"]"""),
    new_code_cell("""\
fig = c2lst.pl.synthetic_grid(sdata, groupby="cluster", n=6)"""),
    new_code_cell("""\
fig = c2lst.pl.embedding_overlap(sdata, method="pca" if TINY else "umap")"""),
    new_markdown_cell("""\
Does the profile matter? `tl.evaluate_conditioning` pairs every held-out spot with another spot of its section.
`profile_share`: the part of the conditioning's denoising gain that only the spot's own profile gives;
`delta_r`: how well the real-pairs predictor's reading of two patches generated with one seed, for the two
profiles, follows the difference between the profiles; `delta_r_real`: the same on the two spots' real patches
(the reference); `delta_slope` / `delta_slope_real`: how far the reading moves per unit of profile change."""),
    new_code_cell("""\
c2lst.tl.evaluate_conditioning(sdata, local, predictor=real_model, steps=DENOISE_STEPS, n_draws=2 if TINY else 8)"""),
    new_markdown_cell("""\
## Real + synthetic

The same predictor, with the synthetic (patch, profile) pairs added to its training rows. Every statistic
of the fit still comes from the real training spots."""),
    new_code_cell("""\
c2lst.tl.predict(sdata, train_mask=train, synthetic="c2lst_synthetic", encoder=ENCODER, central=central, seed=0)
augmented = c2lst.tl.evaluate(sdata, train_mask=train)
print(f"mean held-out Pearson r: real only {real_only['pearson'].mean():.3f}, "
      f"real + synthetic {augmented['pearson'].mean():.3f}")
augmented.sort_values("pearson", ascending=False).head(10)"""),
    new_code_cell("""\
best = list(augmented.nlargest(3, "pearson")["gene"])
fig = c2lst.pl.spatial_genes(sdata, best, layers=("lognorm", "pred_real", "c2lst_pred"), train_mask=train)"""),
    new_markdown_cell("""\
## The same in one call

`c2lst.tl.run` chains all of the above (on a fresh copy of the data):

```python
sdata = c2lst.datasets.demo()
result = c2lst.tl.run(sdata, fraction=0.5, seed=0)
result.evaluation
c2lst.pl.spatial_genes(sdata, result.top_genes(3), train_mask=result.train_mask)
```

## Interactive view

With the `napari` extra installed, look at measured, predicted and error maps on the tissue:

```python
viewer = c2lst.pl.napari(sdata, genes=best, layer="c2lst_pred")
```"""),
]

BYOD = [
    new_markdown_cell("""\
# Bring your own data

c2lst works on `SpatialData` objects with one image, the spot circles and a table of raw counts (see the
design page). This tutorial shows the three ways in, then maps expression onto a new H&E-only slide:

1. 10x Visium (Space Ranger output) with `c2lst.io.read_visium`, or an `AnnData` in scanpy's Visium
   convention with `c2lst.io.from_anndata`;
2. legacy ST (the her2st format: counts, spot selection table, H&E image) with `c2lst.io.read_legacy_st`;
3. an H&E-only slide, predicted with a model trained on a sequenced section."""),
    new_code_cell(setup(("from pathlib import Path",), pyplot=False) + """
DATA = Path(os.environ.get("C2LST_DATA_DIR", "../../shared/data/her2st"))  # local her2st copy, if any
ENCODER = "handcrafted"  # or "central": its features lowered r on the her2st benchmark
"""),
    new_markdown_cell("""\
## 1. Visium

With the `visium` extra (spatialdata-io), point `read_visium` at a Space Ranger `outs/` folder:

```python
sdata = c2lst.io.read_visium("path/to/outs")
```

If your data is already an `AnnData` read with `scanpy.read_visium` (raw counts in `X`,
`obsm["spatial"]` in full-resolution pixels, `uns["spatial"][library_id]` with the images and
scale factors), convert it. Here we build such an `AnnData` from the demo section to show the layout:"""),
    new_code_cell("""\
import anndata as ad
from spatialdata.transformations import get_transformation

demo = c2lst.datasets.demo()
table = demo.tables["table"]
circles = demo.shapes["C2_spots"]
image = np.moveaxis(np.asarray(demo.images["C2_image"].data), 0, -1)           # (y, x, 3) uint8
scale = get_transformation(demo.images["C2_image"]).to_affine_matrix(("x", "y"), ("x", "y"))[0, 0]

adata = ad.AnnData(X=table.X, obs=table.obs[["array_col", "array_row"]].copy(), var=table.var[[]].copy())
adata.obsm["spatial"] = np.column_stack([circles.geometry.x, circles.geometry.y])[table.obs["spot_id"]]
adata.uns["spatial"] = {"C2": {
    "images": {"hires": image},
    "scalefactors": {"tissue_hires_scalef": 1 / scale,
                     "spot_diameter_fullres": 2 * float(circles["radius"].iloc[0])},
}}
adata"""),
    new_code_cell("""\
sdata_visium_style = c2lst.io.from_anndata(adata, spot_diameter_um=100.0, pitch_um=200.0)
sdata_visium_style"""),
    new_markdown_cell("""\
## 2. Legacy ST

Three files per section: counts (spots × genes, rows named `"{x}x{y}"`), the spot selection table (array
and pixel positions) and the H&E image. The microns per pixel are derived from the spot pitch."""),
    new_code_cell("""\
section = DATA / "C3"
if section.is_dir():
    sdata_c3 = c2lst.io.read_legacy_st(section / "C3.tsv.gz", section / "C3_selection.tsv",
                                       next(section.glob("*.jpg")), library_id="C3")
else:
    print(f"no local her2st copy in {DATA}: using the demo section instead")
    sdata_c3 = None
sdata_c3"""),
    new_markdown_cell("""\
## 3. A new H&E-only slide

Train the predictor on a sequenced section and keep the fitted model `tl.predict` returns (share it with
`predictor.save(path)`). Then map expression onto a slide that has only an H&E image:
`c2lst.io.read_slide(path, mpp=...)` reads the image alone (µm per pixel given, or from the file's metadata)
and `c2lst.tl.predict_slide` lays a grid of pseudo-spots over the tissue, cuts their patches and predicts
them. Here the "new" slide is the image of section C3 when a local her2st copy is available (else the
demo image again)."""),
    new_code_cell("""\
train_sdata = c2lst.datasets.demo()
c2lst.pp.extract_patches(train_sdata)
c2lst.pp.normalize(train_sdata)
panel = c2lst.pp.gene_panel(train_sdata, n_top_genes=32 if TINY else 256)
central = None if ENCODER != "central" else c2lst.datasets.central_default()
predictor = c2lst.tl.predict(train_sdata, synthetic=None, encoder=ENCODER, central=central, seed=0)
predictor"""),
    new_code_cell("""\
if sdata_c3 is not None:  # C3's H&E image file read on its own, without its spots
    mpp = sdata_c3.tables["table"].uns["c2lst"]["spatial"]["mpp"]         # your scanner's µm per pixel
    slide = c2lst.io.read_slide(next(section.glob("*.jpg")), mpp=mpp, library_id="C3")
else:                    # the demo image, taken out of its SpatialData
    import spatialdata as sd

    source = c2lst.datasets.demo()
    image_name = next(iter(source.images))
    slide = sd.SpatialData(images={image_name: source.images[image_name]})
    mpp = source.tables["table"].uns["c2lst"]["spatial"]["mpp"]
c2lst.tl.predict_slide(slide, predictor, mpp=mpp, central=central)
slide"""),
    new_code_cell("""\
genes = list(slide.tables["c2lst_slide"].var_names[:2])
fig = c2lst.pl.spatial_genes(slide, genes, layers=("X",), table_key="c2lst_slide")"""),
]

CENTRAL = [
    new_markdown_cell("""\
# Pretraining a central model and sharing adapters

The central model is a latent-diffusion model of 100 µm H&E tiles, trained on histology alone. Anyone
with public or in-house slides (no expression needed) can pretrain one; labs then adapt it locally and,
if they wish, share only their small adapters.

This tutorial pretrains a (deliberately small) central model on the public histology tiles in
`shared/data/histology` (or, where that folder is absent, on tiles of the demo section's own H&E: enough to
show the steps, not a model to use), adapts it to the demo section and saves the adapter."""),
    new_code_cell(setup(("import tempfile", "from pathlib import Path")) + """
HISTOLOGY = Path(os.environ.get("C2LST_HISTOLOGY_DIR", "../../shared/data/histology"))
CONFIG = "tiny" if TINY else "cpu"
PRETRAIN_STEPS = 30 if TINY else 3000
ADAPT_STEPS = 10 if TINY else 300
WORK = Path(tempfile.mkdtemp(prefix="c2lst_tutorial_"))
"""),
    new_markdown_cell("""\
## Histology tiles

`read_histology` reads images (tif, png, jpg, svs), rescales them to the tile resolution (microns per
pixel from the file metadata or `mpp=`) and cuts tissue-rich 100 µm tiles. (MoNuSeg is licensed for
non-commercial use: fine for this tutorial, not for a model you distribute.)"""),
    new_code_cell("""\
SOURCES = {"monuseg": 0.5, "gbm40": 0.25, "nct_crc_samples": 0.5}  # folder: µm per pixel
parts = []
for folder, mpp in SOURCES.items():
    if (HISTOLOGY / folder).is_dir():
        read = c2lst.io.read_histology(HISTOLOGY / folder, mpp=mpp, max_tiles=64 if TINY else None, seed=0)
        print(f"{folder}: {len(read.tiles)} tiles")
        parts.append(read.tiles)
if not parts:  # no shared/data/histology here (e.g. a docs build): tiles of the demo section's own H&E instead
    demo_he = Path(c2lst.datasets.__file__).parent / "data" / "demo" / "C2_HE.jpg"
    demo_mpp = c2lst.datasets.demo().tables["table"].uns["c2lst"]["spatial"]["mpp"]
    read = c2lst.io.read_histology(demo_he, mpp=demo_mpp, max_tiles=64 if TINY else None, seed=0)
    print(f"demo section H&E (no histology folder at {HISTOLOGY}): {len(read.tiles)} tiles")
    parts.append(read.tiles)
tiles = np.concatenate(parts)
tiles.shape"""),
    new_code_cell("""\
fig, axes = plt.subplots(2, 8, figsize=(10, 2.6))
for ax, tile in zip(axes.ravel(), tiles[:: max(1, len(tiles) // 16)], strict=False):
    ax.imshow(np.moveaxis(tile, 0, -1))
    ax.set_axis_off()"""),
    new_markdown_cell("""\
## Pretraining

`config="cpu"` is the shipped model's size; `"gpu"` is larger; `"tiny"` is for tests. Checkpoints are
written atomically as `config.json` + `*.safetensors`; `resume=True` continues an interrupted run."""),
    new_code_cell("""\
central = c2lst.tl.pretrain(tiles, config=CONFIG, steps=PRETRAIN_STEPS, seed=0, out=WORK / "central")
central"""),
    new_code_cell("""\
sorted(p.name for p in (WORK / "central").iterdir())"""),
    new_markdown_cell("""\
## Adapting and sharing the adapter

The adapter holds the gene encoder and modulation weights, the local decoder's weights (a copy of the central
decoder fine-tuned on the training patches, `decoder_steps`, default `min(200, steps)`; they carry the lab's stain
and texture, and `decoder_steps=0` leaves them out), the gene panel, and the identity of the central model it
was trained on; no spot, patch or count."""),
    new_code_cell("""\
sdata = c2lst.datasets.demo()
c2lst.pp.extract_patches(sdata)
c2lst.pp.normalize(sdata)
panel = c2lst.pp.gene_panel(sdata, n_top_genes=32 if TINY else 256)
local = c2lst.tl.adapt(sdata, central, panel=panel, steps=ADAPT_STEPS, seed=0)
local.save(WORK / "adapter")


def size(folder):
    \"\"\"Megabytes of the files under ``folder``.\"\"\"
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file()) / 1e6


print(f"central model {size(WORK / 'central'):.1f} MB, adapter {size(WORK / 'adapter'):.2f} MB")"""),
    new_markdown_cell("""\
Another lab loads the adapter on top of the same central model. Loading checks the central model's
identity (configuration and weights hash), so an adapter cannot silently run on another model."""),
    new_code_cell("""\
from c2lst.core.models import LocalModel

shared = LocalModel.load(WORK / "adapter", central)
c2lst.tl.generate(sdata, shared, source="spots", steps=4 if TINY else 50, seed=0)
fig = c2lst.pl.synthetic_grid(sdata, n=6)"""),
    new_code_cell("""\
import shutil

shutil.rmtree(WORK)"""),
]

NOTEBOOKS = {"01_quickstart.ipynb": QUICKSTART, "02_bring_your_own_data.ipynb": BYOD, "03_central_model.ipynb": CENTRAL}


def main(out: Path = HERE) -> None:
    """Write the notebooks into ``out`` (default: beside this script)."""
    for name, cells in NOTEBOOKS.items():
        nb = new_notebook(cells=cells, metadata={
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        })
        for i, cell in enumerate(nb.cells):
            cell.id = f"{Path(name).stem[:2]}-{i:02d}"  # stable ids: regenerating gives no spurious diff
        nbformat.validate(nb)
        nbformat.write(nb, out / name)


if __name__ == "__main__":
    main()
