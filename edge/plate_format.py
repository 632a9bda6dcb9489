"""Plate formats: normalising OCR text, finding plate strings in it and repairing look-alikes.

A mainland plate (GA 36-2018) is a province character, a letter (the issuing office), then 5
characters (blue and yellow plates, e.g. 鄂A12345) or 6 for new-energy green plates: D or F and
5 more for small cars (鄂AD12345; the character after D/F may be a letter), or 5 digits and D or F
for large ones (鄂A12345D). Letters I and O are never used. Special-use plates (learner 学, police
警, trailer 挂, Hong Kong 港 and Macau 澳 crossings, consulates 领) end in that character.

Repair changes only characters the format rules out at their position, and only into a
character that is allowed there and is either a known look-alike (0/O/D/Q, 1/I, 8/B, 2/Z, 5/S,
6/G) or the recogniser's own runner-up at that point. A read needing more than
:data:`MAX_REPAIRS` repairs is not taken to be a plate.

Sites abroad (or with private plates) configure their own formats as regular expressions,
matched against the normalised text (upper case, separators and spaces removed), without repair.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field

PROVINCES = "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼"
LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ"  # A-Z without I and O
DIGITS = "0123456789"
ALNUM = LETTERS + DIGITS
ENERGY = "DF"
SPECIAL = "学警挂港澳领"
_LETTER = "A-HJ-NP-Z"
_ALNUM = _LETTER + "0-9"
STANDARD = re.compile(rf"[{PROVINCES}][{_LETTER}][{_ALNUM}]{{5}}")
NEW_ENERGY = re.compile(rf"[{PROVINCES}][{_LETTER}](?:[DF][{_ALNUM}]\d{{4}}|\d{{5}}[DF])")
_KEEP = re.compile(r"[0-9A-Z\u4e00-\u9fff]")

#: Characters the recogniser confuses with each other because they look alike on a plate.
LOOKALIKES: dict[str, str] = {
    "0": "ODQ",
    "O": "0DQ",
    "D": "0",
    "Q": "0",
    "1": "I",
    "I": "1",
    "8": "B",
    "B": "8",
    "2": "Z",
    "Z": "2",
    "5": "S",
    "S": "5",
    "6": "G",
    "G": "6",
}
MAX_REPAIRS = 2  # more ruled-out characters than this: the line is probably not a plate
MIN_RUNNER_UP = 0.02  # a runner-up character below this probability is not a repair candidate

Alternatives = Sequence[tuple[str, float]]


@dataclass(frozen=True)
class Template:
    """One plate layout: the characters allowed at each position."""

    kind: str
    positions: tuple[str, ...]


TEMPLATES: tuple[Template, ...] = (
    Template("new_energy", (PROVINCES, LETTERS, ENERGY, ALNUM, DIGITS, DIGITS, DIGITS, DIGITS)),
    Template("new_energy", (PROVINCES, LETTERS, DIGITS, DIGITS, DIGITS, DIGITS, DIGITS, ENERGY)),
    Template("standard", (PROVINCES, LETTERS, ALNUM, ALNUM, ALNUM, ALNUM, ALNUM)),
    Template("special", (PROVINCES, LETTERS, ALNUM, ALNUM, ALNUM, ALNUM, SPECIAL)),
)


@dataclass(frozen=True)
class PlateMatch:
    """A plate found in a line of text, with one score per character after repair."""

    text: str
    kind: str  # standard, new_energy, special, or "site" for a configured format
    scores: tuple[float, ...]
    repairs: tuple[tuple[int, str, str], ...] = ()  # (position, read, repaired to)


@dataclass(frozen=True)
class PlateFormats:
    """Which plates a site accepts: mainland formats (with repair) and/or its own regexes."""

    chinese: bool = True
    site: tuple[re.Pattern[str], ...] = field(default=())

    @classmethod
    def from_patterns(cls, patterns: Sequence[str], *, chinese: bool = True) -> PlateFormats:
        """Compile site formats; a bad pattern raises ``re.error`` naming it."""
        compiled = []
        for pattern in patterns:
            try:
                compiled.append(re.compile(pattern))
            except re.error as err:
                raise re.error(f"plate format {pattern!r}: {err.msg}", err.pattern, err.pos) from None
        return cls(chinese=chinese, site=tuple(compiled))


CHINESE = PlateFormats()


def normalise(text: str) -> str:
    """Upper-case, fold full-width forms (NFKC) and drop separators, spaces and punctuation."""
    return "".join(_KEEP.findall(unicodedata.normalize("NFKC", text).upper()))


def _normalise_scored(
    text: str, scores: Sequence[float], alternatives: Sequence[Alternatives]
) -> tuple[str, list[float], list[Alternatives]]:
    """Like :func:`normalise`, keeping each kept character's score and runner-ups."""
    out_text: list[str] = []
    out_scores: list[float] = []
    out_alts: list[Alternatives] = []
    for i, ch in enumerate(text):
        for kept in _KEEP.findall(unicodedata.normalize("NFKC", ch).upper()):
            out_text.append(kept)
            out_scores.append(scores[i] if i < len(scores) else 1.0)
            out_alts.append(alternatives[i] if i < len(alternatives) else ())
    return "".join(out_text), out_scores, out_alts


def plate_kind(plate: str) -> str | None:
    """``new_energy``, ``standard`` or ``special`` if ``plate`` is a whole valid plate, else None."""
    for template in TEMPLATES:
        if len(plate) == len(template.positions) and all(
            ch in allowed for ch, allowed in zip(plate, template.positions, strict=True)
        ):
            return template.kind
    return None


def _repair_char(ch: str, score: float, alts: Alternatives, allowed: str) -> tuple[str, float] | None:
    """The allowed character ``ch`` most probably is, and its probability, or None."""
    probs = {c: p for c, p in alts}
    looks = [c for c in LOOKALIKES.get(ch, "") if c in allowed]
    if looks:
        # The glyph is the same shape; the format decides which of the look-alikes it is.
        best = max(looks, key=lambda c: probs.get(c, 0.0))
        return best, min(1.0, score + probs.get(best, 0.0))
    runner_up = [(c, p) for c, p in alts if c in allowed and p >= MIN_RUNNER_UP]
    return runner_up[0] if runner_up else None


def _fit(
    text: str, scores: Sequence[float], alts: Sequence[Alternatives], template: Template
) -> PlateMatch | None:
    out: list[str] = []
    out_scores: list[float] = []
    repairs: list[tuple[int, str, str]] = []
    for i, (ch, allowed) in enumerate(zip(text, template.positions, strict=True)):
        if ch in allowed:
            out.append(ch)
            out_scores.append(scores[i])
            continue
        fixed = _repair_char(ch, scores[i], alts[i], allowed)
        if fixed is None or len(repairs) == MAX_REPAIRS:
            return None
        out.append(fixed[0])
        out_scores.append(fixed[1])
        repairs.append((i, ch, fixed[0]))
    return PlateMatch("".join(out), template.kind, tuple(out_scores), tuple(repairs))


def match_plate(
    text: str,
    scores: Sequence[float] = (),
    alternatives: Sequence[Alternatives] = (),
    formats: PlateFormats = CHINESE,
) -> PlateMatch | None:
    """The plate in one line of OCR text, repaired where the format allows, or None.

    A plate that is the whole line wins over one inside it; then fewer repairs; then the longer
    plate (a new-energy plate over the 7-character plate that is its prefix).
    """
    clean, clean_scores, clean_alts = _normalise_scored(text, scores, alternatives)
    found: list[tuple[tuple[bool, int, int, int], PlateMatch]] = []
    if formats.chinese:
        for template in TEMPLATES:
            n = len(template.positions)
            for start in range(len(clean) - n + 1):
                end = start + n
                fit = _fit(clean[start:end], clean_scores[start:end], clean_alts[start:end], template)
                if fit is not None:
                    whole = start == 0 and end == len(clean)
                    found.append(((whole, -len(fit.repairs), n, -start), fit))
    for pattern in formats.site:
        site = pattern.fullmatch(clean) or pattern.search(clean)
        if site and site.group(0):
            start, end = site.span()
            key = (start == 0 and end == len(clean), 0, end - start, -start)
            found.append((key, PlateMatch(site.group(0), "site", tuple(clean_scores[start:end]))))
    if not found:
        return None
    return max(found, key=lambda f: f[0])[1]


def find_plate(text: str, formats: PlateFormats = CHINESE) -> str | None:
    """The plate string inside one line of OCR text (repaired look-alikes), or None."""
    found = match_plate(text, formats=formats)
    return found.text if found else None
