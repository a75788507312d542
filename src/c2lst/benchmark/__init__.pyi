"""The data-limited prediction benchmark behind ``c2lst benchmark``."""
from ._cli import (
    add_report_arguments,
    add_run_arguments,
    add_sampling_arguments,
    add_synthetic_row_arguments,
    main,
    report_command,
    run_command,
)
from ._conditions import diffusion_pairs, fold_sdata
from ._data import CONDITIONS, SECTIONS
from ._report import summarize
from ._results import write_results_page
from ._run import run_benchmark

__all__ = [
    "CONDITIONS",
    "SECTIONS",
    "add_report_arguments",
    "add_run_arguments",
    "add_sampling_arguments",
    "add_synthetic_row_arguments",
    "diffusion_pairs",
    "fold_sdata",
    "main",
    "report_command",
    "run_benchmark",
    "run_command",
    "summarize",
    "write_results_page",
]
