"""The data-limited prediction benchmark behind ``c2lst benchmark`` (her2st, leave-one-section-out).

Every condition runs the recipe users run (:mod:`c2lst.tl` with :data:`c2lst.core.recipe.RECIPE`);
:func:`write_results_page` writes ``benchmarks/README.md`` from the committed tables.
"""
from __future__ import annotations

import lazy_loader as _lazy

# lazy: the command line builds its parser from _cli without loading torch or the benchmark's runner
__getattr__, __dir__, __all__ = _lazy.attach_stub(__name__, __file__)
