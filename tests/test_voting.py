"""Voting the frames of one vehicle's passage into one plate, once per vehicle per lane."""

from __future__ import annotations

import pytest

from edge.plates import PlateRead, combine
from edge.voting import PassageVoter, vote


def read(text: str, confidence: float, scores: tuple[float, ...] = ()) -> PlateRead:
    kind = "new_energy" if len(text) == 8 else "standard"
    return PlateRead(text, confidence, (0, 0, 10, 5), kind, "blue", char_scores=scores)


@pytest.mark.parametrize(
    ("reads", "plate", "agreeing"),
    [
        ([("鄂A12345", 0.9)], "鄂A12345", 1),
        ([("鄂A12345", 0.9), ("鄂A12345", 0.8), ("鄂A12845", 0.95)], "鄂A12345", 2),  # two outvote one
        ([("鄂A12345", 0.5), ("鄂A12845", 0.95)], "鄂A12845", 1),  # ... but not a much surer one
        ([("鄂A12345", 0.9), ("鄂A19345", 0.85), ("鄂A12375", 0.8)], "鄂A12345", 1),
        ([("鄂B12345", 0.7), ("鄂A12395", 0.7), ("鄂A62345", 0.6), ("鄂A12345", 0.1)], "鄂A12345", 1),
        ([("鄂AD12345", 0.9), ("鄂A12345", 0.5), ("鄂AD12345", 0.8)], "鄂AD12345", 2),  # length by weight
    ],
)
def test_vote_per_position_weighted_by_confidence(
    reads: list[tuple[str, float]], plate: str, agreeing: int
) -> None:
    result = vote([read(t, c) for t, c in reads])
    assert result.text == plate
    assert result.agreeing == agreeing
    assert result.reads == len(reads)


def test_assembled_plate_is_less_confident_than_its_reads() -> None:
    # No read says 鄂A12345, but each position has a majority: the vote assembles it.
    result = vote([read("鄂B12345", 0.9), read("鄂A92345", 0.9), read("鄂A12349", 0.9)])
    assert result.text == "鄂A12345" and result.agreeing == 0
    assert result.confidence == pytest.approx(0.9 * 2 / 3, abs=1e-3)  # the weakest position's share


def test_vote_keeps_the_best_crop() -> None:
    reads = [read("鄂A12345", 0.8), read("鄂A12345", 0.95), read("鄂A12845", 0.9)]
    result = vote(reads)
    assert result.best is reads[1]
    assert result.confidence == 0.95


def test_per_character_probabilities_weigh_in() -> None:
    # Two reads disagree on the last digit; each read is sure of everything but that digit.
    sure = (0.99,) * 6
    one = read("皖AD19769", 0.62, (*sure, 0.83, 0.99))
    two = read("皖AD19789", 0.44, (*sure, 0.96, 0.98))
    three = read("皖AD19789", 0.57, (*sure, 0.84, 0.99))
    best, agreeing = combine([one, two, three])
    assert best.text == "皖AD19789" and agreeing == 2


def test_empty_passage_votes_no_plate() -> None:
    result = vote([], frames=4)
    assert result.text is None and result.frames == 4 and result.best is None


def test_decides_at_once_on_a_sure_read() -> None:
    voter = PassageVoter(sure=0.97)
    assert voter.add(read("鄂A12345", 0.6), 0.0) is None
    decided = voter.add(read("鄂A12345", 0.98), 0.1)
    assert decided is not None and decided.text == "鄂A12345" and decided.frames == 2


def test_decides_when_reads_agree() -> None:
    voter = PassageVoter(min_agree=2, sure=1.0)
    assert voter.add(read("鄂A12345", 0.7), 0.0) is None
    assert voter.add(read("鄂A12845", 0.7), 0.1) is None
    decided = voter.add(read("鄂A12345", 0.7), 0.2)
    assert decided is not None and decided.text == "鄂A12345" and decided.agreeing == 2


def test_decides_after_max_frames_or_seconds() -> None:
    voter = PassageVoter(max_frames=3, max_seconds=10, sure=1.0, min_agree=5)
    assert voter.add(None, 0.0) is None
    assert voter.add(read("鄂A12345", 0.5), 0.1) is None
    decided = voter.add(None, 0.2)
    assert decided is not None and decided.text == "鄂A12345" and decided.frames == 3 and decided.reads == 1

    voter = PassageVoter(max_frames=100, max_seconds=1.0, sure=1.0, min_agree=5)
    assert voter.add(None, 0.0) is None
    decided = voter.add(None, 1.5)
    assert decided is not None and decided.text is None  # a vehicle whose plate was not read


def test_one_trigger_per_vehicle_and_again_after_it_left() -> None:
    voter = PassageVoter(sure=0.9)
    first = voter.add(read("鄂A12345", 0.95), 0.0)
    assert first is not None
    for t in (0.1, 0.2, 0.3):  # the same vehicle, still in view: ignored
        assert voter.add(read("鄂A12345", 0.99), t) is None
    assert voter.decided
    assert voter.vehicle_left(0.5) is None  # already decided: nothing more to say
    again = voter.add(read("鄂A12345", 0.95), 30.0)  # it came back
    assert again is not None and again.text == "鄂A12345"


def test_vehicle_leaving_decides_an_open_passage() -> None:
    voter = PassageVoter(sure=1.0, min_agree=5)
    assert voter.add(read("鄂A12345", 0.7), 0.0) is None
    left = voter.vehicle_left(0.4)
    assert left is not None and left.text == "鄂A12345"
    assert not voter.active


def test_expire_decides_a_stalled_passage() -> None:
    voter = PassageVoter(max_seconds=2.0, sure=1.0, min_agree=5)
    voter.add(read("鄂A12345", 0.7), 0.0)
    assert voter.expire(1.0) is None
    expired = voter.expire(2.5)
    assert expired is not None and expired.text == "鄂A12345"


@pytest.mark.parametrize("kwargs", [{"max_frames": 0}, {"min_agree": 0}, {"max_seconds": 0}])
def test_bad_voter_settings(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be"):
        PassageVoter(**kwargs)  # type: ignore[arg-type]
