"""Ranked retrieval galleries: a query, then its top-10 gallery images after the
protocol's removal rules, framed green (true match) or red, with distance and
camera / modality / clothes labels. One PNG per (variant, scenario).

The ranking is computed here from the same features, protocol records and removal rule
as the metrics (stable sort: equal distances keep gallery order), so what the picture
shows is what the numbers scored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from PIL import Image

from atreid.constants import MODALITY_NAMES
from atreid.eval.metrics import cosine_distance
from atreid.eval.oracle import removal_mask
from atreid.eval.scoring import labels_of
from atreid.data.protocols import Protocol
from atreid.report.plots import plt, save_figure


@dataclass(frozen=True)
class RankedQuery:
    """One query and its top-k gallery entries (rows of the index)."""
    query_row: int
    gallery_rows: tuple[int, ...]
    distances: tuple[float, ...]
    matches: tuple[bool, ...]


def ranked_queries(features: torch.Tensor, index: pd.DataFrame, protocol: Protocol, *, num_queries: int = 4,
                   top_k: int = 10, seed: int = 0) -> list[RankedQuery]:
    """A seeded selection of valid queries (at least one positive left) and their top-k."""
    index = index.reset_index(drop=True)
    labels = labels_of(index, protocol.clothes_column)
    q_rows, g_rows = protocol.rows(index)
    if len(q_rows) == 0 or len(g_rows) == 0:
        return []
    q, g = labels.take(q_rows), labels.take(g_rows)
    head = protocol.head
    dist = cosine_distance(torch.as_tensor(features)[q_rows, head].float(),
                           torch.as_tensor(features)[g_rows, head].float()).cpu().numpy()
    kept_by_query = []
    for i in range(len(q_rows)):
        keep = ~removal_mask(i, q, g, protocol.rule)
        if np.any(keep & (g.person == q.person[i])):
            kept_by_query.append((i, keep))
    if not kept_by_query:
        return []
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(kept_by_query), size=min(num_queries, len(kept_by_query)), replace=False))
    ranked = []
    for pick in chosen:
        i, keep = kept_by_query[pick]
        candidates = np.flatnonzero(keep)
        order = candidates[np.argsort(dist[i, candidates], kind="stable")][:top_k]
        ranked.append(RankedQuery(int(q_rows[i]), tuple(int(g_rows[j]) for j in order),
                                  tuple(float(dist[i, j]) for j in order),
                                  tuple(bool(g.person[j] == q.person[i]) for j in order)))
    return ranked


def _label(row: pd.Series) -> str:
    modality = row["modality"] if isinstance(row["modality"], str) else MODALITY_NAMES[int(row["modality"])]
    return f"p{int(row['person'])} c{int(row['camera'])}\n{modality} cl{int(row['clothes'])}"


# One cell of a ranked-images figure: (image file, caption, frame colour, frame width).
Cell = tuple[Path, str, str, float]


def draw_ranked_rows(rows: Sequence[Sequence[Cell]], title: str, out: str | Path, *, empty_columns: int,
                     title_size: float = 10, empty_text: str | None = None) -> None:
    """The figure of ranked retrievals shared by the galleries and ``atreid search``: one
    row per query, each cell an image in a coloured frame under its caption."""
    n_rows = max(1, len(rows))
    cols = max((len(r) for r in rows), default=empty_columns)
    fig, axes = plt.subplots(n_rows, cols, figsize=(1.25 * cols, 2.6 * n_rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for r, cells in enumerate(rows):
        for c, (path, caption, colour, width) in enumerate(cells):
            ax = axes[r, c]
            with Image.open(path) as image:
                ax.imshow(np.asarray(image.convert("RGB")))
            ax.axis("on")
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_edgecolor(colour)
                spine.set_linewidth(width)
            ax.set_title(caption, fontsize=6)
    if not rows and empty_text:
        axes[0, 0].text(0, 0.5, empty_text, fontsize=10)
    fig.suptitle(title, fontsize=title_size)
    save_figure(fig, out)


def plot_gallery(ranked: Sequence[RankedQuery], index: pd.DataFrame, images_root: str | Path, title: str,
                 out: str | Path) -> None:
    """Draw one row per query: the query, then its ranked gallery images."""
    index = index.reset_index(drop=True)
    root = Path(images_root)
    rows = []
    for query in ranked:
        entries = [(query.query_row, None, None)] + list(zip(query.gallery_rows, query.distances, query.matches))
        cells = []
        for c, (row_id, distance, match) in enumerate(entries):
            row = index.iloc[row_id]
            colour = "black" if match is None else ("limegreen" if match else "red")
            caption = "query\n" + _label(row) if distance is None else f"#{c} d={distance:.3f}\n" + _label(row)
            cells.append((root / row["path"], caption, colour, 4 if match is not None else 2))
        rows.append(cells)
    draw_ranked_rows(rows, title, out, empty_columns=1 + 10, empty_text="no valid query")
