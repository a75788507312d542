"""napari dock widget: pick the gene and the layer (measured / predicted / error) the spots are coloured by."""
from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import QComboBox, QFormLayout, QLabel, QPushButton, QWidget

from ._expression import ERROR
from ._napari import add_spot_layer

LAYER_CHOICES = ("lognorm", "c2lst_pred", ERROR)
NO_DATA = "No c2lst spot layer: open your data with c2lst.pl.napari(sdata)."


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
        self.button.clicked.connect(self.show_selection)
        self.viewer.layers.events.inserted.connect(self.refresh_genes)
        self.viewer.layers.events.removed.connect(self.refresh_genes)
        self.refresh_genes()

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
        if "c2lst_panel" in table.var:
            panel = table.var["c2lst_panel"].to_numpy(bool)
            genes = [g for g, p in zip(genes, panel, strict=True) if p] + [g for g, p in zip(genes, panel, strict=True) if not p]
        if [self.gene.itemText(i) for i in range(self.gene.count())] != genes:
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
