"""The parameter texts every ``pp``/``tl`` function shares, written once (scanpy's ``_doc_params``).

A docstring line holding only ``{name}`` (e.g. ``{table_key}``) becomes the numpydoc entry of that parameter,
at the line's indentation; the function may add lines of its own below it, indented as a description.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

_DATA = "``SpatialData`` (its spot table, chosen with ``table_key``) or ``AnnData``."
PARAMS = {
    "sdata": "sdata\n    ``SpatialData`` object, e.g. from :mod:`c2lst.io`.",
    "sdata_or_adata": f"sdata\n    {_DATA}",
    "data": f"data\n    {_DATA}",
    "table_key": ("table_key\n    Table of the spots when the ``SpatialData`` holds several (default: the only one not "
                  "written by\n    :func:`c2lst.tl.generate`); unused for an ``AnnData``."),
    "key_added": "key_added\n    Name of what is written (the slots listed under Returns are named after it).",
    "overwrite": ("overwrite\n    Replace what an earlier call wrote under ``key_added``; without it an existing key is "
                  "a ``ValueError``."),
    "copy": ("copy\n    Write into a copy of the data object and return the copy, as ``(copy, result)`` when the "
             "function\n    has a result; the input is left untouched. Elements not written (images, shapes) are "
             "shared, not copied."),
    "seed": "seed\n    Seed of every random draw: the same seed gives the same result.",
    "train_mask": ("train_mask\n    Boolean mask of the training spots, one per spot (integer arrays are refused: use "
                   "``mask.astype(bool)``)."),
    "library_key": ("library_key\n    ``.obs`` column naming each spot's section (``library_id``, as :mod:`c2lst.io` "
                    "and squidpy write it).\n    ``None``, or the default column absent: all spots are one section."),
    "layer_counts": "layer_counts\n    Layer holding the raw counts; ``None``: ``X``.",
    "patch_key": "patch_key\n    ``.obsm`` key of the spot patches (:func:`c2lst.pp.extract_patches`).",
}
PARAMS["key_added_overwrite_copy"] = "\n".join(PARAMS[k] for k in ("key_added", "overwrite", "copy"))  # every writer's
_PLACEHOLDER = re.compile(r"^(?P<indent>[ \t]*)\{(?P<name>\w+)\}[ \t]*$", re.MULTILINE)


def doc_params(func: F) -> F:
    """Fill the ``{name}`` lines of ``func``'s docstring with :data:`PARAMS`; an unknown name is an error."""

    def fill(m: re.Match[str]) -> str:
        if m["name"] not in PARAMS:
            raise ValueError(f"{func.__qualname__}'s docstring names an unknown parameter text {{{m['name']}}}; "
                             f"known: {sorted(PARAMS)}.")
        return "\n".join(m["indent"] + line for line in PARAMS[m["name"]].splitlines())

    func.__doc__ = _PLACEHOLDER.sub(fill, func.__doc__ or "")
    return func
