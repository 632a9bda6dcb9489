"""Errors raised while building or reading wire messages."""


class PayloadError(ValueError):
    """A payload that is not a valid message.

    ``reason`` is a short machine-readable tag used for counting (``json``, ``schema``,
    ``too_large``, ``version``); ``str(err)`` names every offending field.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class TopicError(ValueError):
    """An id that cannot be used as an MQTT topic level, or a topic that is not ours."""
