"""The data-limited prediction benchmark behind ``c2lst benchmark`` (her2st, leave-one-section-out).

Every condition runs the recipe users run (:mod:`c2lst.tl` with :data:`c2lst.core.recipe.RECIPE`);
:func:`write_results_page` writes ``benchmarks/README.md`` from the committed tables.
"""
from __future__ import annotations

from ._cli import (
           add_report_arguments,
           add_run_arguments,
           add_synthetic_row_arguments,
           main,
           report_command,
           run_command,
)
from ._conditions import diffusion_pairs, fold_sdata
from ._report import summarize
from ._results import write_results_page
from ._run import CONDITIONS, SECTIONS, run_benchmark

__all__ = ["CONDITIONS", "SECTIONS", "add_report_arguments", "add_run_arguments", "add_synthetic_row_arguments",
           "diffusion_pairs", "fold_sdata", "main", "report_command", "run_benchmark", "run_command", "summarize", "write_results_page"]
