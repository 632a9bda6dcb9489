"""Message models for every payload on the wire (pydantic, JSON, schema version ``v``).

Receivers call :func:`decode`, which turns any bad payload into a :class:`PayloadError` that
names the offending fields, so a receiver can count it, log it and carry on.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from protocol.errors import PayloadError
from protocol.topics import ID_PATTERN

SCHEMA_VERSION = 1
MAX_PAYLOAD_BYTES = 256 * 1024

Id = Annotated[str, Field(pattern=ID_PATTERN, description="lot/gate/screen id, safe as a topic level")]
# Plate text without separators: CJK province characters, capital letters and digits.
Plate = Annotated[
    str, Field(pattern=r"^[0-9A-Z\u4e00-\u9fff]{2,12}$", description="plate text, no separators")
]
EventId = Annotated[
    str, Field(pattern=r"^[0-9A-Za-z_-]{16,40}$", description="unique id made at the edge (ULID)")
]
Epoch = Annotated[
    str,
    Field(
        pattern=r"^[0-9A-Za-z_-]{8,40}$",
        description="id of the gate's outbox; sequence numbers count within it",
    ),
]


def _aware_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("timestamp must carry a timezone (e.g. 2026-11-26T10:00:00Z)")
    return value.astimezone(UTC)


Timestamp = Annotated[datetime, AfterValidator(_aware_utc)]
# A person at an inspection lane, as the lane knows them from the credential they presented: a
# pseudonymous code (the booking account's id or the credential's booking id), never a raw ID number.
PersonCode = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$",
        description="pseudonymous person/credential code (booking account or booking id)",
    ),
]


def _absent(value: object) -> bool:
    """Optional fields added after v1 shipped are left out of the JSON when empty, so receivers
    that predate them (``extra="forbid"``) keep accepting every message that does not use them."""
    return value is None or value == []


def utc_now() -> datetime:
    return datetime.now(UTC)


class Direction(StrEnum):
    ENTRY = "entry"
    EXIT = "exit"


class Action(StrEnum):
    OPEN = "open"
    DENY = "deny"


class Reason(StrEnum):
    """Why a gate opened or refused. Extend, never rename: reasons are stored and reported."""

    SPACE_FREE = "space_free"  # entry, lot has room
    ALLOW_LISTED = "allow_listed"  # entry, lot full but plate on the allow list
    LOT_FULL = "lot_full"  # entry refused, no free space
    DENY_LISTED = "deny_listed"  # refused, plate on the deny list
    EXIT = "exit"  # exits always open
    NO_PLATE_READ = "no_plate_read"  # vehicle present, no plate read; policy decides
    LOCKED = "locked"  # refused, plate on the lot's lock list (e.g. a repeat intruder)
    LOT_CLOSED = "lot_closed"  # mode "closed": entries refused
    LOCKDOWN = "lockdown"  # mode "lockdown": nothing opens by itself
    REMOTE_OPEN = "remote_open"  # an operator's remote "open" command


# What a guidance screen (row) shows: a number (ok), the full/closed text, nothing, or the stale text.
ScreenState = Literal["ok", "full", "closed", "blank", "stale"]
# An operator's override of a screen or row: auto (the data decides), full, closed, blank.
ScreenMode = Literal["auto", "full", "closed", "blank"]


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1] = Field(1, description="schema version of this payload")


class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    action: Action
    reason: Reason


class GateEvent(_Message):
    """One vehicle at one gate: what was read and what the gate decided."""

    type: Literal["vehicle"] = "vehicle"
    id: EventId
    epoch: Epoch
    seq: int = Field(ge=1, description="the gate's monotonically increasing sequence number within its epoch")
    ts: Timestamp
    lot_id: Id
    gate_id: Id
    direction: Direction
    plate: Plate | None = None
    confidence: float = Field(0.0, ge=0.0, le=1.0, description="plate read confidence, 0 when no plate")
    decision: Decision
    crop_jpeg: str | None = Field(
        None,
        max_length=20_000,
        pattern=r"^[A-Za-z0-9+/=]*$",
        description="the plate crop, base64 JPEG, size-capped",
    )
    person: PersonCode | None = Field(
        None,
        exclude_if=_absent,
        description="inspection lanes: the person/credential code of a verified QR code, if any",
    )

    @model_validator(mode="after")
    def _confidence_needs_plate(self) -> GateEvent:
        if self.plate is None and self.confidence != 0.0:
            raise ValueError("confidence must be 0 when plate is null")
        return self


class GateStatus(_Message):
    """Retained state of a gate node: "offline" is its last will; while online it is re-published
    as a heartbeat with the node's health."""

    gate_id: Id
    lot_id: Id
    state: Literal["online", "offline"]
    ts: Timestamp
    mode: str | None = Field(
        None, max_length=16, description="operating mode: normal, free_exit, closed, lockdown"
    )
    barrier: str | None = Field(None, max_length=32, description="barrier state when online")
    backlog: int | None = Field(None, ge=0, description="events in the outbox not yet confirmed stored")
    backlog_age_s: float | None = Field(None, ge=0, description="age of the oldest of them")
    outbox_first_seq: int | None = Field(
        None, ge=1, description="oldest sequence number the outbox still holds"
    )
    epoch: Epoch | None = None
    dropped: int | None = Field(
        None, ge=0, description="events dropped because the outbox was full (an alarm)"
    )
    camera: Literal["ok", "down", "idle"] | None = None
    fps: float | None = Field(None, ge=0)
    last_read_ts: Timestamp | None = None
    cpu_temp_c: float | None = None
    disk_free_mb: float | None = Field(None, ge=0)


class GateAck(_Message):
    """Retained confirmation from the collector: every event of ``epoch`` up to ``upto`` is stored.
    The gate deletes those from its outbox; anything later it will publish again if needed."""

    gate_id: Id
    epoch: Epoch
    upto: int = Field(ge=0)
    ts: Timestamp


class CommandName(StrEnum):
    OPEN = "open"  # lift the barrier once
    SET_MODE = "set_mode"
    RELOAD_LISTS = "reload_lists"


class GateMode(StrEnum):
    NORMAL = "normal"
    FREE_EXIT = "free_exit"  # exits open without a read (already the rule) and entries as usual
    CLOSED = "closed"  # lot closed: entries refused, exits open
    LOCKDOWN = "lockdown"  # nothing opens automatically, exits included; remote "open" still works


class GateCommand(_Message):
    """A remote command to one gate. Past ``expires_at`` it is refused, however late it arrives."""

    id: EventId
    gate_id: Id
    command: CommandName
    issuer: str = Field(min_length=1, max_length=64, description="who asked (operator or service)")
    ts: Timestamp
    expires_at: Timestamp
    reason: str = Field("", max_length=200)
    mode: GateMode | None = Field(None, description="for set_mode")

    @model_validator(mode="after")
    def _shape(self) -> GateCommand:
        if self.command is CommandName.SET_MODE and self.mode is None:
            raise ValueError("set_mode needs mode")
        if self.expires_at <= self.ts:
            raise ValueError("expires_at must be after ts")
        return self


class CommandResult(_Message):
    """The gate's answer to a command (published under the gate's own prefix)."""

    command_id: str = Field(max_length=64)
    gate_id: Id
    ts: Timestamp
    result: Literal["done", "refused"]
    reason: str = Field(
        max_length=200, description="why refused (expired, invalid, unknown, ...), or what was done"
    )


class LotLists(_Message):
    """Retained allow/deny/lock lists of a lot; gates keep the last copy on disk and decide from it offline."""

    lot_id: Id
    ts: Timestamp
    allow: list[Plate] = Field(default_factory=list, max_length=100_000)
    deny: list[Plate] = Field(default_factory=list, max_length=100_000)
    locked: list[Plate] = Field(default_factory=list, max_length=100_000)
    locked_persons: list[PersonCode] = Field(
        default_factory=list,
        max_length=100_000,
        exclude_if=_absent,
        description="person/credential codes locked out: a lane refuses a code whose person is here",
    )


class InspectionResult(_Message):
    """The outcome of one vehicle inspection, published by the lane under its own prefix."""

    type: Literal["inspection"] = "inspection"
    id: EventId
    ts: Timestamp = Field(description="when the inspection finished")
    station: Id = Field(description="the inspection station (the lane's lot_id)")
    gate_id: Id = Field(description="the lane that published it")
    plate: Plate
    booking: PersonCode | None = Field(None, description="booking id of the credential, if known")
    person: PersonCode | None = Field(None, description="person/credential code, if known")
    result: Literal["pass", "fail"]


class LotAvailability(_Message):
    """Retained free-space count of one lot."""

    lot_id: Id
    name: str = Field(max_length=120)
    capacity: int = Field(ge=0)
    occupied: int = Field(ge=0)
    free: int = Field(ge=0)
    ts: Timestamp = Field(description="when this count was computed")
    last_event_ts: Timestamp | None = Field(None, description="time of the newest event counted")
    # added for guidance screens and the open-data feed (cloud/screens.py); see README "Guidance screens"
    stale: bool = Field(
        False, description="no gate of the lot has been heard for stale_after_s: the count may be wrong"
    )
    data_age_s: float | None = Field(
        None,
        ge=0,
        exclude_if=_absent,
        description="at ts, seconds since a gate of the lot last confirmed the count (None: never heard)",
    )
    stale_after_s: float | None = Field(
        None, gt=0, exclude_if=_absent, description="the lot's limit: older data counts as stale"
    )
    lat: float | None = Field(None, ge=-90, le=90, exclude_if=_absent, description="latitude of the entrance")
    lon: float | None = Field(
        None, ge=-180, le=180, exclude_if=_absent, description="longitude of the entrance"
    )

    @model_validator(mode="after")
    def _free_matches(self) -> LotAvailability:
        if self.free != max(self.capacity - self.occupied, 0):
            raise ValueError("free must equal max(capacity - occupied, 0)")
        return self


class ScreenRow(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    lot_id: Id
    label: str = Field(max_length=40)
    arrow: Literal["left", "right", "up", "down", "none"] = "none"
    free: int = Field(ge=0)
    capacity: int = Field(ge=0)
    full: bool
    # added for guidance screens that never lie (cloud/screens.py): a sign shows ``text``, not ``free``
    text: str | None = Field(
        None, max_length=16, exclude_if=_absent, description="what the sign shows in this row"
    )
    state: ScreenState | None = Field(None, exclude_if=_absent, description="why it shows that")
    mode: ScreenMode | None = Field(
        None, exclude_if=_absent, description="operator mode in force for the row"
    )
    data_age_s: float | None = Field(
        None, ge=0, exclude_if=_absent, description="at the content's ts, age of the lot's data (s)"
    )
    stale_after_s: float | None = Field(
        None, gt=0, exclude_if=_absent, description="data older than this is shown as stale"
    )


class ScreenContent(_Message):
    """Retained content of one guidance screen."""

    screen_id: Id
    name: str = Field(max_length=120)
    ts: Timestamp
    rows: list[ScreenRow] = Field(max_length=32)
    text: str | None = Field(
        None, max_length=600, exclude_if=_absent, description="the rows as one line, for one-line signs"
    )
    state: ScreenState | None = Field(
        None, exclude_if=_absent, description="the screen's mode if not auto, else stale if a row is stale"
    )
    mode: ScreenMode | None = Field(
        None, exclude_if=_absent, description="operator mode for the whole screen"
    )
    data_age_s: float | None = Field(
        None, ge=0, exclude_if=_absent, description="at ts, age of the oldest data shown (s)"
    )


class CollectorStatus(_Message):
    """Retained health of a collector: counts of what it stored and what it refused."""

    name: Id
    state: Literal["online", "offline"]
    ts: Timestamp
    stored: int = Field(0, ge=0)
    duplicates: int = Field(0, ge=0)
    rejected: dict[str, int] = Field(default_factory=dict)
    gaps_open: int = Field(0, ge=0, description="gates with a hole in their stored sequence numbers")
    unrecoverable: int = Field(
        0, ge=0, description="events given up for lost (the gate no longer holds them)"
    )


M = TypeVar("M", bound=BaseModel)


def encode(message: BaseModel) -> bytes:
    """Serialise a message for the wire (compact UTF-8 JSON)."""
    return message.model_dump_json(exclude_none=False).encode()


def decode(model: type[M], payload: bytes | bytearray | str) -> M:
    """Validate ``payload`` as ``model``; raise PayloadError naming every bad field."""
    size = len(payload)
    if size > MAX_PAYLOAD_BYTES:
        raise PayloadError("too_large", f"payload of {size} bytes exceeds {MAX_PAYLOAD_BYTES}")
    try:
        return model.model_validate_json(payload)
    except ValidationError as err:
        problems = err.errors(include_url=False, include_input=False)
        if any(p["type"] == "json_invalid" for p in problems):
            raise PayloadError("json", problems[0]["msg"]) from None
        if any(p["loc"][:1] == ("v",) for p in problems):
            raise PayloadError(
                "version", f"unsupported schema version (this receiver speaks v{SCHEMA_VERSION})"
            ) from None
        detail = "; ".join(
            f"{'.'.join(str(x) for x in p['loc']) or '(message)'}: {p['msg']}" for p in problems
        )
        raise PayloadError("schema", detail) from None


# -- visits and occupancy (cloud/visits.py) ----------------------------------------------------------
class SpaceSensorReport(_Message):
    """Bay sensors of one lot: how many of the spaces they watch are occupied (sensor gateway ->
    collector, on ``lots/{lot_id}/sensors``)."""

    lot_id: Id
    occupied: int = Field(ge=0, le=100_000, description="sensed spaces occupied")
    total_sensed: int = Field(ge=1, le=100_000, description="spaces with a working sensor")
    ts: Timestamp

    @model_validator(mode="after")
    def _within(self) -> SpaceSensorReport:
        if self.occupied > self.total_sensed:
            raise ValueError(f"occupied ({self.occupied}) exceeds total_sensed ({self.total_sensed})")
        return self


class OverstayNotice(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    plate: Plate
    since: Timestamp = Field(description="entry time")
    raised_at: Timestamp


class LotAlerts(_Message):
    """Retained: the vehicles in a lot now staying longer than its maximum (open overstay alerts)."""

    lot_id: Id
    ts: Timestamp
    overstays: list[OverstayNotice] = Field(default_factory=list, max_length=1000, description="oldest first")
    total: int = Field(0, ge=0, description="open overstay alerts (the list holds at most 1000)")


class CollectorRefresh(_Message):
    """Not retained, to every collector: re-publish these lots and screens from the database (after
    a change made outside the collector, e.g. a recalibration from the command line)."""

    lot_ids: list[Id] = Field(default_factory=list, max_length=10_000)
    screen_ids: list[Id] = Field(default_factory=list, max_length=10_000)
    ts: Timestamp
