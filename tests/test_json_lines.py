"""``--json`` output is strict JSON: one home for the rule (``stylegrad.run.progress.json_line``)."""
import json
import math

from stylegrad.run.progress import finite_or_null, json_line


def test_non_finite_numbers_become_null_at_any_depth():
    text = json_line({"loss": math.nan, "s": {"p50": math.inf, "ok": 1.5}, "hist": [1.0, -math.inf], "n": 3})
    assert json.loads(text) == {"loss": None, "s": {"p50": None, "ok": 1.5}, "hist": [1.0, None], "n": 3}
    assert "NaN" not in text and "Infinity" not in text and "\n" not in text


def test_finite_values_are_kept():
    rec = {"a": 0.0, "b": "x", "c": None, "d": True}
    assert finite_or_null(rec) == rec


def test_a_manifest_record_with_a_non_finite_loss_is_written_as_null(tmp_path):
    from stylegrad.jobs.manifest import ManifestWriter, manifest_path

    with ManifestWriter(tmp_path) as m:
        m.append({"kind": "image", "loss": math.nan, "nested": {"x": math.inf}})
    line = manifest_path(tmp_path).read_text().strip().splitlines()[-1]
    assert json.loads(line) == {"kind": "image", "loss": None, "nested": {"x": None}}
