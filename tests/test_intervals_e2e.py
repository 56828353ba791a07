"""End to end (the session's tiny pipeline, tests/conftest.py `tiny_pipeline`): every
metrics file has its per-query outcomes and they give its numbers; the table has
bootstrap intervals; results/comparison.md pairs full with baseline; each variant has its
attention figure."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from atreid.eval.outcomes import check_summary, outcomes_path, read_outcomes


@pytest.mark.slow
def test_outcomes_intervals_comparison_and_attention(tiny_pipeline):
    work = tiny_pipeline.work  # read-only
    files = sorted((work / "results" / "metrics").glob("*/seed0/*.json"))
    assert len(files) == 4
    for path in files:
        assert check_summary(json.loads(path.read_text()), read_outcomes(outcomes_path(path))) == [], path
    table = pd.read_csv(work / "results" / "table.csv")
    measured = table[table["variant"] != "chance"]
    for column in ("Any-Time_R1", "Any-Time_mAP", "DT-ST_R1", "AD-LT_mAP", "market1501:R1"):
        assert (measured[f"{column}:lo"] <= measured[f"{column}:hi"]).all(), column
        assert measured[[f"{column}:lo", f"{column}:hi"]].notna().all().all(), column
    markdown = (work / "results" / "table.md").read_text()
    full = measured[measured["variant"] == "full"].iloc[0]
    assert (f"{full['Any-Time_R1']:.2f} [{full['Any-Time_R1:lo']:.2f}, {full['Any-Time_R1:hi']:.2f}] ± "
            in markdown), markdown
    comparison = (work / "results" / "comparison.md").read_text()
    assert "# Paired comparisons against baseline" in comparison and "## full" in comparison, comparison
    for cell in ("Any-Time", "DT-ST", "AD-LT", "market1501"):
        assert f"| {cell} |" in comparison, cell
    for variant in ("full", "baseline"):
        png = work / "results" / "attention" / f"{variant}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
