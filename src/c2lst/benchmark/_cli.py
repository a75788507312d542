"""The benchmark's command line: ``python -m c2lst.benchmark [run] ...`` and ``python -m c2lst.benchmark report``.

``c2lst.cli`` builds its ``benchmark`` subcommand from :func:`add_run_arguments` / :func:`run_command` (the
command line imports the benchmark, never the reverse).
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence

from ..core.recipe import GUIDANCE_REFERENCES, RECIPE, SAMPLER_NAMES


def _align(value: str) -> str | None:
    """``--synthetic-align``: ``"none"`` is ``None``."""
    return None if value == "none" else value


def _weight(value: str) -> float | str:
    """``--synthetic-weight``: ``"cv"`` or a number."""
    if value == "cv":
        return value
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a number or 'cv', not {value!r}") from None


def add_sampling_arguments(p: argparse.ArgumentParser, *, steps_flag: str) -> None:
    """Add ``--sampler``, ``steps_flag``, ``--guidance-scale`` and ``--guidance-reference`` (the recipe's defaults).

    One definition for ``c2lst generate`` (``steps_flag="--steps"``) and ``c2lst benchmark``
    (``"--sample-steps"``), so both say and default the same.
    """
    p.add_argument("--sampler", choices=list(SAMPLER_NAMES), default=RECIPE.sampler,
                   help="sampler of the synthetic tiles (default %(default)s, the recipe's)")
    p.add_argument(steps_flag, type=int, default=RECIPE.generate_steps,
                   help="denoising steps per synthetic tile (default %(default)s, the recipe's)")
    p.add_argument("--guidance-scale", type=float, default=RECIPE.guidance_scale,
                   help="classifier-free guidance of the synthetic tiles (1: the conditional model alone; default "
                        "%(default)s, the recipe's)")
    p.add_argument("--guidance-reference", choices=list(GUIDANCE_REFERENCES), default=RECIPE.guidance_reference,
                   help="what guidance contrasts a profile with: the modulation off or the mean training profile "
                        "(default %(default)s, the recipe's)")


def add_synthetic_row_arguments(p: argparse.ArgumentParser) -> None:
    """Add ``--synthetic-weight`` and ``--synthetic-align`` (the recipe's defaults) to ``p``."""
    p.add_argument("--synthetic-weight", type=_weight, default=RECIPE.synthetic_weight,
                   help="ridge weight of synthetic rows, a number or 'cv' (chosen by leave-one-group-out on the "
                        "training spots; default %(default)s)")
    p.add_argument("--synthetic-align", type=_align, choices=["moments", None], default=RECIPE.synthetic_align,
                   metavar="{moments,none}",
                   help="'moments': standardise synthetic rows' features on their own moments; 'none': on the "
                        "training spots' (default %(default)s)")


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """Add the options of :func:`c2lst.benchmark.run_benchmark` to ``p``; defaults are the recipe's."""
    from ._data import CONDITIONS, SECTIONS, TISSUE_TILES

    p.add_argument("--sections", nargs="+", default=list(SECTIONS), help="her2st sections (default: %(default)s)")
    p.add_argument("--root", help="her2st folder (default ../shared/data/her2st or $C2LST_DATA_DIR)")
    p.add_argument("--fractions", nargs="+", type=float, default=[0.1, 0.25, 0.5, 1.0], help="paired fractions")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="seeds")
    p.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=list(CONDITIONS), help="conditions")
    p.add_argument("--test-sections", nargs="+", help="only the folds holding out these sections")
    p.add_argument("--encoder", default="handcrafted", choices=["handcrafted", "central", "cnn"],
                   help="predictor features of the non-floor conditions (default %(default)s)")
    p.add_argument("--adapt-steps", type=int, default=RECIPE.adapt_steps,
                   help="adaptation steps of the diffusion conditions (default %(default)s, the recipe's)")
    p.add_argument("--decoder-steps", type=int, default=RECIPE.decoder_steps,
                   help="local decoder steps of the diffusion conditions (0: pretrained decoder; default %(default)s)")
    p.add_argument("--strength", type=float, default=RECIPE.strength,
                   help="share of the denoising path per synthetic tile; < 1 starts from the source spot's patch "
                        "(default %(default)s, the recipe's)")
    add_sampling_arguments(p, steps_flag="--sample-steps")
    add_synthetic_row_arguments(p)
    p.add_argument("--n-augment", type=int, default=2, help="augmented copies per spot (default %(default)s)")
    p.add_argument("--augment-weight", type=float, default=1.0,
                   help="ridge weight of the augmented copies (default %(default)s)")
    p.add_argument("--group-norm", action="store_true",
                   help="non-floor predictors standardise each section's features on its own patches")
    p.add_argument("--local-steps", type=int, default=2000, help="pretraining steps of the local-only baseline (and refinement steps of refined_tissue)")
    p.add_argument("--local-unconditional", action=argparse.BooleanOptionalAction, default=RECIPE.local_unconditional,
                   help="adapt with the modulation's unconditional local component (tl.adapt(local_unconditional=True)); "
                        "default: the recipe's (%(default)s)")
    p.add_argument("--n-comps", type=int, default=RECIPE.n_comps, metavar="K",
                   help="the gene encoder reads K principal components of the panel (tl.adapt(n_comps=)); default: "
                        "the recipe's (%(default)s, the panel itself)")
    p.add_argument("--alpha-cv", choices=["loo", "groups"], default="loo",
                   help="ridge penalties of the non-floor predictors by leave-one-out or leave-one-training-section-out "
                        "CV (tl.predict(alpha_cv=); default %(default)s)")
    p.add_argument("--lora-rank", type=int, default=RECIPE.lora_rank, metavar="R",
                   help="LoRA adapters of rank R on a copy of the central UNet in the diffusion conditions' "
                        "adaptation (tl.adapt(lora_rank=); needs peft; default: %(default)s, none)")
    p.add_argument("--tissue-tiles", type=int, default=TISSUE_TILES, metavar="N",
                   help="unlabelled tissue tiles of the training sections per fold for c2l_tissue, "
                        "local_only_tissue and refined_tissue (seeded draw; default %(default)s)")
    p.add_argument("--grids", action="store_true",
                   help="also write grids/<label>_<section>_f<f>_s<seed>.png (<label> as the results page names the "
                        "rows): each fold's paired patches beside the tiles generated for them (pl.synthetic_grid)")
    p.add_argument("--central", default="default", help="central model directory or 'default'")
    p.add_argument("--quick", action="store_true", help="smoke test: two sections, one fold, tiny model")
    p.add_argument("--out", default="benchmarks/results", help="output folder (default %(default)s)")


def run_command(args: argparse.Namespace) -> int:
    """Run :func:`c2lst.benchmark.run_benchmark` with the parsed options (it writes its tables and figure)."""
    from ._run import run_benchmark

    central = None if args.central == "default" else args.central
    results = run_benchmark(args.sections, root=args.root, fractions=args.fractions, seeds=args.seeds,
                            conditions=args.conditions, quick=args.quick, out_dir=args.out, central=central,
                            encoder=args.encoder, adapt_steps=args.adapt_steps, decoder_steps=args.decoder_steps,
                            strength=args.strength, guidance_scale=args.guidance_scale,
                            guidance_reference=args.guidance_reference,
                            sample_steps=args.sample_steps, sampler=args.sampler, local_steps=args.local_steps, n_augment=args.n_augment,
                            augment_weight=args.augment_weight, synthetic_weight=args.synthetic_weight,
                            synthetic_align=args.synthetic_align, group_norm=args.group_norm,
                            test_sections=args.test_sections, tissue_tiles=args.tissue_tiles,
                            local_unconditional=args.local_unconditional, n_comps=args.n_comps, lora_rank=args.lora_rank,
                            alpha_cv=args.alpha_cv, grids=args.grids)
    print(f"{len(results)} runs; results.csv, summary.md and pcc_vs_fraction.png in {args.out}/")
    return 0


def add_report_arguments(p: argparse.ArgumentParser) -> None:
    """Add the options of :func:`c2lst.benchmark.write_results_page` to ``p``."""
    p.add_argument("measured", nargs="?", default="benchmarks/measured",
                   help="folder of the committed tables (default %(default)s)")
    p.add_argument("--out", help="page to write (default: README.md beside the measured folder)")


def report_command(args: argparse.Namespace) -> int:
    """Write the results page from the committed tables."""
    from ._results import write_results_page

    path = write_results_page(args.measured, out=args.out)
    print(f"wrote {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m c2lst.benchmark [run] OPTIONS`` runs the benchmark; ``... report [MEASURED]`` writes the page.

    Without a subcommand the options are those of ``run`` (as ``c2lst benchmark OPTIONS``).
    """
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m c2lst.benchmark",
                                     description="the data-limited her2st benchmark and its results page")
    sub = parser.add_subparsers(dest="command", required=True)
    add_run_arguments(run := sub.add_parser("run", help="run the benchmark (the default subcommand)"))
    run.set_defaults(func=run_command)
    add_report_arguments(rep := sub.add_parser("report", help="write benchmarks/README.md from benchmarks/measured"))
    rep.set_defaults(func=report_command)
    if not args or args[0] not in ("run", "report", "-h", "--help"):
        args = ["run", *args]
    try:
        ns = parser.parse_args(args)
    except SystemExit as exit_:  # --help, or a usage error (argparse printed it): return its status
        return int(exit_.code or 0)
    return int(ns.func(ns))

