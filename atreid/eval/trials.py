"""The trials of a protocol: which queries and gallery images one trial scores.

A :class:`~atreid.data.protocols.Protocol` with ``gallery_shots`` draws that many gallery
images per (person, camera) in each trial, trial ``t`` seeded with ``t``; one with a
``trial_column`` keeps the rows of split file ``t + 1`` (RegDB). Reproducible on any
machine and for any file listing order: rows are sorted by path before every draw.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from atreid.data.protocols import BenchmarkProtocols, Protocol, select, selection_mask


def _trial_members(values: pd.Series, split_number: int) -> pd.Series:
    def names(value: Any) -> bool:
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return False
        return str(split_number) in {t.strip().split(".")[0] for t in str(value).split(";")}

    return values.map(names).astype(bool)


def draw_per_person_camera(frame: pd.DataFrame, shots: int, seed: int) -> pd.DataFrame:
    """``shots`` random rows per (person, camera) group (all rows of smaller groups).

    Reproducible on any machine and independent of the row order: rows are sorted by
    path, groups visited in sorted (person, camera) order, one ``default_rng(seed)``
    stream drives every draw. The result is sorted by path.
    """
    ordered = frame.sort_values("path", kind="stable")
    rng = np.random.default_rng(seed)
    keep: list[int] = []
    for _, group in ordered.groupby(["person", "camera"], sort=True):
        positions = group.index.to_numpy()
        if len(positions) <= shots:
            keep.extend(positions.tolist())
        else:
            picked = rng.choice(len(positions), size=shots, replace=False)
            keep.extend(positions[np.sort(picked)].tolist())
    return frame.loc[keep].sort_values("path", kind="stable")


def trial_sets(index: pd.DataFrame, protocol: Protocol, trial: int) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """(queries, gallery, trial description) of one trial of ``protocol``."""
    query = select(index, protocol.query)
    gallery = select(index, protocol.gallery)
    info: dict[str, Any] = {"trial": trial}
    if protocol.trial_column:
        split_number = trial + 1
        query = query[_trial_members(query[protocol.trial_column], split_number)]
        gallery = gallery[_trial_members(gallery[protocol.trial_column], split_number)]
        info["split_files"] = split_number
    if protocol.gallery_shots:
        gallery = draw_per_person_camera(gallery, protocol.gallery_shots, seed=trial)
        info["seed"] = trial
    return query.sort_values("path", kind="stable"), gallery.sort_values("path", kind="stable"), info


def candidate_rows(index: pd.DataFrame, spec: BenchmarkProtocols) -> pd.DataFrame:
    """Every row any protocol (any trial) of ``spec`` may use, sorted by path."""
    mask = np.zeros(len(index), dtype=bool)
    for protocol in spec.protocols:
        mask |= selection_mask(index, protocol.query) | selection_mask(index, protocol.gallery)
    return index[mask].sort_values("path", kind="stable")
