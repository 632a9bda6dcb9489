"""QR codes at an inspection lane: decoding, the used-code store and the lane's check.

- :class:`QrDecoder` is the one small interface; :class:`ZxingDecoder` (zxing-cpp) and
  :class:`PyzbarDecoder` (zbar) implement it. The default is zxing-cpp, chosen by
  ``python -m bench.qr``: in 720x1160 street photos it read every code pyzbar read, plus
  perspective-warped and ~80 px ones, in a twelfth of the time (figures in the README).
- :class:`UsedCodes` is the SQLite file (WAL, ``synchronous=FULL``) of consumed nonces. Marking
  is one ``INSERT ... ON CONFLICT DO NOTHING`` on the nonce's primary key, so check-and-mark is
  atomic across threads and processes, and a used code stays used after a restart.
- :func:`verify_at_lane` takes an image (or decoded text) and returns a
  :class:`~protocol.credentials.Verification`; it marks the nonce used only when everything else
  is valid.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from abc import ABC, abstractmethod
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import ClassVar

import cv2
import numpy as np
import segno
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge.errors import EdgeError
from edge.plate_format import normalise
from protocol.credentials import (
    DEFAULT_SKEW,
    PREFIX,
    Clock,
    Credential,
    Refusal,
    Verification,
    utc_now,
    verify,
)

DEFAULT_DECODER = "zxing-cpp"
# Error correction M (15 %): a reflection over a third of a phone screen still reads, where L
# (7 %) fails; L reads a little smaller codes (``python -m bench.qr --error l`` shows both).
ERROR_CORRECTION = "m"


class DecoderUnavailable(EdgeError, RuntimeError):
    """A QR decoder whose library is missing; the message says how to install it."""


class UsedStoreError(EdgeError, OSError):
    """The used-code store cannot be opened or written."""


def make_code(text: str, error: str = ERROR_CORRECTION) -> segno.QRCode:
    """The QR symbol of ``text`` as lanes expect it (ParkGate codes land in alphanumeric mode)."""
    return segno.make_qr(text, error=error)


# --- decoders ---------------------------------------------------------------------------------


def _gray(image: np.ndarray) -> np.ndarray:
    if image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)
    elif image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    if image.dtype != np.uint8:
        raise ValueError(f"expected an 8-bit image, got {image.dtype}")
    return np.ascontiguousarray(image)


class QrDecoder(ABC):
    """Finds QR codes in a BGR or grayscale image and returns their texts (possibly none)."""

    name: ClassVar[str]

    @abstractmethod
    def decode(self, image: np.ndarray) -> list[str]:
        """Texts of the QR codes found in ``image``, in the decoder's order."""


class PyzbarDecoder(QrDecoder):
    """zbar through pyzbar (needs Debian's ``libzbar0``)."""

    name = "pyzbar"

    def __init__(self) -> None:
        try:
            from pyzbar import pyzbar
        except (ImportError, OSError) as err:  # OSError: the zbar shared library is missing
            raise DecoderUnavailable(f"pyzbar cannot load zbar ({err}); apt-get install libzbar0") from None
        self._pyzbar = pyzbar

    def decode(self, image: np.ndarray) -> list[str]:
        found = self._pyzbar.decode(_gray(image), symbols=[self._pyzbar.ZBarSymbol.QRCODE])
        return [symbol.data.decode("utf-8", errors="replace") for symbol in found]


class ZxingDecoder(QrDecoder):
    """ZXing-C++ through its ``zxing-cpp`` wheel."""

    name = "zxing-cpp"

    def __init__(self) -> None:
        try:
            import zxingcpp
        except ImportError as err:
            raise DecoderUnavailable(f"zxing-cpp is not installed ({err}); pip install zxing-cpp") from None
        self._zxing = zxingcpp

    def decode(self, image: np.ndarray) -> list[str]:
        qr = self._zxing.BarcodeFormats(self._zxing.BarcodeFormat.QRCode)
        found = self._zxing.read_barcodes(_gray(image), formats=qr)
        return [result.text for result in found]


DECODERS: dict[str, type[QrDecoder]] = {"zxing-cpp": ZxingDecoder, "pyzbar": PyzbarDecoder}


def create_decoder(name: str = DEFAULT_DECODER) -> QrDecoder:
    try:
        return DECODERS[name]()
    except KeyError:
        raise DecoderUnavailable(f"unknown QR decoder {name!r}; choose from {', '.join(DECODERS)}") from None


# --- used-code store --------------------------------------------------------------------------


def default_used_store() -> Path:
    """``$XDG_STATE_HOME/parkgate/used-codes.sqlite`` (``~/.local/state/...`` when unset)."""
    state = os.environ.get("XDG_STATE_HOME")
    if not state:
        try:
            state = str(Path.home() / ".local" / "state")
        except RuntimeError:  # no HOME and no passwd entry
            raise UsedStoreError("no home folder for the used-code store; give its path") from None
    return Path(state) / "parkgate" / "used-codes.sqlite"


_SCHEMA = """
CREATE TABLE IF NOT EXISTS used_codes (
    nonce    TEXT PRIMARY KEY,
    booking  TEXT NOT NULL,
    plate    TEXT NOT NULL,
    station  TEXT NOT NULL,
    lane     TEXT NOT NULL,
    valid_to TEXT NOT NULL,
    used_at  TEXT NOT NULL
)
"""


class UsedCodes:
    """Nonces of codes already used, in a SQLite file that survives restarts.

    One instance may be shared by threads; several processes may open the same file.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(_SCHEMA)
        except (OSError, sqlite3.Error) as err:
            raise UsedStoreError(f"used-code store {self.path}: {err}") from None

    def mark_used(self, credential: Credential, *, at: datetime | None = None) -> bool:
        """Record the code's nonce; True if it was not used before, False if it was (atomic)."""
        used_at = (at or utc_now()).astimezone(UTC).isoformat()
        row = (
            credential.nonce,
            credential.booking,
            credential.plate,
            credential.station,
            credential.lane,
            credential.valid_to.isoformat(),
            used_at,
        )
        try:
            with self._lock:
                cursor = self._db.execute(
                    "INSERT INTO used_codes VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(nonce) DO NOTHING", row
                )
        except sqlite3.Error as err:
            raise UsedStoreError(f"used-code store {self.path}: {err}") from None
        return cursor.rowcount == 1

    def used_at(self, nonce: str) -> datetime | None:
        """When the code with this nonce was used, or None."""
        with self._lock:
            found = self._db.execute("SELECT used_at FROM used_codes WHERE nonce = ?", (nonce,)).fetchone()
        return datetime.fromisoformat(found[0]) if found else None

    def prune(self, before: datetime) -> int:
        """Forget codes whose validity ended before ``before`` (they are refused as expired anyway)."""
        with self._lock:
            cursor = self._db.execute(
                "DELETE FROM used_codes WHERE valid_to < ?", (before.astimezone(UTC).isoformat(),)
            )
        return cursor.rowcount

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM used_codes").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> UsedCodes:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()


# --- the lane's check -------------------------------------------------------------------------


def verify_at_lane(
    source: np.ndarray | str,
    *,
    station: str,
    public_key: Ed25519PublicKey,
    used: UsedCodes,
    plate: str | None = None,
    decoder: QrDecoder | None = None,
    clock: Clock = utc_now,
    skew: timedelta = DEFAULT_SKEW,
) -> Verification:
    """Check the code in ``source`` (an image, or text already decoded) for this station's lane.

    ``plate`` is the plate read at the lane (normalised here; None skips the check). Among several
    QR codes in one image, the first that is fully valid is used; otherwise the first ParkGate
    code's refusal is returned. The nonce is marked used only when everything else is valid, and
    marking is atomic, so of two lanes racing with one code exactly one gets ``valid``.
    """
    if isinstance(source, str):
        texts = [source]
    else:
        texts = (decoder or create_decoder()).decode(source)
        if not texts:
            return Verification.refused(Refusal.UNREADABLE, error="no QR code found in the image")
        ours = [t for t in texts if t.startswith(PREFIX)]
        texts = ours or texts[:1]
    lane_plate = normalise(plate) if plate is not None else None
    results = [
        verify(t, public_key, station=station, plate=lane_plate, clock=clock, skew=skew) for t in texts
    ]
    refusal = results[0]
    for result in results:
        if result.valid and result.booking is not None:
            if used.mark_used(result.booking, at=clock()):
                return result
            when = used.used_at(result.booking.nonce)
            detail = f"used at {when.isoformat().replace('+00:00', 'Z')}" if when else "used before"
            refusal = Verification.refused(Refusal.ALREADY_USED, result.booking, detail=detail)
    return refusal
