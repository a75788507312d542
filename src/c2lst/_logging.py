"""Scanpy-style logging: ``info("added .layers['x']", time=start)``."""
from __future__ import annotations

import logging
import sys
from datetime import datetime, timedelta

logger = logging.getLogger("c2lst")
if not logger.handlers:
    _handler = logging.StreamHandler(sys.stderr)
    _handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(_handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def _fmt(msg: str, time: datetime | None) -> tuple[str, datetime]:
    now = datetime.now()
    if time is not None:
        elapsed: timedelta = now - time
        msg = f"{msg} ({elapsed.total_seconds():.1f}s)"
    return msg, now


def info(msg: str, *, time: datetime | None = None) -> datetime:
    """Log ``msg`` at INFO level, with the time elapsed since ``time``; return the current time."""
    text, now = _fmt(msg, time)
    logger.info(text)
    return now


def warning(msg: str) -> None:
    """Log a warning."""
    logger.warning(f"WARNING: {msg}")


def debug(msg: str, *, time: datetime | None = None) -> datetime:
    """Log ``msg`` at DEBUG level; return the current time."""
    text, now = _fmt(msg, time)
    logger.debug(text)
    return now
