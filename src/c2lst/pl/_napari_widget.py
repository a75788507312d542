"""napari dock widget: pick the gene and the layer (measured / predicted / error) the spots are coloured by."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from qtpy.QtWidgets import QComboBox, QFileDialog, QFormLayout, QHBoxLayout, QLabel, QPushButton, QWidget

from ._expression import ERROR
from ._napari import add_spot_layer

LAYER_CHOICES = ("lognorm", "c2lst_pred", ERROR)
NO_DATA = ("No c2lst spots in the viewer yet: open a store written by c2lst (.zarr) or load the demo section "
           "with the buttons above (or File > Open, or c2lst.pl.napari(sdata) from Python).")


class ExpressionWidget(QWidget):
    """Choose a gene and a layer; the spots of the active c2lst spot layer get a new Points layer coloured by it.

    Parameters
    ----------
    napari_viewer
        The viewer (napari passes it when the widget opens from the Plugins menu).
    """

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self._source: Any = None  # the spot layer the boxes were filled from
        self.gene = QComboBox()
        self.gene.setEditable(True)
        self.layer = QComboBox()
        self.layer.addItems(LAYER_CHOICES)
        self.button = QPushButton("Show")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        form = QFormLayout(self)
        form.addRow("gene", self.gene)
        form.addRow("layer", self.layer)
        form.addRow(self.button)
        form.addRow(self.status)
        self.open_button = QPushButton("Open c2lst store…")
        self.demo_button = QPushButton("Load demo section")
        row = QHBoxLayout()
        row.addWidget(self.open_button)
        row.addWidget(self.demo_button)
        form.insertRow(0, row)
        self.open_button.clicked.connect(lambda: self.open_store())
        self.demo_button.clicked.connect(self.load_demo)
        self.button.clicked.connect(self.show_selection)
        self.viewer.layers.events.inserted.connect(self.refresh_genes)
        self.viewer.layers.events.removed.connect(self.refresh_genes)
        self.refresh_genes()

    def _add(self, layers: list[tuple[Any, dict[str, Any], str]]) -> None:
        for data, kwargs, kind in layers:
            getattr(self.viewer, f"add_{kind}")(data, **kwargs)
        self.refresh_genes()

    def open_store(self, path: str | Path | None = None) -> bool:
        """Add the layers of a c2lst store (asks for the folder when ``path`` is ``None``); ``False`` if not opened."""
        from ._napari_reader import read_store

        if path is None:
            path = QFileDialog.getExistingDirectory(self, "Open a c2lst store (.zarr folder)")
            if not path:
                return False
        try:
            self._add(read_store(str(path)))
        except ValueError as err:
            self.status.setText(str(err))
            return False
        return True

    def load_demo(self) -> None:
        """Add the bundled demo section (her2st C2), coloured by ERBB2."""
        from ._napari_reader import demo_sample

        self._add(demo_sample())

    def spot_layer(self) -> Any:
        """Return the selected c2lst spot layer (else the first one), or ``None``."""
        active = self.viewer.layers.selection.active
        candidates = ([active] if active is not None else []) + list(self.viewer.layers)
        return next((layer for layer in candidates if "c2lst_spots" in layer.metadata), None)

    def spots(self) -> dict[str, Any] | None:
        """Return the spot geometry and table of :meth:`spot_layer`, or ``None``."""
        layer = self.spot_layer()
        return None if layer is None else layer.metadata["c2lst_spots"]

    def refresh_genes(self, *_: Any) -> None:
        """List the table's genes (panel genes first) in the gene box; start from the spot layer's gene/layer."""
        source = self.spot_layer()
        if source is None:
            self.status.setText(NO_DATA)
            return
        table = source.metadata["c2lst_spots"]["table"]
        genes = list(table.var_names)
        key = next((k for k in ("c2lst_pred_panel", "c2lst_panel") if k in table.var), None)
        if key is not None:
            panel = table.var[key].to_numpy(bool)
            genes = [g for g, p in zip(genes, panel, strict=True) if p] + [g for g, p in zip(genes, panel, strict=True) if not p]
        if source is not self._source or [self.gene.itemText(i) for i in range(self.gene.count())] != genes:
            self._source = source
            self.gene.clear()
            self.gene.addItems(genes)
            self.gene.setCurrentText(source.metadata["gene"])
            if self.layer.findText(source.metadata["layer"]) < 0:
                self.layer.addItem(source.metadata["layer"])
            self.layer.setCurrentText(source.metadata["layer"])
        self.status.setText("")

    def show_selection(self) -> Any:
        """Add the Points layer for the chosen gene and layer; return it (``None`` with the reason shown)."""
        spots = self.spots()
        if spots is None:
            self.status.setText(NO_DATA)
            return None
        try:
            layer = add_spot_layer(self.viewer, spots, self.gene.currentText(), self.layer.currentText())
        except ValueError as err:
            self.status.setText(str(err))
            return None
        self.status.setText(f"added {layer.name}")
        return layer
