"""The one place where c2lst writes folders and files: overwrite safety, atomic replacement, the user's umask.

Every folder c2lst writes (SpatialData stores of the CLI, central models, adapters, predictors, benchmark
outputs, pretraining output) carries a marker file :data:`MARKER` (JSON: what wrote it). ``overwrite=True``
replaces a folder only when it carries that marker (or, for folders saved before markers existed, a c2lst
manifest), and never when the target is, contains or lies inside an input of the same call
(:func:`check_output`, called before any long computation). Replacement is atomic (:func:`atomic_dir`): the
new content is written to a temporary sibling and swapped in only when complete, so an interrupted save
leaves the old folder loadable. Temporary folders and files get the permissions of the user's umask (not
``tempfile``'s 0700/0600). Standard library only: every layer may import it.
"""
from __future__ import annotations

import ctypes
import functools
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

MARKER = ".c2lst"
# manifests of folders c2lst wrote before the marker existed (central model, adapter); predictors: config.json
LEGACY_MANIFESTS = ("c2lst_central.json", "c2lst_local.json")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(path: str | Path) -> None:
    """Give ``path`` (a file or folder made by ``tempfile``) the permissions of a normal ``open``/``mkdir``."""
    base = 0o777 if Path(path).is_dir() else 0o666
    os.chmod(path, base & ~_umask())


def write_marker(folder: str | Path, kind: str) -> None:
    """Write the marker saying that c2lst wrote ``folder`` (``kind``: store, central, adapter, predictor, ...)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        __version__ = version("c2lst")
    except PackageNotFoundError:  # run from a source tree that is not installed
        __version__ = "unknown"
    Path(folder, MARKER).write_text(json.dumps({"written_by": "c2lst", "kind": kind, "version": __version__}) + "\n")


def is_c2lst_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder c2lst wrote (its marker, or a c2lst manifest of an older version)."""
    path = Path(path)
    if not path.is_dir():
        return False
    if (path / MARKER).is_file() or any((path / m).is_file() for m in LEGACY_MANIFESTS):
        return True
    config = path / "config.json"  # a predictor saved before markers existed
    if config.is_file() and (path / "model.safetensors").is_file():
        try:
            return str(json.loads(config.read_text()).get("format", "")).startswith("c2lst")
        except (ValueError, OSError, AttributeError):
            return False
    return False


def _overlaps(target: Path, inputs: Iterable[str | Path | None]) -> Path | None:
    """Return the first input that ``target`` is, contains or lies inside (``None``: no overlap)."""
    t = target.resolve()
    for item in inputs:
        if item is None:
            continue
        i = Path(item).resolve()
        if t == i or t in i.parents or i in t.parents:
            return Path(item)
    return None


def check_output(target: str | Path, *, overwrite: bool, inputs: Iterable[str | Path | None] = (),
                 what: str = "output", flag: str = "`overwrite=True`", allow_existing: bool = False,
                 hint: str = "") -> Path:
    """Refuse an output folder that c2lst may not write; call it before any long computation.

    Parameters
    ----------
    target
        Folder to be written.
    overwrite
        Whether the caller asked to replace an existing folder.
    inputs
        Paths read by the same call: ``target`` must not be, contain or lie inside any of them.
    what, flag
        How the error names the output (e.g. ``"--out"``) and the overwrite switch (``"--overwrite"``).
    allow_existing
        Accept an existing c2lst folder without ``overwrite`` (the caller checks what it holds).
    hint
        Appended to the message when ``target`` overlaps an input (another way to get what was meant).

    Returns
    -------
    ``target`` as a ``Path``.

    Raises
    ------
    ValueError
        When ``target`` overlaps an input, is a file, exists without ``overwrite``, or exists and was not
        written by c2lst (not empty and without the :data:`MARKER`).
    """
    target = Path(target)
    clash = _overlaps(target, inputs)
    if clash is not None:
        relation = "is" if target.resolve() == clash.resolve() else (
            "contains" if target.resolve() in clash.resolve().parents else "lies inside")
        raise ValueError(f"{what} {target} {relation} the input {clash} of this call: c2lst never writes over its "
                         f"inputs. Choose another {what} outside the inputs{hint}.")
    if not target.exists() and not target.is_symlink():
        return target
    if not target.is_dir():
        raise ValueError(f"{what} {target} exists and is a file, not a folder c2lst wrote; c2lst does not replace "
                         f"it. Choose another {what} or move the file away.")
    empty = not any(target.iterdir())
    if not empty and not is_c2lst_folder(target):
        raise ValueError(f"{what} {target} exists and was not written by c2lst (no {MARKER} marker); c2lst only "
                         f"replaces folders it wrote, even with {flag}. Choose another {what}, or move or delete "
                         "that folder yourself.")
    if not (overwrite or empty or allow_existing):
        raise ValueError(f"{what} {target} already exists; pass {flag} to replace it or choose another {what}.")
    return target


@functools.cache
def _renameat2() -> Any:
    """``renameat2`` of the C library (Linux, glibc 2.28+), else ``None``."""
    try:
        return ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError, TypeError):
        return None


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); ``False`` when not supported."""
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


@contextmanager
def atomic_dir(target: str | Path, *, kind: str | None = None, keep: Iterable[str] = ()) -> Iterator[Path]:
    """Yield a temporary folder beside ``target``; when the block completes it replaces ``target``.

    Parameters
    ----------
    target
        Folder to write. An existing one is swapped out only once the new content is complete (atomically
        where the OS supports it), so an interruption leaves either the old or the new folder.
    kind
        When given, the :data:`MARKER` recording that c2lst wrote the folder is added.
    keep
        Entries of the old folder moved into the new one after the swap (e.g. ``"checkpoints"``).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    apply_umask(tmp)
    try:
        yield tmp
        if kind is not None:
            write_marker(tmp, kind)
        for p in tmp.rglob("*"):  # some writers (safetensors) create 0600 files: give all the umask's permissions
            apply_umask(p)
        if target.exists():
            if not _exchange(tmp, target):  # no atomic swap here: two renames, the old one kept until the end
                old = target.parent / f".{target.name}.old-{os.getpid()}"
                os.replace(target, old)
                os.replace(tmp, target)
                tmp = old
            for name in keep:  # tmp now holds the old folder
                if (tmp / name).exists() and not (target / name).exists():
                    os.replace(tmp / name, target / name)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary file path beside ``path``; when the block completes it replaces ``path`` (rename)."""
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    apply_umask(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: str | Path, write: Callable[[Path], Any]) -> None:
    """Call ``write(tmp)`` on a temporary sibling of ``path``, then rename it to ``path``."""
    with atomic_file(path) as tmp:
        write(tmp)


def write_json(path: str | Path, obj: dict[str, Any]) -> None:
    """Write JSON atomically (temp file + rename)."""
    write_atomic(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=1, sort_keys=True)))


def remove_temporaries(folder: str | Path, pattern: str) -> list[Path]:
    """Delete leftover temporary folders/files matching ``pattern`` in ``folder`` (after a kill); return them."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = sorted(folder.glob(pattern))
    for p in found:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return found
