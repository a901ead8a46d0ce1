"""Answers remembered for short strings (gateway.memo)."""

from __future__ import annotations

from gateway.memo import ShortStringMemo, short_string_memo


def test_remembers_short_strings_within_its_bounds() -> None:
    calls: list[str] = []

    @short_string_memo(length=5, count=3)
    def shout(text: str) -> str:
        """Upper case."""
        calls.append(text)
        return text.upper()

    assert isinstance(shout, ShortStringMemo)
    assert shout.__name__ == "shout" and shout.__doc__ == "Upper case."
    assert [shout("ab"), shout("ab")] == ["AB", "AB"] and calls == ["ab"]
    assert shout("abcdef") == "ABCDEF" and shout("abcdef") == "ABCDEF"
    assert calls.count("abcdef") == 2 and "abcdef" not in shout.seen  # too long
    for word in ("c", "d", "e"):
        shout(word)
    assert len(shout.seen) <= 3  # full: it started again
    assert shout("ab") == "AB"


def test_a_false_answer_is_remembered_too() -> None:
    calls: list[str] = []

    def never(text: str) -> bool:
        calls.append(text)
        return False

    memo = ShortStringMemo(never, length=10, count=10)
    assert memo("x") is False and memo("x") is False
    assert calls == ["x"]
