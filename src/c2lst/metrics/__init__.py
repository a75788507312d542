"""Pure array metrics (numpy / scipy / scikit-image). Never imports anndata or spatialdata."""
