"""Chinese plate formats: normalising OCR text and finding plate strings in it.

A mainland plate is a province character, a letter, then 5 characters (blue and yellow plates,
e.g. 鄂A12345) or 6 for new-energy green plates (e.g. 鄂AD12345). Letters I and O are not used.
"""

from __future__ import annotations

import re
import unicodedata

PROVINCES = "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼"
_LETTER = "A-HJ-NP-Z"
_ALNUM = _LETTER + "0-9"
STANDARD = re.compile(rf"[{PROVINCES}][{_LETTER}][{_ALNUM}]{{5}}")
NEW_ENERGY = re.compile(rf"[{PROVINCES}][{_LETTER}](?:[DF][{_ALNUM}]\d{{4}}|\d{{5}}[DF])")
_KEEP = re.compile(r"[^0-9A-Z\u4e00-\u9fff]")


def normalise(text: str) -> str:
    """Upper-case, fold full-width forms (NFKC) and drop separators, spaces and punctuation."""
    return _KEEP.sub("", unicodedata.normalize("NFKC", text).upper())


def plate_kind(plate: str) -> str | None:
    """``new_energy`` or ``standard`` if ``plate`` is a whole valid plate, else None."""
    if NEW_ENERGY.fullmatch(plate):
        return "new_energy"
    if STANDARD.fullmatch(plate):
        return "standard"
    return None


def find_plate(text: str) -> str | None:
    """The plate string inside one line of OCR text, or None.

    The whole line is preferred; otherwise the longest valid plate inside it (a new-energy plate
    over the 7-character plate that is its prefix).
    """
    clean = normalise(text)
    if plate_kind(clean):
        return clean
    for pattern in (NEW_ENERGY, STANDARD):
        found = pattern.search(clean)
        if found:
            return found.group(0)
    return None
