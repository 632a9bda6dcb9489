"""The wire contract between edge nodes and the cloud: MQTT topics and message models.

Edge and cloud import this package and nothing else from each other.
"""

from protocol.errors import PayloadError
from protocol.messages import (
    SCHEMA_VERSION,
    Action,
    CollectorStatus,
    CommandName,
    CommandResult,
    Decision,
    Direction,
    GateAck,
    GateCommand,
    GateEvent,
    GateMode,
    GateStatus,
    InspectionResult,
    LotAvailability,
    LotLists,
    Reason,
    ScreenContent,
    ScreenRow,
    decode,
    encode,
)
from protocol.topics import Topics

__all__ = [
    "SCHEMA_VERSION",
    "Action",
    "CollectorStatus",
    "CommandName",
    "CommandResult",
    "Decision",
    "Direction",
    "GateAck",
    "GateCommand",
    "GateEvent",
    "GateMode",
    "GateStatus",
    "InspectionResult",
    "LotAvailability",
    "LotLists",
    "PayloadError",
    "Reason",
    "ScreenContent",
    "ScreenRow",
    "Topics",
    "decode",
    "encode",
]
