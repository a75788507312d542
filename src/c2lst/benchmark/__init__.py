"""The data-limited prediction benchmark behind ``c2lst benchmark`` (her2st, leave-one-section-out)."""
from __future__ import annotations

from ._report import summarize
from ._run import CONDITIONS, SECTIONS, run_benchmark

__all__ = ["CONDITIONS", "SECTIONS", "main", "run_benchmark", "summarize"]


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m c2lst.benchmark [--quick] [--out DIR] [--sections C2 C3 ...]``."""
    import argparse

    p = argparse.ArgumentParser(prog="c2lst-benchmark", description=run_benchmark.__doc__.split("\n")[0])
    p.add_argument("--sections", nargs="+", default=list(SECTIONS))
    p.add_argument("--root", default=None)
    p.add_argument("--fractions", nargs="+", type=float, default=[0.1, 0.25, 0.5, 1.0])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--conditions", nargs="+", default=list(CONDITIONS))
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--central", default=None)
    p.add_argument("--encoder", default="handcrafted", choices=["handcrafted", "central", "cnn"])
    p.add_argument("--local-steps", type=int, default=2000)
    p.add_argument("--test-sections", nargs="+", default=None)
    a = p.parse_args(argv)
    run_benchmark(a.sections, root=a.root, fractions=a.fractions, seeds=a.seeds, conditions=a.conditions,
                  quick=a.quick, out_dir=a.out, central=a.central, encoder=a.encoder, local_steps=a.local_steps,
                  test_sections=a.test_sections)
    return 0
