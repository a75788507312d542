"""Wall time and peak memory of ``c2lst.pp.extract_patches``.

Cases, each run in a fresh subprocess that reports its own peak resident memory (``ru_maxrss``):

- ``her2st``: one her2st section (``../shared/data/her2st/C2``, ~9,300 x 9,900 px JPEG, 187 spots):
  ``read_legacy_st`` and ``extract_patches`` timed separately;
- ``large``: a 40,000 x 40,000 px RGB image (4.8 GB uncompressed) stored as a chunked zarr array
  (procedural texture plus noise, generated once into ``--workdir``), read back lazily as a single-scale
  ``Image2DModel`` over ``dask.array.from_zarr``, 5,000 random spots at 0.5 µm/px.

Run from the project root: ``.venv/bin/python benchmarks/patch_extraction.py [--cases her2st,large]``.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
HER2ST = ROOT / ".." / "shared" / "data" / "her2st"
LARGE_MPP = 0.5  # µm per pixel of the synthetic large image


def _texture_block(block: np.ndarray, block_info: dict | None = None) -> np.ndarray:
    """Procedural texture for one chunk (``block`` is the empty template chunk), from its global position."""
    (_, _), (y0, y1), (x0, x1) = block_info[None]["array-location"]
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    base = 60 * np.sin(xx / 37.0) * np.cos(yy / 23.0) + 40 * np.sin((xx + yy) / 101.0)
    seed = (y0 // 1024) * 100_000 + x0 // 1024
    noise = np.random.default_rng(seed).integers(-12, 13, size=(3, y1 - y0, x1 - x0), dtype=np.int16)
    rgb = np.stack([170 + base, 110 + 0.8 * base, 160 + 0.6 * base]).astype(np.int16) + noise
    return np.clip(rgb, 0, 255).astype(np.uint8)


def make_large_image(path: Path, size: int, chunk: int) -> float:
    """Write the procedural ``(3, size, size)`` uint8 image to ``path`` as zarr (once); return the seconds spent."""
    import dask.array as da

    if (path / "zarr.json").exists() or (path / ".zarray").exists():
        return 0.0
    start = time.perf_counter()
    template = da.empty((3, size, size), dtype=np.uint8, chunks=(3, chunk, chunk))
    image = template.map_blocks(_texture_block, dtype=np.uint8)
    tmp = path.with_name(path.name + ".tmp")
    da.to_zarr(image, str(tmp), overwrite=True)
    tmp.rename(path)
    return time.perf_counter() - start


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def child_her2st() -> dict:
    import c2lst

    section = HER2ST / "C2"
    baseline = _peak_mb()
    t0 = time.perf_counter()
    sdata = c2lst.io.read_legacy_st(section / "C2.tsv.gz", section / "C2_selection.tsv", next(section.glob("*.jpg")))
    t1 = time.perf_counter()
    c2lst.pp.extract_patches(sdata, patch_um=100, patch_px=64)
    t2 = time.perf_counter()
    table = sdata.tables["table"]
    return {"case": "her2st C2 (9,274 x 9,911 px JPEG)", "spots": table.n_obs, "read_s": t1 - t0,
            "extract_s": t2 - t1, "level": table.uns["c2lst_patch"]["params"]["level"],
            "baseline_mb": baseline, "peak_mb": _peak_mb()}


def child_large(path: Path, n_spots: int) -> dict:
    import anndata as ad
    import dask.array as da
    import pandas as pd
    from spatialdata import SpatialData
    from spatialdata.models import Image2DModel, ShapesModel, TableModel

    import c2lst

    baseline = _peak_mb()
    t0 = time.perf_counter()
    image = Image2DModel.parse(da.from_zarr(str(path)), dims=("c", "y", "x"))
    size = image.shape[1]
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, size, size=(n_spots, 2))
    circles = ShapesModel.parse(xy, geometry=0, radius=np.full(n_spots, 50 / LARGE_MPP),
                                index=pd.Index(np.arange(n_spots), name="spot_id"))
    table = ad.AnnData(np.zeros((n_spots, 4), dtype=np.float32),
                       obs=pd.DataFrame({"region": pd.Categorical(["spots"] * n_spots), "spot_id": np.arange(n_spots)},
                                        index=[f"s{i}" for i in range(n_spots)]))
    table.uns["c2lst"] = {"spatial": {"mpp": LARGE_MPP, "mpp_source": "synthetic", "spot_diameter_um": 100.0,
                                      "pitch_um": 200.0}}
    table = TableModel.parse(table, region="spots", region_key="region", instance_key="spot_id")
    sdata = SpatialData(images={"image": image}, shapes={"spots": circles}, tables={"table": table})
    t1 = time.perf_counter()
    c2lst.pp.extract_patches(sdata, patch_um=100, patch_px=64)
    t2 = time.perf_counter()
    padded = int(sdata.tables["table"].obs["c2lst_patch_padded"].sum())
    return {"case": f"{size:,} x {size:,} px zarr, chunks {image.data.chunksize[1]}, single scale",
            "spots": n_spots, "read_s": t1 - t0, "extract_s": t2 - t1, "level": 0, "padded": padded,
            "baseline_mb": baseline, "peak_mb": _peak_mb()}


def _run_child(args: list[str], threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "C2LST_BENCH_THREADS": str(threads)}
    out = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"benchmark case {args} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default="her2st,large")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "c2lst_bench")
    parser.add_argument("--size", type=int, default=40_000)
    parser.add_argument("--chunk", type=int, default=1024)
    parser.add_argument("--n-spots", type=int, default=5_000)
    parser.add_argument("--threads", type=int, default=2, help="dask threads (the target machine has 2 cores)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        import dask

        dask.config.set(scheduler="threads", num_workers=int(os.environ.get("C2LST_BENCH_THREADS", "2")))
        import c2lst

        c2lst.settings.progress_bar = False
        result = child_her2st() if args.child[0] == "her2st" else child_large(Path(args.child[1]), int(args.child[2]))
        print(json.dumps(result))
        return

    rows = []
    for case in args.cases.split(","):
        if case == "her2st":
            if not HER2ST.is_dir():
                print(f"skipping her2st: {HER2ST} not found")
                continue
            rows.append(_run_child(["her2st"], args.threads))
        elif case == "large":
            args.workdir.mkdir(parents=True, exist_ok=True)
            path = args.workdir / f"image_{args.size}_{args.chunk}.zarr"
            spent = make_large_image(path, args.size, args.chunk)
            if spent:
                print(f"generated {path} in {spent:.1f} s (not part of the measurement)")
            rows.append(_run_child(["large", str(path), str(args.n_spots)], args.threads))
        else:
            raise SystemExit(f"unknown case {case!r}; use her2st and/or large")
    print("| case | spots | read (s) | extract_patches (s) | level read | peak RSS (MB) | RSS after imports (MB) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['case']} | {r['spots']:,} | {r['read_s']:.1f} | {r['extract_s']:.1f} | {r['level']} | "
              f"{r['peak_mb']:.0f} | {r['baseline_mb']:.0f} |")


if __name__ == "__main__":
    main()
