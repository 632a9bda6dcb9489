"""The lot's allow/deny/lock lists as last received, kept on disk so the gate decides offline."""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from pathlib import Path

from protocol import LotLists, PayloadError, decode, encode

logger = logging.getLogger(__name__)


class ListsCache:
    """The newest :class:`LotLists`, persisted atomically (write, fsync, rename) on every update."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self.lists: LotLists | None = None
        if self.path.exists():
            try:
                self.lists = decode(LotLists, self.path.read_bytes())
                logger.info("lists from %s: %d allowed, %d denied, %d locked", self.path, *self.sizes())
            except (OSError, PayloadError) as err:
                logger.error("ignoring unreadable lists cache %s: %s", self.path, err)

    def sizes(self) -> tuple[int, int, int]:
        lists = self.lists
        return (len(lists.allow), len(lists.deny), len(lists.locked)) if lists else (0, 0, 0)

    def update(self, lists: LotLists) -> bool:
        """Keep ``lists`` if newer than what is held; returns whether it was taken."""
        with self._lock:
            if self.lists is not None and lists.ts < self.lists.ts:
                return False
            self.lists = lists
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".lists-")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(encode(lists))
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        return True
