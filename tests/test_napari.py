"""Headless napari test: needs napari[pyqt6] and an X display (Xvfb via pytest-xvfb; scripts/install_test_deps.sh)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

if not os.environ.get("DISPLAY"):
    why = "pytest-xvfb is not installed" if shutil.which("Xvfb") else "Xvfb is missing: run scripts/install_test_deps.sh"
    pytest.skip(f"no X display ({why}); napari's OpenGL canvas does not render with QT_QPA_PLATFORM=offscreen",
                allow_module_level=True)
if os.environ.get("QT_QPA_PLATFORM") == "offscreen":
    os.environ["QT_QPA_PLATFORM"] = "xcb"
napari = pytest.importorskip("napari", reason="napari not installed: pip install 'c2lst[napari]'")
_qt = subprocess.run([sys.executable, "-c", "from qtpy.QtWidgets import QApplication; QApplication([])"],
                     capture_output=True, text=True, timeout=120)
if _qt.returncode != 0:  # Qt aborts the whole process when its xcb libraries are missing: probe in a child
    pytest.skip(f"Qt cannot open the X display ({_qt.stderr.strip()[-300:]}); run scripts/install_test_deps.sh",
                allow_module_level=True)

import anndata as ad  # noqa: E402
import pandas as pd  # noqa: E402
import spatialdata as sd  # noqa: E402
from spatialdata.models import Image2DModel, ShapesModel, TableModel  # noqa: E402
from spatialdata.transformations import Identity, Scale  # noqa: E402

import c2lst  # noqa: E402
from c2lst.pl._napari_reader import get_reader  # noqa: E402
from c2lst.pl._napari_widget import ExpressionWidget  # noqa: E402

pytestmark = [pytest.mark.gui]

PINK = np.array([230, 150, 200])
VIRIDIS_HIGH = np.array([253, 231, 37])
VIRIDIS_LOW = np.array([68, 1, 84])


def two_spot_sdata() -> sd.SpatialData:
    """Spot A (x=300) expresses G high, spot B (x=700) low; both on a pink tissue rectangle of a 2x-downscaled image."""
    img = np.full((3, 400, 500), 255, dtype=np.uint8)  # stored at half resolution: global = 2 x pixels
    img[:, 125:275, 100:400] = PINK[:, None, None]  # global x 200..800, y 250..550
    image = Image2DModel.parse(img, dims=("c", "y", "x"), transformations={"global": Scale([2.0, 2.0], axes=("y", "x"))})
    shapes = ShapesModel.parse(np.array([[300.0, 400.0], [700.0, 400.0]]), geometry=0, radius=np.array([80.0, 80.0]),
                               transformations={"global": Identity()})
    obs = pd.DataFrame({"region": pd.Categorical(["s_spots"] * 2), "spot_id": [0, 1], "library_id": pd.Categorical(["s"] * 2)},
                       index=["0x0", "1x0"])
    table = ad.AnnData(X=np.array([[50.0, 1.0], [1.0, 50.0]], dtype=np.float32), obs=obs, var=pd.DataFrame(index=["G", "H"]))
    table.layers["lognorm"] = np.array([[4.0, 0.5], [0.5, 4.0]], dtype=np.float32)
    table.layers["c2lst_pred"] = np.array([[3.0, 1.0], [1.0, 2.0]], dtype=np.float32)
    table = TableModel.parse(table, region="s_spots", region_key="region", instance_key="spot_id")
    return sd.SpatialData(images={"s_image": image}, shapes={"s_spots": shapes}, tables={"table": table})


def _centroid(shot: np.ndarray, colour: np.ndarray, tol: float = 40.0) -> np.ndarray:
    near = np.linalg.norm(shot[..., :3].astype(float) - colour, axis=-1) < tol
    assert near.sum() > 50, f"colour {colour} not rendered"
    ys, xs = np.nonzero(near)
    return np.array([xs.mean(), ys.mean()])


@pytest.fixture
def viewer_and_data():
    sdata = two_spot_sdata()
    viewer = c2lst.pl.napari(sdata, genes="G", layer="lognorm", show=True)  # the GL canvas renders only when shown
    yield viewer, sdata
    viewer.close()


def test_spots_coloured_by_expression_on_tissue(viewer_and_data):
    viewer, _ = viewer_and_data
    assert [layer.name for layer in viewer.layers] == ["s_image", "G (lognorm)"]
    viewer.window.resize(800, 600)
    viewer.reset_view()
    shot = viewer.screenshot(canvas_only=True, flash=False)
    high, low = _centroid(shot, VIRIDIS_HIGH), _centroid(shot, VIRIDIS_LOW)
    assert high[0] < low[0]  # spot A (high) is left of spot B (low)
    assert abs(high[1] - low[1]) < 5
    pink = np.linalg.norm(shot[..., :3].astype(float) - PINK, axis=-1) < 40
    ys, xs = np.nonzero(pink)
    for cx, cy in (high, low):  # both spots sit on the tissue: the image's 2x scale was applied
        assert xs.min() < cx < xs.max() and ys.min() < cy < ys.max()
    # the spots' world positions match the circles' global coordinates
    points = viewer.layers["G (lognorm)"]
    world = np.array([points._data_to_world(p) for p in points.data])
    np.testing.assert_allclose(world, [[400.0, 300.0], [400.0, 700.0]])


def test_widget_switches_gene_and_layer(viewer_and_data):
    viewer, sdata = viewer_and_data
    widget = ExpressionWidget(viewer)
    assert widget.gene.count() == 2
    assert (widget.gene.currentText(), widget.layer.currentText()) == ("G", "lognorm")  # from the open layer
    widget.gene.setCurrentText("H")
    widget.layer.setCurrentText("error")
    layer = widget.show_selection()
    assert layer.name == "H (error)" and layer.metadata["layer"] == "error"
    expected = sdata.tables["table"].layers["c2lst_pred"][:, 1] - sdata.tables["table"].layers["lognorm"][:, 1]
    np.testing.assert_allclose(layer.features["value"], expected)
    lo, hi = layer.face_contrast_limits
    assert lo == -hi  # diverging, centred on zero
    # colours follow the values: the larger error gets the other end of the colormap
    assert not np.allclose(layer.face_color[0], layer.face_color[1])


def test_bad_gene_is_a_value_error():
    sdata = two_spot_sdata()
    with pytest.raises(ValueError, match="not in the table's var_names"):
        c2lst.pl.napari(sdata, genes="NOPE", show=False)


def test_npe2_manifest_exposes_the_widget():
    npe2 = pytest.importorskip("npe2")
    manifest = npe2.PluginManifest.from_distribution("c2lst")
    (widget,) = manifest.contributions.widgets
    (command,) = [c for c in manifest.contributions.commands if c.id == widget.command]
    assert command.python_name == "c2lst.pl._napari_widget:ExpressionWidget"
    from npe2.manifest.utils import import_python_name

    pm = npe2.PluginManager.instance()
    pm.discover()
    assert widget in list(pm.iter_widgets())  # napari lists it under Plugins
    assert import_python_name(command.python_name) is ExpressionWidget


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory):
    """The demo section with patches, lognorm and a prediction, written to ``demo.zarr`` as `c2lst demo` does."""
    sdata = c2lst.datasets.demo()
    c2lst.pp.extract_patches(sdata, patch_px=16)
    mask = np.arange(sdata.tables["table"].n_obs) % 2 == 0
    c2lst.pp.normalize(sdata, train_mask=mask)
    c2lst.tl.predict(sdata, train_mask=mask, synthetic=None, n_top_genes=16, seed=0)
    store = tmp_path_factory.mktemp("napari") / "demo.zarr"
    sdata.write(store)
    return store, mask


def _viridis_pixels(shot: np.ndarray) -> int:
    """Pixels of the viridis greens/yellows, which H&E (pink/purple: green lowest) never shows."""
    rgb = shot[..., :3].astype(int)
    return int(((rgb[..., 1] > rgb[..., 0] + 40) & (rgb[..., 1] > 100)).sum())


def test_napari_opens_a_store_with_the_c2lst_reader(demo_store):
    """`napari demo.zarr`: npe2 offers the c2lst reader, which shows the H&E, the predicted gene and the split."""
    npe2 = pytest.importorskip("npe2")
    store, mask = demo_store
    pm = npe2.PluginManager.instance()
    pm.discover()
    assert "c2lst" in [r.plugin_name for r in pm.iter_compatible_readers([str(store)])]
    assert get_reader(str(store.parent)) is None  # not a store: not ours
    viewer = napari.Viewer(show=True)
    try:
        viewer.open(str(store), plugin="c2lst")
        names = [layer.name for layer in viewer.layers]
        assert names[0] == "C2_image" and names[1].endswith("(c2lst_pred)") and names[2] == "held-out spots"
        assert len(viewer.layers["held-out spots"].data) == int((~mask).sum())
        viewer.window.resize(900, 700)
        viewer.reset_view()
        shot = viewer.screenshot(canvas_only=True, flash=False)
        assert _viridis_pixels(shot) > 500  # the spots are drawn in their colormap over the H&E
        assert (np.abs(shot[..., :3].astype(int) - [120, 80, 160]).sum(-1) < 120).sum() > 500  # the H&E is drawn
        viewer.layers[names[1]].visible = False
        assert _viridis_pixels(viewer.screenshot(canvas_only=True, flash=False)) < 50
    finally:
        viewer.close()


def test_widget_from_the_menu_loads_a_store_and_the_sample(demo_store):
    store, _ = demo_store
    viewer = napari.Viewer(show=False)
    try:
        widget = ExpressionWidget(viewer)  # as from Plugins > c2lst: an empty viewer
        assert "open a store written by c2lst" in widget.status.text()
        assert not widget.open_store(store.parent)  # a folder that is not a c2lst store: said, nothing added
        assert "not a store written by c2lst" in widget.status.text() and len(viewer.layers) == 0
        assert widget.open_store(store)
        table = widget.spots()["table"]
        assert widget.gene.count() == table.n_vars and widget.layer.currentText() == "c2lst_pred"
        gene = str(table.var_names[table.var["c2lst_pred_panel"].to_numpy(bool)][1])
        widget.gene.setCurrentText(gene)
        widget.layer.setCurrentText("error")
        assert widget.show_selection().name == f"{gene} (error)"
        viewer.layers.clear()
        viewer.open_sample("c2lst", "demo")  # File > Open Sample > c2lst
        assert [layer.name for layer in viewer.layers] == ["C2_image", "ERBB2 (lognorm)"]
        assert widget.spots() is not None and widget.gene.currentText() == "ERBB2"
    finally:
        viewer.close()
