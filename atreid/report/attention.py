"""Attention figures: one row per image, the image then one map per CLS token beside it.

The maps come from :func:`atreid.model.attention.token_maps` (attention rollout by default).
Each map is stretched between its own minimum and maximum so the figure compares WHERE
tokens look; the number above each map is the share of the token that comes from the image
patches at all.
:func:`pick_person_images` chooses, from the AT-USTC test images, one person seen in RGB and
IR in two outfits (the question the six tokens answer: what stays when light or clothes
change).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image

from atreid.constants import SCENARIOS
from atreid.errors import AtreidError
from atreid.eval.features import eval_transform
from atreid.report.plots import plt, save_figure


def pick_person_images(index: pd.DataFrame, *, skip: int = 0) -> pd.DataFrame:
    """Up to four test rows of one person: RGB and IR in each of two outfits.

    The person is the first (by id; ``skip`` passes over that many) with both modalities
    and at least two outfits; per (outfit, modality) the image with the smallest path.
    """
    test = index[index["flag"] >= 2] if "flag" in index.columns else index
    candidates = []
    for person, rows in test.groupby("person", sort=True):
        if set(rows["modality"]) >= {"rgb", "ir"} and rows["clothes"].nunique() >= 2:
            candidates.append((person, rows))
    if len(candidates) <= skip:
        raise AtreidError("no test person has RGB and IR images in two outfits; "
                          "give the images yourself with --images")
    _, rows = candidates[skip]
    # Prefer outfits seen in both modalities, then the smallest clothes ids.
    both = rows.groupby("clothes")["modality"].nunique().sort_index()
    outfits = sorted(both.index, key=lambda c: (-both[c], c))[:2]
    picked = []
    for clothes in sorted(outfits):
        for modality in ("rgb", "ir"):
            match = rows[(rows["clothes"] == clothes) & (rows["modality"] == modality)].sort_values("path")
            if len(match):
                picked.append(match.iloc[0])
    return pd.DataFrame(picked).reset_index(drop=True)


def load_images(paths: Sequence[Path], image_size: Sequence[int]) -> tuple[torch.Tensor, list[np.ndarray]]:
    """The model's input batch (the evaluation transform) and the images as shown (resized RGB arrays)."""

    transform = eval_transform(image_size)
    batch, shown = [], []
    for path in paths:
        try:
            with Image.open(path) as image:
                rgb = image.convert("RGB")
                batch.append(transform(rgb))
                shown.append(np.asarray(rgb.resize((image_size[1], image_size[0]))))
        except (OSError, ValueError) as exc:
            raise AtreidError(f"{path}: cannot read image ({exc}); give a JPEG or PNG file") from None
    return torch.stack(batch), shown


def plot_token_maps(shown: Sequence[np.ndarray], maps: torch.Tensor, labels: Sequence[str], title: str,
                    out: str | Path, method: str = "rollout") -> None:
    """Save the figure: ``maps`` is ``(images, ncls, grid_h, grid_w)``."""
    num_images, ncls = maps.shape[:2]
    names = list(SCENARIOS) if ncls == len(SCENARIOS) else ["CLS (all heads)"] if ncls == 1 else \
        [f"CLS {i}" for i in range(ncls)]
    height, width = shown[0].shape[:2]
    upsampled = F.interpolate(maps.float(), size=(height, width), mode="bilinear", align_corners=False)
    fig, axes = plt.subplots(num_images, ncls + 1, figsize=(1.3 * (ncls + 1), 2.5 * num_images + 0.6),
                             squeeze=False)
    for row in range(num_images):
        axes[row, 0].imshow(shown[row])
        axes[row, 0].set_title(labels[row], fontsize=7)
        for token in range(ncls):
            heat = upsampled[row, token].numpy()
            share = float(maps[row, token].sum())
            ax = axes[row, token + 1]
            ax.imshow(shown[row])
            # Stretched between the map's own minimum and maximum: a nearly uniform map (an
            # untrained token) still shows where its little structure is; "image share" and
            # the title say how much there is to see.
            spread = heat.max() - heat.min()
            ax.imshow((heat - heat.min()) / spread if spread > 0 else heat * 0, cmap="jet", alpha=0.45, vmin=0,
                      vmax=1)
            ax.set_title(f"{names[token]}\nimage share {share:.2f}", fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    what = "attention rollout" if method == "rollout" else "last block's CLS attention"
    fig.suptitle(f"{title}\n{what} of each CLS token (each map stretched from its minimum, blue, to its "
                 "maximum, red)", fontsize=8)
    fig.tight_layout()
    save_figure(fig, out)
