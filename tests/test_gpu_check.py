"""benchmarks/gpu_check.sh: the one-call GPU check, exercised on CPU with --smoke."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"
sys.path.insert(0, str(REPO / "benchmarks"))

import gpu_check  # noqa: E402


def run_script(*args: str, out: Path, timeout: int = 400) -> subprocess.CompletedProcess:
    env = {**os.environ, "OUT": str(out), "ATREID_PYTHON": sys.executable}
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def table_rows(markdown: str) -> dict[tuple[str, str], str]:
    """(part, item) -> value cell of the result table."""
    rows = {}
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 5 and cells[0] not in ("part", "---"):
            rows[(cells[0], cells[1])] = cells[2]
    return rows


@pytest.mark.slow
def test_smoke_run_measures_every_row(tmp_path):
    done = run_script("--smoke", out=tmp_path)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    markdown = (tmp_path / "gpu_check.md").read_text()
    assert markdown in done.stdout  # the table is printed and written
    assert "torch " in markdown and "mode: SMOKE" in markdown
    rows = table_rows(markdown)
    expected = gpu_check.expected_rows()
    # A row for every variant (throughput and memory) and for every part.
    assert {("train", v) for v in gpu_check.VARIANTS} <= set(expected)
    assert {("memory", v) for v in gpu_check.VARIANTS} <= set(expected)
    assert {part for part, _ in expected} == {"train", "memory", "ratio", "compile", "loader", "moae", "eval"}
    assert set(rows) == set(expected)
    for key, value in rows.items():
        number = float(value)  # raises on "—" (not measured)
        assert math.isfinite(number) and number >= 0, (key, value)
        if key[0] in ("train", "memory", "ratio", "compile", "loader", "moae") or key[1].endswith("6 scenarios"):
            assert number > 0, (key, value)
    assert float(rows[("eval", "max abs diff vs oracle")]) <= 1e-6
    data = json.loads((tmp_path / "gpu_check.json").read_text())
    assert all(isinstance(r["value"], (int, float)) for r in data["rows"])
    assert all(status.startswith("ok") for status in data["status"].values()), data["status"]
    assert "== gpu_check: part eval: ok" in (tmp_path / "gpu_check.log").read_text()


def test_refuses_without_cuda_unless_smoke(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible: the full check would run")
    done = run_script(out=tmp_path, timeout=120)
    assert done.returncode == 3
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and "refused: no CUDA device" in lines[0] and "--smoke" in lines[0]
    assert not (tmp_path / "gpu_check.md").exists()


def test_table_marks_missing_rows(tmp_path):
    rows = gpu_check.Rows(tmp_path, "train")
    rows.add("train", "full", 1500.0, "images/s", "ok")
    rows.add("train", "baseline", None, "images/s", "skipped: budget")
    (tmp_path / "train.status").write_text("stopped at its 240 s limit\n")
    (tmp_path / "moae.status").write_text("skipped: 3 s left of the 420 s budget\n")
    out = tmp_path / "t.md"
    assert gpu_check.main(["table", "--results", str(tmp_path), "--out", str(out)]) == 0
    text = out.read_text()
    found = table_rows(text)
    assert found[("train", "full")] == "1500"
    assert found[("train", "baseline")] == "—" and "skipped: budget" in text
    assert "not measured: part 'train' stopped at its 240 s limit" in text
    assert "not measured: part 'moae' skipped: 3 s left" in text
    assert "not measured: part 'eval' not run" in text
    assert f"1 of {len(gpu_check.expected_rows())} rows measured" in text
