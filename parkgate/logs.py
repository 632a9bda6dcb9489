"""Logging set-up shared by the services: one line per record on stderr."""

from __future__ import annotations

import logging
import os
import sys


def setup_logging(level: str | None = None, *, name: str | None = None) -> None:
    """Configure the root logger once. ``PARKGATE_LOG_LEVEL`` overrides the default INFO."""
    level = (level or os.environ.get("PARKGATE_LOG_LEVEL") or "INFO").upper()
    tag = f"{name} " if name else ""
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format=f"%(asctime)s %(levelname)-7s {tag}%(name)s: %(message)s",
        datefmt="%H:%M:%S",
        force=True,
    )
    # Chatty third-party loggers.
    for noisy in ("waitress.queue", "PIL", "RapidOCR"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
