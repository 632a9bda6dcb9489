"""Errors of the edge node. Each also inherits a builtin, and carries the offending value."""


class EdgeError(Exception):
    """Base of every edge error."""


class ImageError(EdgeError, ValueError):
    """An image file that cannot be used (empty, not an image, truncated, too large)."""

    def __init__(self, source: str, problem: str) -> None:
        super().__init__(f"{source}: {problem}")
        self.source = source
        self.problem = problem


class SourceError(EdgeError, OSError):
    """A frame source that cannot be opened or has stopped delivering."""


class EngineUnavailable(EdgeError, RuntimeError):
    """An OCR engine whose package is not installed; the message says how to install it."""


class FontNotFoundError(EdgeError, RuntimeError):
    """No font with Chinese glyphs is installed, so synthetic plates cannot be drawn."""
