"""Old argument names kept working for one release: one decorator, one warning text.

Dependency-free, so every part of the package (``core`` included) may use it.
"""
from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def warn_deprecated(message: str, *, stacklevel: int = 3) -> None:
    """Emit the ``FutureWarning`` of a name that goes away in the next release."""
    warnings.warn(f"{message} (deprecated; removed in the next release).", FutureWarning, stacklevel=stacklevel)


def renamed_kwargs(*, positional: tuple[str, ...] = (), **renamed: str) -> Callable[[F], F]:
    """Accept the old name of each renamed keyword, with a ``FutureWarning`` naming the new one.

    ``@renamed_kwargs(n_top="n_top_genes")`` maps ``n_top=`` to ``n_top_genes=``; passing both is a ``ValueError``.
    ``positional`` names the parameters after the first that were positional and are now keyword-only: extra
    positional arguments are passed as those keywords, with the same warning.
    """

    def decorate(func: F) -> F:
        name = func.__qualname__

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if len(args) > 1 and positional:
                extra, args = args[1:], args[:1]
                if len(extra) > len(positional):
                    raise TypeError(f"{name}() takes 1 positional argument but {len(extra) + 1} were given.")
                for key, value in zip(positional, extra, strict=False):
                    if key in kwargs:
                        raise TypeError(f"{name}() got multiple values for argument {key!r}.")
                    warn_deprecated(f"{name}: pass `{key}` by keyword, `{key}=...`")
                    kwargs[key] = value
            for old, new in renamed.items():
                if old in kwargs:
                    if new in kwargs:
                        raise ValueError(f"{name}: pass `{new}` only; `{old}` is its old name.")
                    warn_deprecated(f"{name}: `{old}` is now `{new}`; pass `{new}=`")
                    kwargs[new] = kwargs.pop(old)
            return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate
