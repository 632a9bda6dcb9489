"""The signed QR credential (protocol/credentials.py): format, signing, offline verification."""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import segno
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from protocol.credentials import (
    B45_ALPHABET,
    PREFIX,
    Credential,
    CredentialKeyError,
    Refusal,
    b45decode,
    b45encode,
    load_private_key,
    load_public_key,
    new_credential,
    private_pem,
    public_pem,
    sign,
    split,
    verify,
)

NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)


def clock_at(moment: datetime):  # type: ignore[no-untyped-def]
    return lambda: moment


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def credential(**overrides: object) -> Credential:
    fields: dict[str, object] = {
        "booking": "BK-000123",
        "plate": "鄂A12345",
        "station": "ST01",
        "lane": "L1",
        "valid_from": NOW,
        "valid_to": NOW + timedelta(hours=1),
    }
    fields.update(overrides)
    return Credential.model_validate(fields)


def check(text: str, key: Ed25519PrivateKey, at: datetime = NOW, **kwargs: object):  # type: ignore[no-untyped-def]
    return verify(
        text, key.public_key(), station=str(kwargs.pop("station", "ST01")), clock=clock_at(at), **kwargs
    )  # type: ignore[arg-type]


def test_a_signed_code_verifies_and_carries_the_booking(key: Ed25519PrivateKey) -> None:
    cred = credential()
    result = check(sign(cred, key), key, plate="鄂A12345")
    assert result.valid and result.reason is None
    assert result.booking == cred
    assert result.to_json() == {
        "valid": True,
        "reason": None,
        "booking": {
            "id": "BK-000123",
            "plate": "鄂A12345",
            "station": "ST01",
            "lane": "L1",
            "valid_from": "2026-11-26T10:00:00Z",
            "valid_to": "2026-11-26T11:00:00Z",
            "nonce": cred.nonce,
        },
    }


def test_the_text_is_qr_alphanumeric_and_small(key: Ed25519PrivateKey) -> None:
    text = sign(credential(booking="BK-2026-000123", station="ST-WUHAN-01", plate="鄂AD12345"), key)
    assert text.startswith(PREFIX)
    assert set(text[len(PREFIX) :]) <= set(B45_ALPHABET)
    code = segno.make_qr(text, error="m")
    assert code.mode == "alphanumeric"
    assert code.version <= 8  # 49 modules: readable at ~80 px (see bench.qr)


def test_payload_round_trips_exactly(key: Ed25519PrivateKey) -> None:
    cred = credential(plate="皖AD11166", booking="a:b.c_d-e", station="S" * 64, lane="lane.9")
    assert Credential.from_payload(cred.payload()) == cred
    assert split(sign(cred, key))[0] == cred.payload()


def test_every_code_gets_its_own_nonce() -> None:
    codes = {
        new_credential(plate="鄂A12345", station="S", lane="L", valid_for=timedelta(minutes=5)).nonce
        for _ in range(100)
    }
    assert len(codes) == 100


def test_new_credential_starts_now_in_whole_seconds() -> None:
    cred = new_credential(
        plate="鄂A12345",
        station="S",
        lane="L",
        valid_for=timedelta(minutes=30),
        clock=clock_at(NOW + timedelta(microseconds=700)),
    )
    assert cred.valid_from == NOW and cred.valid_to == NOW + timedelta(minutes=30)
    assert len(cred.booking) == 8


# --- refusals ---------------------------------------------------------------------------------


def test_tampered_payload_is_a_bad_signature(key: Ed25519PrivateKey) -> None:
    payload, signature = split(sign(credential(), key))
    forged = payload.replace(b"ST01", b"ST02")  # someone re-packs the station
    result = check(PREFIX + b45encode(forged + signature), key, station="ST02")
    assert not result.valid and result.reason is Refusal.BAD_SIGNATURE
    assert result.booking is None  # nothing unsigned is reported


@pytest.mark.parametrize("where", [0, 5, 30, -1])
def test_any_flipped_byte_is_a_bad_signature(key: Ed25519PrivateKey, where: int) -> None:
    blob = bytearray(b45decode(sign(credential(), key)[len(PREFIX) :]))
    blob[where] ^= 0x01
    assert check(PREFIX + b45encode(bytes(blob)), key).reason is Refusal.BAD_SIGNATURE


def test_a_code_signed_with_another_key_is_a_bad_signature(key: Ed25519PrivateKey) -> None:
    other = Ed25519PrivateKey.generate()
    result = check(sign(credential(), other), key)
    assert result.reason is Refusal.BAD_SIGNATURE and result.booking is None


@pytest.mark.parametrize(
    ("at", "reason"),
    [
        (NOW - timedelta(seconds=61), Refusal.NOT_YET_VALID),
        (NOW - timedelta(seconds=59), None),  # within the 60 s clock skew
        (NOW + timedelta(hours=1, seconds=59), None),
        (NOW + timedelta(hours=1, seconds=61), Refusal.EXPIRED),
        (NOW + timedelta(days=3), Refusal.EXPIRED),
        (NOW - timedelta(days=3), Refusal.NOT_YET_VALID),
    ],
)
def test_time_window_with_clock_skew(key: Ed25519PrivateKey, at: datetime, reason: Refusal | None) -> None:
    result = check(sign(credential(), key), key, at=at)
    assert result.reason is reason
    assert result.valid is (reason is None)
    assert result.booking is not None


def test_skew_is_configurable(key: Ed25519PrivateKey) -> None:
    text = sign(credential(), key)
    late = NOW + timedelta(hours=1, seconds=5)
    assert check(text, key, at=late, skew=timedelta(0)).reason is Refusal.EXPIRED
    assert check(text, key, at=late, skew=timedelta(seconds=10)).valid


def test_wrong_station(key: Ed25519PrivateKey) -> None:
    result = check(sign(credential(), key), key, station="ST02")
    assert result.reason is Refusal.WRONG_STATION
    assert result.booking is not None and result.booking.station == "ST01"
    assert "ST01" in (result.detail or "")


def test_plate_mismatch_and_no_plate_read(key: Ed25519PrivateKey) -> None:
    text = sign(credential(), key)
    assert check(text, key, plate="鄂A12346").reason is Refusal.PLATE_MISMATCH
    assert check(text, key, plate=None).valid  # the lane read no plate: not checked


def test_checks_run_in_order(key: Ed25519PrivateKey) -> None:
    expired_elsewhere = sign(credential(station="ST09", valid_to=NOW + timedelta(minutes=1)), key)
    later = NOW + timedelta(hours=2)
    assert check(expired_elsewhere, key, at=later, plate="京A00000").reason is Refusal.EXPIRED
    assert check(expired_elsewhere, key, plate="京A00000").reason is Refusal.WRONG_STATION
    other = Ed25519PrivateKey.generate()
    assert check(sign(credential(), other), key, at=later).reason is Refusal.BAD_SIGNATURE


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", "empty"),
        ("hello world", "not a ParkGate credential"),
        ("https://example.com/pay?id=1", "not a ParkGate credential"),
        ("HC1:6BFOXN*TS0BI$ZD4N9", "not a ParkGate credential"),
        ("PG1:", "too short"),
        ("PG1:abc", "not in the base45 alphabet"),
        ("PG1:GGW", "out of range"),
        ("PG1:00", "too short"),
        ("PG1:A", "whole number of groups"),
        ("PG1:" + "A" * 5000, "too long"),
    ],
)
def test_garbage_is_unreadable(key: Ed25519PrivateKey, text: str, error: str) -> None:
    result = check(text, key)
    assert result.reason is Refusal.UNREADABLE and result.booking is None
    assert error in (result.error or "")
    assert result.to_json()["error"] == result.error


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (b"\x02" + bytes(40), "unsupported schema version 2"),
        (b"\x01" + bytes(10), "shorter than its 21-byte header"),
        (struct.pack(">BII12s", 1, 0, 10, bytes(12)) + b"\x05ab", "booking: payload ends inside"),
        (struct.pack(">BII12s", 1, 0, 10, bytes(12)) + b"\x01B\x02\xff\xfe\x01S\x01L", "plate: not UTF-8"),
        (struct.pack(">BII12s", 1, 0, 10, bytes(12)) + b"\x01B\x01x\x01S\x01L", "plate: String should match"),
        (
            struct.pack(">BII12s", 1, 10, 5, bytes(12)) + b"\x01B\x07\xe9\x84\x82A123\x01S\x01L",
            "valid_to must be",
        ),
        (
            struct.pack(">BII12s", 1, 0, 10, bytes(12)) + b"\x01B\x07\xe9\x84\x82A123\x01S\x01Lxx",
            "unexpected bytes",
        ),
    ],
)
def test_signed_but_malformed_payload_is_unreadable(
    key: Ed25519PrivateKey, payload: bytes, error: str
) -> None:
    text = PREFIX + b45encode(payload + key.sign(payload))
    result = check(text, key)
    assert result.reason is Refusal.UNREADABLE
    assert "signed payload is malformed" in (result.error or "") and error in (result.error or "")


# --- the model --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"valid_from": datetime(2026, 11, 26, 10, 0)}, "timezone"),
        ({"valid_to": NOW}, "valid_to must be later than valid_from"),
        ({"plate": "鄂a 12345"}, "plate"),
        ({"station": "bad/station"}, "station"),
        ({"booking": ""}, "booking"),
        ({"nonce": "short"}, "nonce"),
        ({"colour": "blue"}, "colour"),
        ({"valid_to": datetime(2107, 1, 1, tzinfo=UTC)}, "2106"),
    ],
)
def test_model_refuses_bad_fields(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        credential(**overrides)


def test_times_are_aware_utc_whole_seconds() -> None:
    beijing = timezone(timedelta(hours=8))
    cred = credential(valid_from=datetime(2026, 11, 26, 18, 0, 0, 999, tzinfo=beijing))
    assert cred.valid_from == NOW and cred.valid_from.tzinfo is UTC and cred.valid_from.microsecond == 0


# --- base45 (RFC 9285 examples) and keys --------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "text"),
    [(b"AB", "BB8"), (b"Hello!!", "%69 VD92EX0"), (b"base-45", "UJCLQE7W581"), (b"ietf!", "QED8WEX0")],
)
def test_base45_rfc9285_examples(raw: bytes, text: str) -> None:
    assert b45encode(raw) == text
    assert b45decode(text) == raw


@given(st.binary(max_size=300))
def test_base45_round_trips(data: bytes) -> None:
    assert b45decode(b45encode(data)) == data


def test_key_files_round_trip_and_refuse_the_wrong_kind(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    (tmp_path / "k.pem").write_bytes(private_pem(key))
    (tmp_path / "k.pub").write_bytes(public_pem(key.public_key()))
    (tmp_path / "junk").write_text("not a key")
    loaded = load_private_key(tmp_path / "k.pem")
    assert loaded.public_key() == load_public_key(tmp_path / "k.pub")
    with pytest.raises(CredentialKeyError, match="is a private key"):
        load_public_key(tmp_path / "k.pem")
    with pytest.raises(CredentialKeyError, match="not an unencrypted PEM private key"):
        load_private_key(tmp_path / "k.pub")
    with pytest.raises(CredentialKeyError, match="not a PEM public key"):
        load_public_key(tmp_path / "junk")
    with pytest.raises(CredentialKeyError, match="cannot read key file"):
        load_public_key(tmp_path / "missing.pem")
