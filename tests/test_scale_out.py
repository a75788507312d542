"""Scale-out of central pretraining: tiles streamed from disk, and several processes under ``accelerate launch``."""
from __future__ import annotations

import gc
import json
import os
import pickle
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import c2lst
from c2lst.core import CentralModel
from c2lst.core.models import LocalModel
from c2lst.core.training import tiles_sha256

MPP = 3.125  # µm/px of the test images: a 100 µm tile of the tiny config is 32 px, no resampling


def _he_image(path: Path, side: int, seed: int) -> Path:
    """An H&E-like JPEG: pink stroma with purple nuclei."""
    rng = np.random.default_rng(seed)
    img = np.empty((side, side, 3), float)
    img[:] = (235, 170, 200)
    img += rng.normal(0, 6, img.shape)
    yy, xx = np.mgrid[:side, :side]
    for _ in range(side * side // 150):
        cy, cx, r = rng.uniform(0, side), rng.uniform(0, side), rng.uniform(1.5, 3.5)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = (80, 40, 120)
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path, quality=90)
    return path


@pytest.fixture
def slides(tmp_path) -> Path:
    folder = tmp_path / "slides"
    folder.mkdir()
    for i, side in enumerate((160, 192, 128)):  # 25 + 36 + 16 tiles of 100 µm
        _he_image(folder / f"slide{i}.jpg", side, seed=i)
    return folder


def test_streamed_tiles_equal_in_memory(slides):
    eager = c2lst.io.read_histology(slides, mpp=MPP, tile_px=32)
    lazy = c2lst.io.read_histology(slides, mpp=MPP, tile_px=32, lazy=True)
    stream = lazy.tiles
    assert isinstance(eager.tiles, np.ndarray) and not isinstance(stream, np.ndarray)
    assert len(lazy) == len(eager) == 77 and lazy.tile_px == 32 and lazy.params["lazy"]
    assert np.array_equal(stream[np.arange(len(stream))], eager.tiles)
    assert np.array_equal(stream[5], eager.tiles[5]) and np.array_equal(lazy.source, eager.source)
    order = [70, 3, 40, 3]  # any order, repeats
    assert np.array_equal(np.stack(stream.__getitems__(order)), eager.tiles[order])
    # what a spawned data-loader worker receives: addresses, not pixels
    assert len(pickle.dumps(stream)) < 10_000
    fresh_refs = pickle.loads(pickle.dumps(stream))
    assert np.array_equal(fresh_refs[76], eager.tiles[76])
    # the seeded subsample is the same tiles
    sub_e = c2lst.io.read_histology(slides, mpp=MPP, tile_px=32, max_tiles=20, seed=1)
    sub_l = c2lst.io.read_histology(slides, mpp=MPP, tile_px=32, max_tiles=20, seed=1, lazy=True)
    assert np.array_equal(sub_l.tiles[np.arange(20)], sub_e.tiles)
    # the fingerprint is stable and follows the pixels
    again = c2lst.io.read_histology(slides, mpp=MPP, tile_px=32, lazy=True).tiles
    assert again.fingerprint == stream.fingerprint == tiles_sha256(eager.tiles) != sub_l.tiles.fingerprint
    _he_image(slides / "slide2.jpg", 128, seed=9)
    assert c2lst.io.read_histology(slides, mpp=MPP, tile_px=32, lazy=True).tiles.fingerprint != stream.fingerprint
    # the store lives as long as its stream (not in forked workers' copies), and a damaged one is refused
    store = stream.path
    assert store.is_file()
    del lazy, stream, fresh_refs
    gc.collect()
    assert not store.parent.exists()
    broken = c2lst.io.read_histology(slides, mpp=MPP, tile_px=32, lazy=True).tiles
    broken.path.write_bytes(broken.path.read_bytes()[:1000])
    with pytest.raises(ValueError, match="truncated"):
        broken[50]


def test_streamed_pretraining_equals_in_memory(slides, tmp_path):
    kw = {"config": "tiny", "steps": 6, "batch_size": 8, "seed": 2}
    eager = c2lst.io.read_histology(slides, mpp=MPP, tile_px=32)
    lazy = c2lst.io.read_histology(slides, mpp=MPP, tile_px=32, lazy=True)
    ref = c2lst.tl.pretrain(eager, num_workers=0, **kw)
    streamed = c2lst.tl.pretrain(lazy, num_workers=2, out=tmp_path / "m", checkpoint_every=2, **kw)
    assert streamed.weights_sha256 == ref.weights_sha256
    assert streamed.summary["n_images"] == 77 and "streamed" in streamed.summary["source"]
    # resuming checks the stream's fingerprint: the finished run is found again
    assert c2lst.tl.pretrain(lazy, resume=True, out=tmp_path / "m", **kw).weights_sha256 == ref.weights_sha256
    with pytest.raises(ValueError, match="num_workers"):
        c2lst.tl.pretrain(lazy, num_workers=-1, **kw)
    too_few = c2lst.io.read_histology(slides / "slide2.jpg", mpp=MPP, tile_px=32, max_tiles=10, lazy=True)
    with pytest.raises(ValueError, match="at least 16"):
        c2lst.tl.pretrain(too_few, **kw)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_processes_under_accelerate_launch(slides, tmp_path):
    """``accelerate launch --multi_gpu --num_processes 2 -m c2lst.cli pretrain`` without CUDA: two gloo processes."""
    out = tmp_path / "central"
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(Path(c2lst.__file__).parents[1]),
                                                      os.environ.get("PYTHONPATH", "")]),
                        "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--num_machines", "1",
           "--multi_gpu", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
           "-m", "c2lst.cli", "pretrain", str(slides), "--out", str(out), "--config", "tiny", "--steps", "12",
           "--mpp", str(MPP), "--tile-px", "32", "--seed", "0"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("saved central model") >= 1
    model = CentralModel.load(out)
    summary = model.summary
    assert summary["num_processes"] == 2 and summary["steps"] == 12
    # the single-process contract: finite losses, the autoencoder's falls from its first step, the model samples
    first = c2lst.tl.pretrain(c2lst.io.read_histology(slides, mpp=MPP, tile_px=32), config="tiny", steps=2, seed=0)
    assert np.isfinite(summary["unet_loss"]) and np.isfinite(summary["autoencoder_loss"])
    assert summary["autoencoder_loss"] < first.summary["autoencoder_loss"]
    tiles = LocalModel.unadapted(model).generate(np.zeros((3, 1), np.float32), seeds=[0, 1, 2], steps=3,
                                                 guidance_scale=0.0)
    assert tiles.shape == (3, 3, 32, 32) and tiles.dtype == np.uint8 and tiles.std() > 0
    manifest = json.loads((out / "c2lst_central.json").read_text())
    assert manifest["summary"]["num_processes"] == 2
