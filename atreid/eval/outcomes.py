"""Per-query outcomes: what every query contributed to a benchmark's numbers, kept on disk.

An evaluation writes, beside each ``results/metrics/{variant}/{run}/{benchmark}.json``,
``{benchmark}.outcomes.npz``: one entry per valid query of every protocol, trial and
ranking (plain, and re-ranked with ``eval.rerank``) with the vectors the metrics average:

* ``first_rank``: the 1-based rank of the query's first positive (its CMC@k hit is
  ``first_rank <= k``, so R1, R5, R10 and the whole curve come from it);
* ``ap``, ``inp``: the query's AP and INP; ``chance_r1``, ``chance_ap``: what a random
  ranking scores for it (fractions);
* ``person``: the query's person id (the cluster the bootstrap resamples), ``query``: its
  position in the protocol's query list, ``unit``: which (protocol, trial, ranking) it
  belongs to (``meta["units"]``).

``meta`` (JSON) also holds ``cells``: how the metrics file's ``summary`` is built from
the units. A summary value is the mean over the cell's protocols of the mean over each
protocol's trials of the mean over that trial's valid queries (Any-Time: the six
scenarios; a cross-dataset benchmark: its main protocol, or both directions of a
combination). :func:`summary_from_outcomes` recomputes every summary number that way,
and ``queries_sha256`` fingerprints which queries were scored (what `atreid compare`
checks before pairing two runs).

The file is an ordinary ``.npz`` (``numpy.load``) written byte-for-byte deterministically
(fixed zip timestamps), so the same evaluation gives the same file.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from atreid.constants import SCENARIOS
from atreid.errors import AtreidError
from atreid.io import atomic_write_bytes

OUTCOMES_SUFFIX = ".outcomes.npz"
# The key under which an evaluator hands its Outcomes to `atreid evaluate` (which writes
# them to their own file and leaves them out of the metrics JSON).
OUTCOMES_KEY = "outcomes"
PLAIN, RERANK = "plain", "rerank"
RERANK_KEY_SUFFIX = "@rr"  # atreid.eval.rerank.RERANK_SUFFIX (not imported: that module needs torch)
METRICS = ("R1", "mAP")
# AT-USTC's cells: Any-Time (the plain mean of the six scenarios) and each scenario alone;
# summary keys ``<cell>R1`` etc. (``Any-Time_R1``, ``DT-ST_mAP``).
def scenario_cells(scenarios: Sequence[str]) -> dict[str, list[str]]:
    """The cells of a benchmark scored by scenarios: Any-Time (their plain mean) and each alone."""
    return {"Any-Time_": list(scenarios), **{f"{name}_": [name] for name in scenarios}}

_COLUMNS = {"unit": np.int32, "query": np.int64, "person": np.int64, "first_rank": np.int64, "ap": np.float64,
            "inp": np.float64, "chance_r1": np.float64, "chance_ap": np.float64}
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # the zip format's earliest date: no wall-clock time in the file


def outcomes_path(metrics_path: str | Path) -> Path:
    """``.../{benchmark}.json`` -> ``.../{benchmark}.outcomes.npz``."""
    path = Path(metrics_path)
    return path.with_name(path.name[:-len(".json")] + OUTCOMES_SUFFIX if path.name.endswith(".json")
                          else path.name + OUTCOMES_SUFFIX)


class OutcomeRecorder:
    """Collects the per-query vectors of each (protocol, trial, ranking) an evaluation scores."""
    def __init__(self) -> None:
        self.units: list[dict[str, Any]] = []
        self.columns: dict[str, list[np.ndarray]] = {name: [] for name in _COLUMNS}

    def add(self, protocol: str, result: Any, *, trial: int = 0, ranking: str = PLAIN) -> None:
        """Record ``result`` (a :class:`~atreid.eval.metrics.RetrievalResult` with outcomes)."""
        outcomes = result.outcomes
        if outcomes is None:
            raise ValueError(f"{protocol}: the result holds no per-query outcomes (a pooled result?)")
        unit = len(self.units)
        self.units.append({"protocol": protocol, "trial": int(trial), "ranking": ranking,
                           "num_queries": int(result.num_queries)})
        size = len(outcomes.query)
        self.columns["unit"].append(np.full(size, unit, dtype=np.int32))
        for name in _COLUMNS:
            if name != "unit":
                self.columns[name].append(np.asarray(getattr(outcomes, name)))

    def table(self, benchmark: str, cells: Mapping[str, Sequence[str]]) -> "Outcomes":
        """The recorded outcomes; ``cells``: summary key prefix -> its protocols (see module doc)."""
        arrays = {name: (np.concatenate(parts) if parts else np.zeros(0)).astype(_COLUMNS[name], copy=False)
                  for name, parts in self.columns.items()}
        # Cells as [prefix, protocols] pairs: a list keeps their order through the JSON
        # (written with sorted keys), so reports list Any-Time first, then DT-ST ... AD-LT.
        meta = {"benchmark": benchmark, "units": self.units, "cells": [[k, list(v)] for k, v in cells.items()]}
        meta["queries_sha256"] = queries_fingerprint(meta["units"], arrays)
        return Outcomes(meta, arrays)


def queries_fingerprint(units: list[dict[str, Any]], arrays: Mapping[str, np.ndarray]) -> str:
    """sha256 of which queries (and persons) were scored in which unit: model-independent."""
    digest = hashlib.sha256()
    digest.update(json.dumps([{k: u[k] for k in ("protocol", "trial", "ranking", "num_queries")} for u in units],
                             sort_keys=True).encode())
    for name in ("unit", "query", "person"):
        digest.update(np.ascontiguousarray(arrays[name], dtype=np.int64).tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class Outcomes:
    """One benchmark's per-query outcomes: ``meta`` (units, cells, fingerprint) and the columns."""
    meta: dict[str, Any]
    arrays: dict[str, np.ndarray]

    @property
    def benchmark(self) -> str:
        return self.meta["benchmark"]

    @property
    def cells(self) -> dict[str, list[str]]:
        """Summary key prefix -> its protocols, in the order the evaluator gave them."""
        return {prefix: list(protocols) for prefix, protocols in self.meta["cells"]}

    @property
    def rankings(self) -> list[str]:
        return list(dict.fromkeys(u["ranking"] for u in self.meta["units"]))

    def values(self, metric: str) -> np.ndarray:
        """Per-query value (fraction) of a table metric: ``R1`` (hit at rank 1), ``R5``, ``mAP`` ...,
        ``chance:R1`` / ``chance:mAP``."""
        if metric.startswith("R") and metric[1:].isdigit():
            return (self.arrays["first_rank"] <= int(metric[1:])).astype(np.float64)
        named = {"mAP": "ap", "mINP": "inp", "chance:R1": "chance_r1", "chance:mAP": "chance_ap"}
        if metric not in named:
            raise ValueError(f"unknown metric {metric!r}; valid: R<k>, mAP, mINP, chance:R1, chance:mAP")
        return self.arrays[named[metric]]

    def cell_units(self, cell: str, ranking: str = PLAIN) -> list[tuple[int, float]]:
        """``(unit, weight)`` of a cell: each protocol weighs ``1 / #protocols``, split evenly over its trials."""
        protocols = self.cells[cell]
        out = []
        for protocol in protocols:
            units = [i for i, u in enumerate(self.meta["units"]) if u["protocol"] == protocol and u["ranking"] == ranking]
            if not units:
                raise AtreidError(f"{self.benchmark} outcomes have no unit for protocol {protocol!r} ({ranking}); "
                                  "re-run its evaluation")
            out.extend((unit, 1.0 / (len(protocols) * len(units))) for unit in units)
        return out


def summary_key(cell: str, metric: str, ranking: str = PLAIN) -> str:
    """The metrics file's ``summary`` key (and table column, less the benchmark prefix)."""
    return f"{cell}{metric}" + (RERANK_KEY_SUFFIX if ranking == RERANK else "")


def _cell_value(outcomes: Outcomes, cell: str, metric: str, ranking: str) -> float | None:
    values = outcomes.values(metric)
    unit_of = outcomes.arrays["unit"]
    total = 0.0
    for unit, weight in outcomes.cell_units(cell, ranking):
        mine = values[unit_of == unit]
        if len(mine) == 0:
            return None  # a unit without a valid query: the metrics file has None there too
        total += weight * float(mine.mean())
    return 100.0 * total


def summary_from_outcomes(outcomes: Outcomes, *, chance: bool = False) -> dict[str, float | None]:
    """The metrics file's ``summary`` (or ``chance_summary``) recomputed from the outcomes, in percent."""
    out: dict[str, float | None] = {}
    for ranking in outcomes.rankings:
        for cell in outcomes.cells:
            for metric in METRICS:
                out[summary_key(cell, metric, ranking)] = _cell_value(
                    outcomes, cell, f"chance:{metric}" if chance else metric, ranking)
    return out


def write_outcomes(path: str | Path, outcomes: Outcomes) -> None:
    """Write ``outcomes`` as a deterministic ``.npz`` (atomically)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        entries = {"meta": np.array(json.dumps(outcomes.meta, sort_keys=True)), **outcomes.arrays}
        for name, array in entries.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            # level 1: most of the gain (the integer columns), a fraction of the time
            archive.writestr(info, member.getvalue(), compresslevel=1)
    atomic_write_bytes(path, buffer.getvalue())


def read_outcomes(path: str | Path, columns: Sequence[str] = tuple(_COLUMNS)) -> Outcomes:
    """Read a file :func:`write_outcomes` wrote (only ``columns``: each costs a decompression);
    a missing or broken one is a one-line error."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(data["meta"].item())
            arrays = {name: data[name] for name in columns}
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise AtreidError(f"{path}: missing or unreadable per-query outcomes ({type(exc).__name__}); "
                          "re-run its evaluation (snakemake -R evaluate_run)") from None
    return Outcomes(meta, arrays)


def check_summary(metrics: Mapping[str, Any], outcomes: Outcomes, *, tolerance: float = 1e-9) -> list[str]:
    """Summary keys whose value in ``metrics`` differs from the outcomes' (empty: they agree)."""
    bad = []
    for field, chance in (("summary", False), ("chance_summary", True)):
        recomputed = summary_from_outcomes(outcomes, chance=chance)
        for key, value in metrics.get(field, {}).items():
            mine = recomputed.get(key, math.nan)
            if value is None or mine is None:
                if value is not mine:
                    bad.append(f"{field}.{key}")
            elif not abs(float(value) - float(mine)) <= tolerance:
                bad.append(f"{field}.{key}")
    return bad
