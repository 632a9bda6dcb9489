"""QR at the inspection lane (edge/qr.py) and ``parkgate keys`` / ``parkgate qr`` end to end."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest
import segno
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from PIL import Image

from bench.qr import CONDITIONS, code_card, photograph, street_scene
from edge.qr import (
    DECODERS,
    DEFAULT_DECODER,
    UsedCodes,
    create_decoder,
    verify_at_lane,
)
from parkgate.cli import main
from protocol.credentials import (
    Credential,
    Refusal,
    new_credential,
    private_pem,
    public_pem,
    sign,
)

NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
REPO = Path(__file__).resolve().parent.parent


def at(moment: datetime):  # type: ignore[no-untyped-def]
    return lambda: moment


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def used(tmp_path: Path) -> Iterator[UsedCodes]:
    with UsedCodes(tmp_path / "used.sqlite") as store:
        yield store


def credential(**overrides: object) -> Credential:
    fields: dict[str, object] = {
        "plate": "鄂A12345",
        "station": "ST01",
        "lane": "L1",
        "valid_for": timedelta(hours=1),
        "valid_from": NOW,
        "booking": "BK-1",
    }
    fields.update(overrides)
    return new_credential(**fields)  # type: ignore[arg-type]


def card(text: str, size: int = 300) -> np.ndarray:
    """A clean scan of the code: the symbol ``size`` px square on white, BGR."""
    return cv2.cvtColor(code_card(text, size), cv2.COLOR_GRAY2BGR)


def lane(source: np.ndarray | str, key: Ed25519PrivateKey, used: UsedCodes, **kwargs: object):  # type: ignore[no-untyped-def]
    options: dict[str, object] = {"station": "ST01", "clock": at(NOW + timedelta(minutes=5))}
    options.update(kwargs)
    return verify_at_lane(source, public_key=key.public_key(), used=used, **options)  # type: ignore[arg-type]


# --- decoders ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(DECODERS))
def test_each_decoder_reads_a_clean_code_and_nothing_in_a_street(name: str, key: Ed25519PrivateKey) -> None:
    decoder = create_decoder(name)
    text = sign(credential(), key)
    assert decoder.decode(card(text)) == [text]
    assert decoder.decode(cv2.cvtColor(card(text), cv2.COLOR_BGR2GRAY)) == [text]
    assert decoder.decode(street_scene(np.random.default_rng(0))) == []


def test_unknown_decoder_is_named() -> None:
    from edge.qr import DecoderUnavailable

    with pytest.raises(DecoderUnavailable, match="unknown QR decoder 'zbar'; choose from zxing-cpp, pyzbar"):
        create_decoder("zbar")


@pytest.mark.parametrize("condition", ["rotated_20", "blurred", "small_80", "keystone_mild", "combined"])
def test_photo_like_codes_still_decode_with_the_default_decoder(
    condition: str, key: Ed25519PrivateKey
) -> None:
    """Rotated ~20°, Gaussian-blurred, ~80 px, perspective-warped, inside a 720x1160 street scene."""
    decoder = create_decoder()
    assert decoder.name == DEFAULT_DECODER
    for seed in range(3):
        text = sign(credential(booking=f"BK-{seed}"), key)
        photo = photograph(text, CONDITIONS[condition], np.random.default_rng(seed))
        assert photo.shape == (1160, 720, 3)
        assert text in decoder.decode(photo), f"{condition} seed {seed}"


# --- the lane: every reason -----------------------------------------------------------------


def test_valid_code_is_marked_used_and_refused_the_second_time(
    key: Ed25519PrivateKey, used: UsedCodes
) -> None:
    text = sign(credential(), key)
    first = lane(card(text), key, used, plate="鄂A·12345")  # the plate as OCR might print it
    assert first.valid and first.reason is None and first.booking is not None
    second = lane(card(text), key, used)
    assert second.reason is Refusal.ALREADY_USED
    assert second.booking == first.booking
    assert "used at 2026-11-26T10:05:00Z" in (second.detail or "")


def test_already_used_survives_a_restart(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    text = sign(credential(), key)
    path = tmp_path / "state" / "used.sqlite"
    with UsedCodes(path) as store:
        assert lane(text, key, store).valid
    with UsedCodes(path) as reopened:
        assert lane(text, key, reopened).reason is Refusal.ALREADY_USED
        assert len(reopened) == 1
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.parametrize(
    ("code", "lane_kwargs", "reason"),
    [
        ({}, {"station": "ST02"}, Refusal.WRONG_STATION),
        ({}, {"plate": "鄂A54321"}, Refusal.PLATE_MISMATCH),
        ({}, {"clock": at(NOW + timedelta(hours=2))}, Refusal.EXPIRED),
        ({"valid_from": NOW + timedelta(days=1)}, {}, Refusal.NOT_YET_VALID),
    ],
)
def test_refusals_from_an_image_do_not_use_up_the_code(
    key: Ed25519PrivateKey,
    used: UsedCodes,
    code: dict[str, object],
    lane_kwargs: dict[str, object],
    reason: Refusal,
) -> None:
    text = sign(credential(**code), key)
    result = lane(card(text), key, used, **lane_kwargs)
    assert not result.valid and result.reason is reason and result.booking is not None
    assert len(used) == 0


def test_bad_signature_from_an_image(key: Ed25519PrivateKey, used: UsedCodes) -> None:
    forged = sign(credential(), Ed25519PrivateKey.generate())
    result = lane(card(forged), key, used)
    assert result.reason is Refusal.BAD_SIGNATURE and result.booking is None


@pytest.mark.parametrize(
    ("text", "reason", "error"),
    [
        ("hello world", Refusal.UNREADABLE, "not a ParkGate credential"),
        ("PG1:THIS IS NOT A SIGNED CODE", Refusal.UNREADABLE, "not valid base45"),
        ("PG1:00", Refusal.UNREADABLE, "too short"),
        # well-formed base45, long enough: only the signature can tell that it is garbage
        ("PG1:" + "0" * 200, Refusal.BAD_SIGNATURE, None),
    ],
)
def test_a_qr_with_garbage_payload_is_refused_with_a_reason(
    key: Ed25519PrivateKey, used: UsedCodes, text: str, reason: Refusal, error: str | None
) -> None:
    result = lane(card(text), key, used)
    assert not result.valid and result.booking is None
    assert result.reason is reason
    assert result.error == error or error in (result.error or "")


def test_a_qr_of_raw_binary_bytes_is_unreadable(key: Ed25519PrivateKey, used: UsedCodes) -> None:
    symbol = np.array([list(row) for row in segno.make_qr(bytes(range(120)), mode="byte").matrix], np.uint8)
    pixels = np.where(np.pad(symbol, 4) == 1, 0, 255).astype(np.uint8)
    image = cv2.resize(pixels, None, fx=6, fy=6, interpolation=cv2.INTER_NEAREST)
    result = lane(image, key, used)
    assert result.reason is Refusal.UNREADABLE and "not a ParkGate credential" in (result.error or "")


def test_an_image_without_a_qr_code_is_unreadable(key: Ed25519PrivateKey, used: UsedCodes) -> None:
    result = lane(street_scene(np.random.default_rng(1)), key, used)
    assert result.reason is Refusal.UNREADABLE and result.error == "no QR code found in the image"
    assert result.to_json() == {
        "valid": False,
        "reason": "unreadable",
        "booking": None,
        "error": "no QR code found in the image",
    }


def test_our_code_is_found_beside_an_unrelated_one(key: Ed25519PrivateKey, used: UsedCodes) -> None:
    text = sign(credential(), key)
    left, right = card("https://example.com/ad", 260), card(text, 260)
    height = max(left.shape[0], right.shape[0])
    both = np.full((height, left.shape[1] + right.shape[1], 3), 255, np.uint8)
    both[: left.shape[0], : left.shape[1]] = left
    both[: right.shape[0], left.shape[1] :] = right
    assert lane(both, key, used).valid


# --- the used-code store ------------------------------------------------------------------------


def test_two_threads_racing_with_one_code_let_exactly_one_through(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    """One store shared by threads, and a second connection to the same file (another process)."""
    path = tmp_path / "used.sqlite"
    with UsedCodes(path) as shared, UsedCodes(path) as other:
        for n in range(20):
            text = sign(credential(booking=f"BK-{n}"), key)
            barrier = threading.Barrier(4)
            results: list[bool] = []

            def attempt(
                store: UsedCodes,
                text: str = text,
                barrier: threading.Barrier = barrier,
                results: list[bool] = results,
            ) -> None:
                barrier.wait()
                results.append(lane(text, key, store).valid)

            threads = [threading.Thread(target=attempt, args=(s,)) for s in (shared, shared, other, other)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert sorted(results) == [False, False, False, True], n


def test_prune_forgets_only_codes_that_have_expired(used: UsedCodes) -> None:
    old = credential(booking="OLD", valid_from=NOW - timedelta(days=2))
    new = credential(booking="NEW")
    assert used.mark_used(old) and used.mark_used(new)
    assert not used.mark_used(new)
    assert used.prune(NOW) == 1
    assert used.used_at(old.nonce) is None and used.used_at(new.nonce) is not None


# --- the command line -------------------------------------------------------------------------


def parkgate(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "parkgate", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, **(env or {})},
        timeout=60,
    )


def test_cli_keys_issue_verify_end_to_end(tmp_path: Path) -> None:
    made = parkgate("keys", "generate", "--out-dir", str(tmp_path / "keys"), "--name", "st01")
    assert made.returncode == 0, made.stderr
    keys = json.loads(made.stdout)
    assert set(keys) >= {"private_key", "public_key"}
    assert stat.S_IMODE(os.stat(keys["private_key"]).st_mode) == 0o600
    png = tmp_path / "code.png"
    issued = parkgate(
        "qr", "issue", "--plate", "鄂A 12345", "--station", "ST01", "--lane", "L2", "--valid-minutes", "30",
        "--key", keys["private_key"], "--out", str(png), "--booking", "BK-42",
    )  # fmt: skip
    assert issued.returncode == 0, issued.stderr
    line = json.loads(issued.stdout)
    assert line["booking"]["id"] == "BK-42" and line["booking"]["plate"] == "鄂A12345"
    with Image.open(png) as written:
        assert written.format == "PNG"

    state = {"XDG_STATE_HOME": str(tmp_path / "state")}  # the default used-code store lives here
    verify = [
        "qr",
        "verify",
        str(png),
        "--pubkey",
        keys["public_key"],
        "--station",
        "ST01",
        "--plate",
        "鄂A12345",
    ]
    first = parkgate(*verify, env=state)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout) | {"file": None} == {
        "file": None,
        "valid": True,
        "reason": None,
        "booking": line["booking"],
    }
    assert first.stdout.count("\n") == 1
    assert (tmp_path / "state" / "parkgate" / "used-codes.sqlite").exists()

    again = parkgate(*verify, env=state)
    assert again.returncode == 1
    assert json.loads(again.stdout)["reason"] == "already_used"

    elsewhere = parkgate(*verify[:-4], "--station", "ST02", "--used-store", str(tmp_path / "other.sqlite"))
    assert elsewhere.returncode == 1
    out = json.loads(elsewhere.stdout)
    assert (out["valid"], out["reason"], out["booking"]["station"]) == (False, "wrong_station", "ST01")


@pytest.fixture
def station(tmp_path: Path, key: Ed25519PrivateKey) -> dict[str, Path]:
    (tmp_path / "st.key.pem").write_bytes(private_pem(key))
    (tmp_path / "st.pub.pem").write_bytes(public_pem(key.public_key()))
    return {"key": tmp_path / "st.key.pem", "pub": tmp_path / "st.pub.pem", "store": tmp_path / "used.sqlite"}


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, object]]:
    status = main(list(args))
    out = capsys.readouterr().out
    assert out.count("\n") == 1, out
    return status, json.loads(out)


def verify_cli(capsys: pytest.CaptureFixture[str], station: dict[str, Path], image: Path, *extra: str):  # type: ignore[no-untyped-def]
    return run_cli(
        capsys, "qr", "verify", str(image), "--pubkey", str(station["pub"]), "--station", "ST01",
        "--used-store", str(station["store"]), *extra,
    )  # fmt: skip


def issue_cli(capsys: pytest.CaptureFixture[str], station: dict[str, Path], out: Path, *extra: str):  # type: ignore[no-untyped-def]
    return run_cli(
        capsys, "qr", "issue", "--plate", "鄂A12345", "--station", "ST01", "--lane", "L1",
        "--key", str(station["key"]), "--out", str(out), *extra,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("valid_from", "extra", "reason"),
    [
        ("2020-01-01T08:00:00+08:00", [], "expired"),
        ("2099-01-01T00:00:00Z", [], "not_yet_valid"),
        (None, ["--plate", "鄂B12345"], "plate_mismatch"),
    ],
)
def test_cli_refusals(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    station: dict[str, Path],
    valid_from: str | None,
    extra: list[str],
    reason: str,
) -> None:
    when = ["--valid-from", valid_from] if valid_from else []
    status, issued = issue_cli(capsys, station, tmp_path / "c.png", "--valid-minutes", "10", *when)
    assert status == 0
    status, out = verify_cli(capsys, station, tmp_path / "c.png", *extra)
    assert status == 1 and out["reason"] == reason and out["booking"] == issued["booking"]


def _truncated_jpeg(path: Path) -> None:
    ok, data = cv2.imencode(".jpg", street_scene(np.random.default_rng(2)))
    assert ok
    path.write_bytes(data.tobytes()[: len(data) // 2])


def _huge_png(path: Path) -> None:
    Image.new("1", (10_000, 10_000), 1).save(path)


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: p.write_text("this is not an image\n"), "not a readable image"),
        (_huge_png, "exceeds the 40,000,000-pixel limit"),
        (_truncated_jpeg, "truncated JPEG"),
        (lambda p: None, "cannot read file"),
        (lambda p: cv2.imwrite(str(p), street_scene(np.random.default_rng(3))), "no QR code found"),
        (lambda p: cv2.imwrite(str(p), card("garbage payload \x00\x01")), "not a ParkGate credential"),
    ],
    ids=["empty", "not_an_image", "10000x10000", "truncated_jpeg", "missing", "no_qr", "garbage_qr"],
)
def test_cli_bad_images_are_unreadable_with_an_error(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    station: dict[str, Path],
    make,
    error: str,  # type: ignore[no-untyped-def]
) -> None:
    image = tmp_path / "in.jpg" if make is _truncated_jpeg else tmp_path / "in.png"
    make(image)
    status, out = verify_cli(capsys, station, image)
    assert status == 1
    assert out["valid"] is False and out["reason"] == "unreadable" and out["booking"] is None
    assert error in str(out["error"])


def test_cli_unusable_key_exits_78_without_output(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, station: dict[str, Path]
) -> None:
    args = ["qr", "verify", "x.png", "--pubkey", str(station["key"]), "--station", "ST01"]
    assert main(args) == 78
    captured = capsys.readouterr()
    assert captured.out == "" and "is a private key" in captured.err


ISSUE = ["qr", "issue", "--station", "S", "--lane", "L", "--key", "k", "--out", "o.png"]


@pytest.mark.parametrize(
    "args",
    [
        [*ISSUE, "--plate", "??", "--valid-minutes", "5"],
        [*ISSUE, "--plate", "鄂A12345", "--valid-minutes", "0"],
        [*ISSUE, "--plate", "鄂A12345", "--valid-minutes", "5", "--station", "a/b"],
        [*ISSUE, "--plate", "鄂A12345", "--valid-minutes", "5", "--valid-from", "yesterday"],
        ["qr", "verify", "x.png", "--station", "S"],
        ["qr", "verify", "x.png", "--pubkey", "p", "--station", "S", "--plate", " - "],
        ["keys"],
    ],
)
def test_cli_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_keys_generate_refuses_to_overwrite(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    status, made = run_cli(capsys, "keys", "generate", "--out-dir", str(tmp_path))
    assert status == 0 and made["private_key"] == str(tmp_path / "station.key.pem")
    assert main(["keys", "generate", "--out-dir", str(tmp_path)]) == 1
    assert "use --force" in capsys.readouterr().err
    status, again = run_cli(capsys, "keys", "generate", "--out-dir", str(tmp_path), "--force")
    assert status == 0 and again["fingerprint"] != made["fingerprint"]
