"""Figures people look at: CMC curves, R1/mAP comparison bars, training curves.

Every function takes the run's own files (metrics JSON, history CSV) and writes one PNG
atomically; nothing is recomputed here, so a figure always shows what the run measured.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from atreid.constants import SCENARIOS  # noqa: E402
from atreid.io import atomic_write_bytes, atomic_write_csv  # noqa: E402


def save_figure(fig: plt.Figure, path: str | Path) -> None:
    buffer = io.BytesIO()
    # Fixed metadata keeps the PNG bytes reproducible for identical data.
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def load_json(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def cmc_table(metrics: dict[str, Any]) -> pd.DataFrame:
    """Tidy CMC curves of one metrics file: rank, then one column per scenario (percent)."""
    protocols = metrics["protocols"]
    ranks = range(1, len(protocols[SCENARIOS[0]]["cmc"]) + 1)
    data = {"rank": list(ranks)}
    for name in SCENARIOS:
        # Percentages already; None (no valid query) becomes NaN.
        data[name] = [float("nan") if v is None else round(float(v), 4) for v in protocols[name]["cmc"]]
    return pd.DataFrame(data)


def write_cmc_csv(metrics_path: str | Path, out: str | Path) -> None:
    """The CMC curves as CSV (declared as DVC plots: `dvc plots diff` compares runs)."""
    atomic_write_csv(out, cmc_table(load_json(metrics_path)))


def run_label(metrics: dict[str, Any]) -> str:
    """``variant (run)`` of a metrics file, the run being the model's folder (seed0, imported)."""
    model = metrics.get("model")
    return f"{metrics['variant']} ({Path(model).parent.name})" if model else str(metrics["variant"])


def plot_cmc(metrics_by_variant: dict[str, dict[str, Any]], out: str | Path) -> None:
    """One panel per scenario, one line per variant (the run its metrics file comes from:
    the workflow passes each variant's first run)."""
    fig, axes = plt.subplots(2, 3, figsize=(13, 7), sharex=True, sharey=True)
    for ax, name in zip(axes.flat, SCENARIOS):
        for metrics in metrics_by_variant.values():
            table = cmc_table(metrics)
            ax.plot(table["rank"], table[name], marker="o", markersize=3, label=run_label(metrics))
        ax.set_title(name)
        ax.set_xlabel("rank")
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel("matching rate (%)")
    axes.flat[0].legend(loc="lower right", fontsize=8)
    fig.suptitle("AT-USTC CMC curves per scenario (one run per variant: its first seed)")
    save_figure(fig, out)


def _metric_column(table: pd.DataFrame, key: str, metric: str) -> str | None:
    """AT-USTC columns read ``<protocol>_<metric>``, benchmarks ``<benchmark>:<metric>``."""
    for column in (f"{key}_{metric}", f"{key}:{metric}"):
        if column in table.columns:
            return column
    return None


def plot_comparison(table: pd.DataFrame, out: str | Path) -> None:
    """Grouped bars of R1 and mAP per protocol for every variant: the mean over its runs,
    with error bars of the sample std (``<column>:std``) where the table has them (paper
    values as markers)."""
    keys = [c[:-3] for c in table.columns
            if c.endswith(("_R1", ":R1")) and not c.startswith(("paper:", "diff:"))]
    fig, axes = plt.subplots(2, 1, figsize=(max(8.0, 0.55 * len(keys) * max(1, len(table)) + 4), 8))
    width = 0.8 / max(1, len(table))
    for ax, metric in zip(axes, ("R1", "mAP")):
        for i, (_, row) in enumerate(table.iterrows()):
            xs = [k + (i - (len(table) - 1) / 2) * width for k in range(len(keys))]
            columns = [_metric_column(table, key, metric) for key in keys]
            values = [row[c] if c else float("nan") for c in columns]
            spread = [row.get(f"{c}:std", float("nan")) if c else float("nan") for c in columns]
            errors = [s if pd.notna(s) else 0.0 for s in spread]
            ax.bar(xs, values, width=width, label=row["variant"], yerr=errors if any(errors) else None,
                   capsize=2, error_kw={"elinewidth": 0.8})
            paper = [row.get(f"paper:{c}", float("nan")) if c else float("nan") for c in columns]
            if any(pd.notna(p) for p in paper):
                ax.scatter(xs, paper, marker="D", color="black", s=18, zorder=3,
                           label="published" if i == 0 else None)
        ax.set_xticks(range(len(keys)))
        ax.set_xticklabels(keys, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(f"{metric} (%)")
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8, ncol=min(4, len(table) + 1))
    synthetic = bool(table["synthetic"].any()) if "synthetic" in table else False
    runs = table["n"].max() if "n" in table and table["n"].notna().any() else 1
    spread = f" (mean ± std over up to {int(runs)} runs per variant)" if runs > 1 else ""
    fig.suptitle("R1 / mAP per protocol" + spread + (" (synthetic demo data)" if synthetic else ""))
    save_figure(fig, out)


HISTORY_GROUPS: Sequence[tuple[str, str]] = (
    ("loss_h", "loss per head"),
    ("weight_h", "HDW weight per head"),
    ("acc_h", "training accuracy per head"),
)


def plot_training(history: pd.DataFrame, variant: str, out: str | Path) -> None:
    """Loss, HDW weights and accuracy per head, and the learning rate, per epoch."""
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    for ax, (prefix, title) in zip(axes.flat, HISTORY_GROUPS):
        for head, name in enumerate(SCENARIOS):
            column = f"{prefix}{head}"
            if column in history:
                ax.plot(history["epoch"], history[column], label=name)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    lr_columns = [c for c in history.columns if c.startswith("lr")]
    ax = axes.flat[3]
    for column in lr_columns:
        ax.plot(history["epoch"], history[column], label=column)
    ax.set_title("learning rate")
    ax.set_xlabel("epoch")
    ax.grid(alpha=0.3)
    fig.suptitle(f"training curves: {variant}")
    save_figure(fig, out)
