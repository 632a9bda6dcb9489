"""``parkgate keys generate``, ``parkgate qr issue`` and ``parkgate qr verify``: one car, one code.

A station signs one-time QR codes with its Ed25519 private key; an inspection lane verifies them
offline with the station's public key and a used-code store (format: ``protocol.credentials``;
lane check: ``edge.qr``). Each command prints one JSON line on stdout; logs go to stderr.

Exit status of ``qr verify``: 0 the code is valid (and is now used), 1 refused (the JSON line
says why), 2 usage error, 78 the lane cannot check codes at all (key file, used-code store or
decoder unusable; stderr says which, nothing is printed on stdout).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from protocol.topics import ID_PATTERN

logger = logging.getLogger("parkgate.qr")

EX_CONFIG = 78
MAX_VALID_MINUTES = 366 * 24 * 60
_ID = re.compile(ID_PATTERN)
_BOOKING = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,39}$")
_PLATE = re.compile(r"^[0-9A-Z\u4e00-\u9fff]{2,12}$")


# --- argument types: a bad value is a usage error (exit 2) with a message that says why ---------


def _id(value: str) -> str:
    if not _ID.fullmatch(value):
        raise argparse.ArgumentTypeError(f"{value!r}: use 1-64 letters, digits, '_', '.', '-'")
    return value


def _booking(value: str) -> str:
    if not _BOOKING.fullmatch(value):
        raise argparse.ArgumentTypeError(f"{value!r}: use 1-40 letters, digits, '_', '.', ':', '-'")
    return value


def _plate(value: str) -> str:
    from edge.plate_format import normalise

    plate = normalise(value)
    if not _PLATE.fullmatch(plate):
        raise argparse.ArgumentTypeError(f"{value!r} is not a plate (e.g. 鄂A12345)")
    return plate


def _plate_read(value: str) -> str:
    from edge.plate_format import normalise

    if not normalise(value):
        raise argparse.ArgumentTypeError(f"{value!r} has no plate characters")
    return value


def _minutes(value: str) -> int:
    try:
        minutes = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number of minutes") from None
    if not 1 <= minutes <= MAX_VALID_MINUTES:
        raise argparse.ArgumentTypeError(f"{minutes}: use 1 to {MAX_VALID_MINUTES} (a year)")
    return minutes


def _when(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not an ISO 8601 time (2026-11-26T10:00:00+08:00)"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if not 0 <= seconds <= 3600:
        raise argparse.ArgumentTypeError(f"{seconds}: use 0 to 3600")
    return seconds


# --- handlers ---------------------------------------------------------------------------------


def _fail(command: str, message: str, status: int) -> int:
    print(f"parkgate {command}: {message}", file=sys.stderr)
    return status


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` with ``mode`` from the first byte on, replacing it atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _keys_generate(args: argparse.Namespace) -> int:
    from protocol.credentials import fingerprint, generate_private_key, private_pem, public_pem

    private = (args.out_dir / f"{args.name}.key.pem").absolute()
    public = (args.out_dir / f"{args.name}.pub.pem").absolute()
    existing = [str(p) for p in (private, public) if p.exists()]
    if existing and not args.force:
        return _fail("keys generate", f"{', '.join(existing)} exists; use --force to replace", 1)
    key = generate_private_key()
    try:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        _write(private, private_pem(key), 0o600)
        _write(public, public_pem(key.public_key()), 0o644)
    except OSError as err:
        return _fail("keys generate", f"cannot write keys in {args.out_dir}: {err.strerror or err}", 1)
    out = {
        "private_key": str(private),
        "public_key": str(public),
        "algorithm": "Ed25519",
        "fingerprint": fingerprint(key.public_key()),
    }
    print(json.dumps(out), flush=True)
    return 0


def _qr_issue(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from edge.qr import make_code
    from protocol.credentials import (
        CredentialKeyError,
        describe_errors,
        fingerprint,
        load_private_key,
        new_credential,
        sign,
    )

    try:
        key = load_private_key(args.key)
    except CredentialKeyError as err:
        return _fail("qr issue", str(err), EX_CONFIG)
    try:
        credential = new_credential(
            plate=args.plate,
            station=args.station,
            lane=args.lane,
            valid_for=timedelta(minutes=args.valid_minutes),
            valid_from=args.valid_from,
            booking=args.booking,
        )
    except ValidationError as err:  # e.g. a window past 2106
        return _fail("qr issue", describe_errors(err), 2)
    text = sign(credential, key)
    code = make_code(text)
    try:
        code.save(str(args.out), kind="png", scale=args.scale, border=4)
    except OSError as err:
        return _fail("qr issue", f"cannot write {args.out}: {err.strerror or err}", 1)
    out = {
        "file": str(args.out),
        "booking": credential.describe(),
        "code": text,
        "qr_version": code.version,
        "error_correction": code.error,
        "key_fingerprint": fingerprint(key.public_key()),
    }
    print(json.dumps(out, ensure_ascii=False), flush=True)
    return 0


def _qr_verify(args: argparse.Namespace) -> int:
    from edge.errors import ImageError
    from edge.images import load_image
    from edge.qr import (
        DEFAULT_DECODER,
        DecoderUnavailable,
        UsedCodes,
        UsedStoreError,
        create_decoder,
        default_used_store,
        verify_at_lane,
    )
    from protocol.credentials import CredentialKeyError, Refusal, Verification, load_public_key

    try:
        public_key = load_public_key(args.pubkey)
        decoder = create_decoder(args.decoder or DEFAULT_DECODER)
        store = UsedCodes(args.used_store or default_used_store())
    except (CredentialKeyError, DecoderUnavailable, UsedStoreError) as err:
        return _fail("qr verify", str(err), EX_CONFIG)
    with store:
        try:
            image = load_image(args.image)
        except ImageError as err:
            result = Verification.refused(Refusal.UNREADABLE, error=err.problem)
        else:
            try:
                result = verify_at_lane(
                    image,
                    station=args.station,
                    public_key=public_key,
                    used=store,
                    plate=args.plate,
                    decoder=decoder,
                    skew=timedelta(seconds=args.skew_seconds),
                )
            except UsedStoreError as err:
                return _fail("qr verify", str(err), EX_CONFIG)
    out = {"file": str(args.image), **result.to_json()}
    print(json.dumps(out, ensure_ascii=False), flush=True)
    if result.valid:
        logger.info("valid: booking %s", out["booking"]["id"])
    else:
        logger.info("refused: %s %s", out["reason"], out.get("error") or out.get("detail") or "")
    return 0 if result.valid else 1


# --- parsers ----------------------------------------------------------------------------------

_REASONS = "bad_signature, expired, not_yet_valid, wrong_station, plate_mismatch, already_used, unreadable"


def add_qr_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the ``keys`` and ``qr`` command groups on the main parser's subcommands."""
    keys = sub.add_parser(
        "keys",
        help="station signing keys for one-time QR codes",
        description="Ed25519 keys: the station keeps the private key and signs codes with it; each lane "
        "gets only the public key.",
    )
    keys_sub = keys.add_subparsers(dest="action", required=True, metavar="ACTION")
    generate = keys_sub.add_parser(
        "generate",
        help="write a new Ed25519 key pair (PEM)",
        description="Writes DIR/NAME.key.pem (private, PKCS#8, mode 0600) and DIR/NAME.pub.pem (public) and "
        'prints {"private_key", "public_key", "algorithm", "fingerprint"}. Refuses to replace existing files '
        "unless --force.",
    )
    generate.add_argument("--out-dir", type=Path, default=Path("."), help="folder for the keys (default .)")
    generate.add_argument("--name", type=_id, default="station", help="file name stem (default station)")
    generate.add_argument("--force", action="store_true", help="replace existing key files")
    generate.set_defaults(func=_keys_generate)

    qr = sub.add_parser(
        "qr",
        help="issue and verify one-time QR codes (one car, one code)",
        description="Signed, time-boxed, one-time codes bound to a plate, a station and a lane.",
    )
    qr_sub = qr.add_subparsers(dest="action", required=True, metavar="ACTION")
    issue = qr_sub.add_parser(
        "issue",
        help="sign a code and write it as a QR PNG",
        description='Writes the QR code to FILE.png and prints {"file", "booking" {"id", "plate", "station", '
        '"lane", "valid_from", "valid_to", "nonce"}, "code" (the QR text), "qr_version", "error_correction", '
        '"key_fingerprint"}. Exit 78 when the key file is unusable.',
    )
    issue.add_argument("--plate", required=True, type=_plate, help="the car's plate, e.g. 鄂A12345")
    issue.add_argument("--station", required=True, type=_id, help="station id the code is for")
    issue.add_argument("--lane", required=True, type=_id, help="lane id the code is for")
    issue.add_argument(
        "--valid-minutes", required=True, type=_minutes, metavar="M", help="validity in minutes"
    )
    issue.add_argument("--key", required=True, type=Path, help="the station's private key (PEM)")
    issue.add_argument(
        "--out", required=True, type=Path, metavar="FILE.png", help="where to write the QR PNG"
    )
    issue.add_argument("--booking", type=_booking, help="booking id (default: a new random id)")
    issue.add_argument(
        "--valid-from",
        type=_when,
        metavar="ISO",
        help="start of validity, ISO 8601 with offset (default now; a time without offset is UTC)",
    )
    issue.add_argument(
        "--scale", type=int, default=8, choices=range(1, 41), metavar="PX", help="pixels per module"
    )
    issue.set_defaults(func=_qr_issue)

    verify = qr_sub.add_parser(
        "verify",
        help="check the code in an image for this station; prints valid and reason",
        description='Prints one JSON line {"file", "valid", "reason", "booking"}: reason is null when valid, '
        f"else one of {_REASONS}; booking is the signed booking (null when unreadable or the signature is "
        'bad); "error" says why a code or image is unreadable, "detail" gives the specifics of other refusals. '
        "A valid code is marked used in the used-code store, so the same code again gives already_used. "
        "Exit 0 valid, 1 refused, 2 usage error, 78 the lane cannot check codes (key file, used-code store "
        "or decoder unusable; stderr says which).",
    )
    verify.add_argument("image", type=Path, metavar="IMAGE", help="photo or scan holding the QR code")
    verify.add_argument("--pubkey", required=True, type=Path, help="the station's public key (PEM)")
    verify.add_argument("--station", required=True, type=_id, help="this lane's station id")
    verify.add_argument(
        "--plate",
        type=_plate_read,
        help="plate read at the lane; must match the code's (default: not checked)",
    )
    verify.add_argument(
        "--used-store",
        type=Path,
        metavar="FILE",
        help="SQLite file of used codes (default $XDG_STATE_HOME/parkgate/used-codes.sqlite, "
        "i.e. ~/.local/state/parkgate/used-codes.sqlite)",
    )
    verify.add_argument(
        "--decoder",
        choices=["zxing-cpp", "pyzbar"],
        help="QR decoder (default zxing-cpp, chosen by bench.qr)",
    )
    verify.add_argument(
        "--skew-seconds",
        type=_seconds,
        default=60.0,
        metavar="S",
        help="clock skew allowed at both ends of the validity window (default 60)",
    )
    verify.set_defaults(func=_qr_verify)
