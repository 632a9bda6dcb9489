"""One context-manager behaviour for everything here that holds pins, threads or sockets."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class Closing:
    """``with X(...) as x:`` calls ``x.close()`` on the way out; subclasses define ``close``."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
