"""Waiting for something that happens in another thread or process, with a clear failure; finding
the processes a test started."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll ``predicate`` until it is true; fail naming ``what`` after ``timeout`` seconds.
    (A bound on waiting, not a timing assertion: the timeouts are generous.)"""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def processes_mentioning(*texts: str) -> list[int]:
    """PIDs of live processes whose command line contains every one of ``texts``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().split()[2]
        except OSError:
            continue
        if all(text in cmdline for text in texts) and state != "Z":
            found.append(int(entry.name))
    return found
