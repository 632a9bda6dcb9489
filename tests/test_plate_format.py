"""Plate formats: validation, look-alike repair by position, per-site formats (tables)."""

from __future__ import annotations

import re

import pytest

from edge.plate_format import MAX_REPAIRS, PlateFormats, find_plate, match_plate, normalise, plate_kind


@pytest.mark.parametrize(
    ("plate", "kind"),
    [
        ("鄂A12345", "standard"),
        ("皖AY6B59", "standard"),
        ("鄂AD12345", "new_energy"),  # small new-energy car: D/F first
        ("鄂AFA2345", "new_energy"),  # ... the character after D/F may be a letter
        ("粤B12345D", "new_energy"),  # large new-energy vehicle: D/F last
        ("粤B1234学", "special"),
        ("鄂A1234", None),  # too short
        ("鄂AI2345", None),  # I is never used
        ("鄂1A2345", None),  # second character must be a letter
        ("AA12345", None),  # no province
        ("鄂AD1234A", None),  # new-energy serial ends in digits
    ],
)
def test_plate_kind(plate: str, kind: str | None) -> None:
    assert plate_kind(plate) == kind


@pytest.mark.parametrize(
    ("read", "plate", "repairs"),
    [
        ("皖A·MON17", "皖AM0N17", [(3, "O", "0")]),  # O never appears: it is a zero
        ("皖A·NI888", "皖AN1888", [(3, "I", "1")]),  # I never appears: it is a one
        ("鄂812345", "鄂B12345", [(1, "8", "B")]),  # the second character is a letter
        ("鄂212345", "鄂Z12345", [(1, "2", "Z")]),
        ("鄂512345", "鄂S12345", [(1, "5", "S")]),
        ("鄂AD1234S", "鄂AD12345", [(8 - 1, "S", "5")]),  # new-energy positions are digits
        ("鄂AD1Z345", "鄂AD12345", [(4, "Z", "2")]),
        ("鄂AF0B123", "鄂AF08123", [(4, "B", "8")]),
        ("鄂A12345", "鄂A12345", []),  # nothing to repair
        ("鄂A1234S", "鄂A1234S", []),  # S is allowed in a blue plate's serial: not touched
        ("鄂AB8888", "鄂AB8888", []),  # 8 and B both allowed there: not touched
    ],
)
def test_repairs_only_what_the_format_rules_out(
    read: str, plate: str, repairs: list[tuple[int, str, str]]
) -> None:
    found = match_plate(read)
    assert found is not None
    assert found.text == plate
    assert list(found.repairs) == repairs


@pytest.mark.parametrize(
    "read",
    [
        "4000186111",
        "HELLO WORLD",
        "鄂I12345",  # I at the letter position has no letter look-alike
        "鄂AIOIO12",  # more repairs than MAX_REPAIRS
        "玩A12345",  # not a province, and no runner-up from the engine to repair it with
        "",
    ],
)
def test_not_a_plate(read: str) -> None:
    assert match_plate(read) is None


def test_repair_limit() -> None:
    assert MAX_REPAIRS == 2
    assert match_plate("鄂AOO345") is not None  # two repairs
    assert match_plate("鄂AOOO45") is None  # three


def test_runner_up_repairs_a_position_the_format_rules_out() -> None:
    scores = [0.6, 0.99, 0.99, 0.99, 0.99, 0.99, 0.99]
    alternatives = [(("玩", 0.6), ("皖", 0.3)), (), (), (), (), (), ()]
    found = match_plate("玩A12345", scores, alternatives)
    assert found is not None and found.text == "皖A12345"
    assert found.scores[0] == pytest.approx(0.3)  # the repaired character has the runner-up's probability


def test_lookalike_repair_keeps_the_glyphs_probability() -> None:
    scores = [0.99, 0.99, 0.99, 0.9, 0.99, 0.99, 0.99]
    alternatives = [(), (), (), (("O", 0.9), ("0", 0.08)), (), (), ()]
    found = match_plate("皖AMON17", scores, alternatives)
    assert found is not None and found.text == "皖AM0N17"
    assert found.scores[3] == pytest.approx(0.98)  # p(O) + p(0): the same shape


def test_lookalike_choice_follows_the_engine() -> None:
    # 0 at the letter position: D or Q; the engine's runner-ups decide.
    alternatives = [(), (("0", 0.7), ("Q", 0.2), ("D", 0.05)), (), (), (), (), ()]
    found = match_plate("鄂012345", [0.9] * 7, alternatives)
    assert found is not None and found.text == "鄂Q12345"


@pytest.mark.parametrize(
    ("text", "plate"),
    [
        ("停车 京N8P8F8 欢迎", "京N8P8F8"),  # a plate inside a longer line
        ("皖AD11166", "皖AD11166"),  # the new-energy plate, not its 7-character prefix
        ("1皖A12345", "皖A12345"),  # a stray character before the plate
        ("ｅ鄂Ａ１２３４５", "鄂A12345"),  # full-width forms fold
    ],
)
def test_plate_inside_a_line(text: str, plate: str) -> None:
    assert find_plate(text) == plate


def test_scores_follow_the_normalised_characters() -> None:
    found = match_plate("皖A·B1234", [0.9, 0.8, 0.1, 0.7, 0.6, 0.5, 0.4, 0.3])
    assert found is not None and found.text == "皖AB1234"
    assert found.scores == (0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3)  # the dot's score went with the dot


@pytest.mark.parametrize(
    ("patterns", "chinese", "read", "plate", "kind"),
    [
        (["[A-Z]{2}[0-9]{3}[A-Z]{2}"], False, "AB-123-CD", "AB123CD", "site"),  # France
        (["[A-Z]{1,3}[0-9]{1,4}[A-Z]{0,2}"], False, "B MW 1234", "BMW1234", "site"),  # Germany, one line
        (["[A-Z]{2}[0-9]{3}[A-Z]{2}"], False, "鄂A12345", None, None),  # mainland plates not accepted
        (["[A-Z]{2}[0-9]{3}[A-Z]{2}"], True, "鄂A12345", "鄂A12345", "standard"),  # both accepted
        (["[0-9]{4}"], False, "ZZ 1234 ZZ", "1234", "site"),  # found inside a longer line
    ],
)
def test_site_formats(
    patterns: list[str], chinese: bool, read: str, plate: str | None, kind: str | None
) -> None:
    found = match_plate(read, formats=PlateFormats.from_patterns(patterns, chinese=chinese))
    assert (found.text if found else None) == plate
    assert (found.kind if found else None) == kind


def test_bad_site_format_names_the_pattern() -> None:
    with pytest.raises(re.error, match=r"plate format '\[A-'"):
        PlateFormats.from_patterns(["[A-"])


def test_normalise() -> None:
    assert normalise(" 鄂a·12345 ") == "鄂A12345"
    assert normalise("AB-123-CD") == "AB123CD"
