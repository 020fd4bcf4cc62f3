"""Free text (reasons, comments, descriptions): stripped, bounded, never blank, never NUL."""

from __future__ import annotations

import pytest

from loopline.core.errors import InvalidArgumentError
from loopline.core.names import validate_text


def test_text_is_stripped_and_any_other_character_kept() -> None:
    text = "ready \u00e9\t\U0001f680"
    assert validate_text(f"  {text}\n", "reason", 100) == text


@pytest.mark.parametrize(("value", "problem"), [
    (None, "required"), ("", "required"), ("  \n", "required"), (5, "required"),
    ("x" * 11, "at most 10"), ("a\x00b", "NUL"), ("\x00", "NUL")])
def test_bad_text_is_refused_naming_the_field(value: object, problem: str) -> None:
    with pytest.raises(InvalidArgumentError, match=problem) as refused:
        validate_text(value, "reason", 10)
    assert refused.value.field == "reason"
