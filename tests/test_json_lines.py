"""``--json`` output is strict JSON: one home for the rule (``stylegrad.progress.json_line``)."""
import json
import math

from stylegrad.progress import finite_or_null, json_line


def test_non_finite_numbers_become_null_at_any_depth():
    text = json_line({"loss": math.nan, "s": {"p50": math.inf, "ok": 1.5}, "hist": [1.0, -math.inf], "n": 3})
    assert json.loads(text) == {"loss": None, "s": {"p50": None, "ok": 1.5}, "hist": [1.0, None], "n": 3}
    assert "NaN" not in text and "Infinity" not in text and "\n" not in text


def test_finite_values_are_kept():
    rec = {"a": 0.0, "b": "x", "c": None, "d": True}
    assert finite_or_null(rec) == rec
