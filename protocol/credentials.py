"""Signed one-time credentials for inspection lanes ("one car, one code"), carried in a QR code.

A credential says: booking ``booking`` may pass lane ``lane`` of station ``station`` once, with the
car whose plate is ``plate``, between ``valid_from`` and ``valid_to``. The station signs it with its
Ed25519 private key; a lane checks it offline with the station's public key.

The QR text (format ``PG1``, part of the wire contract)::

    PG1:<base45(payload ‖ signature)>

``signature`` is the 64-byte Ed25519 signature over exactly the ``payload`` bytes (it is the last
64 bytes of the decoded blob). ``payload`` (schema version 1) is packed binary, big-endian:

    ======  =====  =============================================================
    offset  bytes  field
    ======  =====  =============================================================
    0       1      schema version, ``1``
    1       4      valid_from, unsigned UTC epoch seconds
    5       4      valid_to, unsigned UTC epoch seconds
    9       12     nonce, random (printed as 16 characters of unpadded base64url)
    21      1+n    booking id, one length byte then UTF-8
    ...     1+n    plate (no separators, e.g. ``鄂A12345``), one length byte then UTF-8
    ...     1+n    station id, one length byte then UTF-8
    ...     1+n    lane id, one length byte then UTF-8
    ======  =====  =============================================================

Why this shape: the signature alone is 96 of the ~175 characters, so every payload byte counts.
base45 (RFC 9285, as in the EU Digital COVID Certificate's ``HC1:``) keeps the text inside the QR
alphanumeric alphabet (5.5 bits per character against 8 in byte mode), and the packed payload is
half the size of a compact JSON one. A typical code fits QR version 7 at error correction M
instead of version 11 for base64url of JSON, and ``python -m bench.qr`` shows that this decides
whether a code photographed at ~80 px is readable at all. A 96-bit nonce is unique enough for
any number of codes a station will ever issue; the signature makes it unforgeable.

:func:`verify` checks in this order and stops at the first refusal: the text is ours and well
formed (``unreadable``), the signature (``bad_signature``) — nothing unsigned is looked at before
this — the payload's schema (``unreadable``), the time window with a small clock skew
(``not_yet_valid``, ``expired``), the station (``wrong_station``) and the plate read at the lane
(``plate_mismatch``). ``already_used`` is decided by the lane's used-code store
(``edge.qr.UsedCodes``), which is consulted only when everything else holds.
"""

from __future__ import annotations

import base64
import secrets
import struct
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from protocol.messages import Id, Plate

PREFIX = "PG1:"
SCHEMA_VERSION = 1
SIGNATURE_BYTES = 64
NONCE_BYTES = 12
MAX_TEXT_CHARS = 1200  # a v1 code is ~175 characters; anything far longer is not ours
_HEAD = ">BII12s"  # version, valid_from, valid_to, nonce
_HEAD_BYTES = struct.calcsize(_HEAD)
DEFAULT_SKEW = timedelta(seconds=60)

Clock = Callable[[], datetime]
BookingId = Annotated[
    str,
    Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,39}$", description="booking id from the booking system"),
]
Nonce = Annotated[
    str, Field(pattern=r"^[A-Za-z0-9_-]{16}$", description="12 random bytes, unpadded base64url")
]


def utc_now() -> datetime:
    return datetime.now(UTC)


def _whole_utc_seconds(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("timestamp must carry a timezone (e.g. 2026-11-26T10:00:00Z)")
    return value.astimezone(UTC).replace(microsecond=0)


Seconds = Annotated[datetime, AfterValidator(_whole_utc_seconds)]


def iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


class Refusal(StrEnum):
    """Why a lane refused a code. Part of the contract: extend, never rename."""

    BAD_SIGNATURE = "bad_signature"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    WRONG_STATION = "wrong_station"
    PLATE_MISMATCH = "plate_mismatch"
    ALREADY_USED = "already_used"
    UNREADABLE = "unreadable"


class CredentialKeyError(ValueError):
    """A key file that is missing or is not the expected Ed25519 key; the message says which."""


class Credential(BaseModel):
    """What a signed code grants: one passage of one car through one lane within a time window."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1] = Field(1, description="schema version of the credential")
    booking: BookingId
    plate: Plate
    station: Id
    lane: Id
    valid_from: Seconds = Field(description="first moment the code is valid (aware, UTC, whole seconds)")
    valid_to: Seconds = Field(description="last moment the code is valid (aware, UTC, whole seconds)")
    nonce: Nonce = Field(default_factory=lambda: new_nonce(), description="makes the code one-time")

    @model_validator(mode="after")
    def _window(self) -> Credential:
        if self.valid_to <= self.valid_from:
            raise ValueError("valid_to must be later than valid_from")
        if self.valid_from.timestamp() < 0 or self.valid_to.timestamp() >= 2**32:
            raise ValueError("validity must lie between 1970 and 2106 (unsigned 32-bit epoch seconds)")
        return self

    def payload(self) -> bytes:
        """The exact bytes that are signed (packed binary, see the module docstring)."""
        head = struct.pack(
            _HEAD,
            self.v,
            int(self.valid_from.timestamp()),
            int(self.valid_to.timestamp()),
            base64.urlsafe_b64decode(self.nonce + "=" * (-len(self.nonce) % 4)),
        )
        strings = b"".join(
            bytes([len(raw)]) + raw
            for raw in (s.encode() for s in (self.booking, self.plate, self.station, self.lane))
        )
        return head + strings

    @classmethod
    def from_payload(cls, data: bytes) -> Credential:
        """Parse signed payload bytes; raises ValueError naming what is wrong."""
        if not data or data[0] != SCHEMA_VERSION:
            version = data[0] if data else None
            raise ValueError(f"unsupported schema version {version} (this lane reads {SCHEMA_VERSION})")
        if len(data) < _HEAD_BYTES:
            raise ValueError(f"payload of {len(data)} bytes is shorter than its {_HEAD_BYTES}-byte header")
        _, start, end, nonce = struct.unpack_from(_HEAD, data)
        strings, at = [], _HEAD_BYTES
        for name in ("booking", "plate", "station", "lane"):
            if at >= len(data) or at + 1 + data[at] > len(data):
                raise ValueError(f"{name}: payload ends inside this field")
            raw, at = data[at + 1 : at + 1 + data[at]], at + 1 + data[at]
            try:
                strings.append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                raise ValueError(f"{name}: not UTF-8") from None
        if at != len(data):
            raise ValueError(f"{len(data) - at} unexpected bytes after the lane")
        booking, plate, station, lane = strings
        try:
            return cls(
                booking=booking,
                plate=plate,
                station=station,
                lane=lane,
                valid_from=datetime.fromtimestamp(start, UTC),
                valid_to=datetime.fromtimestamp(end, UTC),
                nonce=base64.urlsafe_b64encode(nonce).rstrip(b"=").decode(),
            )
        except ValidationError as err:
            raise ValueError(describe_errors(err)) from None

    def describe(self) -> dict[str, str]:
        """The booking as printed by ``parkgate qr issue`` and ``qr verify``."""
        return {
            "id": self.booking,
            "plate": self.plate,
            "station": self.station,
            "lane": self.lane,
            "valid_from": iso(self.valid_from),
            "valid_to": iso(self.valid_to),
            "nonce": self.nonce,
        }


class Verification(BaseModel):
    """The outcome of checking one code. ``reason`` is None exactly when ``valid``."""

    model_config = ConfigDict(frozen=True)

    valid: bool
    reason: Refusal | None = None
    booking: Credential | None = Field(None, description="the signed credential; None when not verified")
    error: str | None = Field(None, description="what made the code unreadable")
    detail: str | None = Field(None, description="specifics of any other refusal")

    @classmethod
    def refused(
        cls, reason: Refusal, booking: Credential | None = None, *, error: str | None = None, detail: str = ""
    ) -> Verification:
        return cls(valid=False, reason=reason, booking=booking, error=error, detail=detail or None)

    def to_json(self) -> dict[str, Any]:
        """``{"valid", "reason", "booking"}``, plus ``error`` (unreadable) or ``detail`` (other refusals)."""
        out: dict[str, Any] = {
            "valid": self.valid,
            "reason": self.reason.value if self.reason else None,
            "booking": self.booking.describe() if self.booking else None,
        }
        if self.error:
            out["error"] = self.error
        if self.detail:
            out["detail"] = self.detail
        return out


class UnreadableCode(ValueError):
    """Text that is not a well-formed ParkGate code."""


def new_nonce() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(NONCE_BYTES)).rstrip(b"=").decode()


def new_booking_id() -> str:
    """A short random booking id, for codes issued without one from a booking system."""
    return base64.b32encode(secrets.token_bytes(5)).decode()


def new_credential(
    *,
    plate: str,
    station: str,
    lane: str,
    valid_for: timedelta,
    valid_from: datetime | None = None,
    booking: str | None = None,
    clock: Clock = utc_now,
) -> Credential:
    """A fresh credential with a new nonce; ``valid_from`` defaults to now."""
    start = _whole_utc_seconds(valid_from if valid_from is not None else clock())
    return Credential(
        booking=booking or new_booking_id(),
        plate=plate,
        station=station,
        lane=lane,
        valid_from=start,
        valid_to=start + valid_for,
    )


def sign(credential: Credential, private_key: Ed25519PrivateKey) -> str:
    """The QR text for ``credential``, signed with the station's private key."""
    payload = credential.payload()
    return PREFIX + b45encode(payload + private_key.sign(payload))


def split(text: str) -> tuple[bytes, bytes]:
    """``(payload, signature)`` of a code's text; raises UnreadableCode saying what is wrong."""
    if not text:
        raise UnreadableCode("empty QR text")
    if len(text) > MAX_TEXT_CHARS:
        raise UnreadableCode(f"QR text of {len(text)} characters is too long for a ParkGate code")
    if not text.startswith(PREFIX):
        raise UnreadableCode(f"QR code is not a ParkGate credential (no {PREFIX!r} prefix)")
    try:
        blob = b45decode(text[len(PREFIX) :])
    except ValueError as err:
        raise UnreadableCode(f"QR text is not valid base45: {err}") from None
    if len(blob) <= SIGNATURE_BYTES:
        raise UnreadableCode(f"code of {len(blob)} bytes is too short to hold a payload and a signature")
    return blob[:-SIGNATURE_BYTES], blob[-SIGNATURE_BYTES:]


def verify(
    text: str,
    public_key: Ed25519PublicKey,
    *,
    station: str,
    plate: str | None = None,
    clock: Clock = utc_now,
    skew: timedelta = DEFAULT_SKEW,
) -> Verification:
    """Check a code offline, in the order given in the module docstring; never raises for bad input.

    ``plate`` is the plate read at the lane, already normalised (``edge.plate_format.normalise``);
    None skips the plate check. This does not consult the used-code store (see ``edge.qr``).
    """
    try:
        payload, signature = split(text)
    except UnreadableCode as err:
        return Verification.refused(Refusal.UNREADABLE, error=str(err))
    try:
        public_key.verify(signature, payload)
    except InvalidSignature:
        return Verification.refused(
            Refusal.BAD_SIGNATURE, detail="signature does not match this station's key (altered or foreign)"
        )
    try:
        credential = Credential.from_payload(payload)
    except ValueError as err:
        return Verification.refused(Refusal.UNREADABLE, error=f"signed payload is malformed: {err}")
    now = clock()
    if now.tzinfo is None:
        raise ValueError("clock must return an aware datetime")
    if now < credential.valid_from - skew:
        return Verification.refused(
            Refusal.NOT_YET_VALID,
            credential,
            detail=f"valid from {iso(credential.valid_from)}, now {iso(now)}",
        )
    if now > credential.valid_to + skew:
        return Verification.refused(
            Refusal.EXPIRED, credential, detail=f"expired at {iso(credential.valid_to)}, now {iso(now)}"
        )
    if credential.station != station:
        return Verification.refused(
            Refusal.WRONG_STATION, credential, detail=f"code is for station {credential.station!r}"
        )
    if plate is not None and plate != credential.plate:
        return Verification.refused(
            Refusal.PLATE_MISMATCH,
            credential,
            detail=f"plate read {plate!r}, code is for {credential.plate!r}",
        )
    return Verification(valid=True, booking=credential)


def describe_errors(err: ValidationError) -> str:
    """One line naming each offending field: ``plate: String should match pattern ...``."""
    return "; ".join(
        f"{'.'.join(map(str, e['loc'])) or 'credential'}: {e['msg'].removeprefix('Value error, ')}"
        for e in err.errors()
    )


# --- keys -------------------------------------------------------------------------------------


def generate_private_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def fingerprint(key: Ed25519PublicKey) -> str:
    """Short id of a public key: the first 16 hex digits of SHA-256 over its raw 32 bytes."""
    from hashlib import sha256

    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return sha256(raw).hexdigest()[:16]


def _read_key_file(path: str | Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise CredentialKeyError(f"{path}: cannot read key file: {err.strerror or err}") from None


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    """The station's signing key from a PEM file (as written by ``parkgate keys generate``)."""
    data = _read_key_file(path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as err:
        raise CredentialKeyError(f"{path}: not an unencrypted PEM private key ({err})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise CredentialKeyError(f"{path}: is a {type(key).__name__}, expected an Ed25519 private key")
    return key


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    """The station's public key from a PEM file; a lane never needs the private key."""
    data = _read_key_file(path)
    if b"PRIVATE KEY" in data:
        raise CredentialKeyError(f"{path}: is a private key; give the lane the public key (.pub.pem)")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as err:
        raise CredentialKeyError(f"{path}: not a PEM public key ({err})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise CredentialKeyError(f"{path}: is a {type(key).__name__}, expected an Ed25519 public key")
    return key


# --- base45 (RFC 9285) ------------------------------------------------------------------------

B45_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"
_B45_VALUE = {c: i for i, c in enumerate(B45_ALPHABET)}


def b45encode(data: bytes) -> str:
    out = []
    for i in range(0, len(data), 2):
        if i + 1 < len(data):
            n = data[i] * 256 + data[i + 1]
            out += [B45_ALPHABET[n % 45], B45_ALPHABET[n // 45 % 45], B45_ALPHABET[n // 2025]]
        else:
            out += [B45_ALPHABET[data[i] % 45], B45_ALPHABET[data[i] // 45]]
    return "".join(out)


def b45decode(text: str) -> bytes:
    """Decode base45; raises ValueError for a character outside the alphabet or a bad group."""
    if len(text) % 3 == 1:
        raise ValueError(f"length {len(text)} is not a whole number of groups")
    out = bytearray()
    for i in range(0, len(text), 3):
        group = text[i : i + 3]
        try:
            digits = [_B45_VALUE[c] for c in group]
        except KeyError as err:
            raise ValueError(f"character {err.args[0]!r} is not in the base45 alphabet") from None
        n = sum(d * 45**k for k, d in enumerate(digits))
        if len(group) == 3:
            if n > 0xFFFF:
                raise ValueError(f"group {group!r} is out of range")
            out += n.to_bytes(2, "big")
        else:
            if n > 0xFF:
                raise ValueError(f"group {group!r} is out of range")
            out.append(n)
    return bytes(out)
