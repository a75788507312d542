"""The data-limited prediction benchmark behind ``c2lst benchmark`` (her2st, leave-one-section-out)."""
from __future__ import annotations

from ._report import summarize
from ._run import CONDITIONS, SECTIONS, run_benchmark

__all__ = ["CONDITIONS", "SECTIONS", "main", "run_benchmark", "summarize"]


def main(argv: list[str] | None = None) -> int:
    """``python -m c2lst.benchmark ARGS``: the same as ``c2lst benchmark ARGS`` (one command line, in ``c2lst.cli``)."""
    import sys

    from ..cli import main as cli_main

    return cli_main(["benchmark", *(sys.argv[1:] if argv is None else argv)])
