"""Retrievals for your own query images (``atreid search``): an HTML page and a PNG.

Each query is ranked against the whole gallery (no removal rule: a copy of the query in
the gallery comes first at distance ~0) by ``1 - cosine`` of one head's post-BN
features, the distance the evaluation uses. The head is the scenario stated with
``--scenario``, or chosen per query from the query's and the gallery's modality:

* both RGB -> DT (daytime), both IR -> NT (night-time), mixed or unknown -> AD (all-day,
  cross-modality);
* clothes are never known for a search, so ``auto`` takes the short-term (same clothes,
  ST) head; state ``--scenario ..-LT`` when the clothes may have changed.

A modality comes from the benchmark labels when the image has them (a benchmark gallery,
a feature table of one, or a query found there), else it is guessed from the pixels:
an image whose colour channels (nearly) agree is taken as infrared. The page says which
head each query used and why.

``DIR/index.html`` is self-contained (images embedded as base64 JPEG thumbnails),
``DIR/search.png`` draws the same grid with matplotlib and ``DIR/search.json`` holds the
rankings.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from atreid.constants import SCENARIOS
from atreid.engine.device import resolve_device
from atreid.errors import AtreidError
from atreid.eval.extract import (LABEL_COLUMNS, ImageSet, benchmark_images, check_batch, check_images, empty_labels,
                                 image_features, load_model, model_image_size, read_feature_table,
                                 select_images)
from atreid.eval.metrics import cosine_distance
from atreid.io import atomic_write_json, atomic_write_text, file_sha256

log = logging.getLogger("atreid.search")

# Mean |R - G| + |G - B| (0-255 levels) below which an image is taken as infrared
# (grey: JPEG chroma noise of a grey image stays around 1; colour photos are far above).
GREY_SPREAD = 4.0
THUMB_HEIGHT = 128
TIMES = {"DT": "daytime (RGB) head", "NT": "night-time (IR) head", "AD": "all-day (cross-modality) head"}
TERMS = {"ST": "short-term (same clothes)", "LT": "long-term (clothes may change)"}


@dataclass
class Gallery:
    """Ranked images: display paths, labels, per-head features and where the modality came from."""

    paths: list[str]
    labels: pd.DataFrame
    features: dict[str, torch.Tensor]
    source: str
    modality_from: list[str] = field(default_factory=list)


@dataclass
class QueryResult:
    path: str
    modality: str
    modality_from: str
    head: str
    reason: str
    labels: dict[str, Any]
    ranks: list[dict[str, Any]]


# ---- modality ------------------------------------------------------------------------
def guess_modality(path: str | Path) -> str:
    """``ir`` for a grey image (single channel, or colour channels that agree), else ``rgb``."""
    # start-up: PIL loaded only when this runs
    from PIL import Image

    with Image.open(path) as image:
        image.draft("RGB", (64, 64))  # JPEG: decode at reduced size, enough for colour statistics
        if image.mode in ("1", "L", "LA", "I", "I;16", "F"):
            return "ir"
        pixels = np.asarray(image.convert("RGB"), dtype=np.int16)
    spread = np.abs(pixels[..., 0] - pixels[..., 1]).mean() + np.abs(pixels[..., 1] - pixels[..., 2]).mean()
    return "ir" if spread < GREY_SPREAD else "rgb"


def fill_modalities(paths: Sequence[str], labels: pd.DataFrame) -> tuple[list[str | None], list[str]]:
    """Each image's modality and its origin (``labels``, ``guessed from pixels``, or None when
    neither is possible: the file is not there)."""
    modalities, origins = [], []
    for path, known in zip(paths, labels["modality"].tolist()):
        if known is not None and not pd.isna(known):
            modalities.append(str(known))
            origins.append("labels")
        elif Path(path).is_file():
            modalities.append(guess_modality(path))
            origins.append("guessed from pixels")
        else:
            modalities.append(None)
            origins.append("unknown")
    return modalities, origins


def gallery_modality(modalities: Sequence[str | None], origins: Sequence[str]) -> tuple[str, str]:
    """(``rgb`` | ``ir`` | ``mixed`` | ``unknown``, how it is known) of a whole gallery."""
    if any(m is None for m in modalities):
        return "unknown", "some gallery files are not there to look at"
    kinds = sorted(set(modalities))
    how = " and ".join(sorted(set(origins)))
    if len(kinds) == 1:
        return kinds[0], how
    counts = ", ".join(f"{sum(m == k for m in modalities)} {k}" for k in kinds)
    return "mixed", f"{counts}; {how}"


def choose_head(scenario: str, query: tuple[str, str], gallery: tuple[str, str]) -> tuple[str, str]:
    """(head, one line saying why) for one query.

    Args:
        scenario: a head name or ``auto``.
        query: (modality, how it is known) of the query.
        gallery: (modality, how it is known) of the gallery.
    """
    if scenario != "auto":
        time, term = scenario.split("-")
        return scenario, f"stated with --scenario {scenario}: {TIMES[time]}, {TERMS[term]}"
    (q, q_how), (g, g_how) = query, gallery
    if q == g == "rgb":
        time, why = "DT", "query and gallery both RGB"
    elif q == g == "ir":
        time, why = "NT", "query and gallery both IR"
    elif "unknown" in (q, g):
        time, why = "AD", "a modality is unknown, so the head trained on both"
    else:
        time, why = "AD", "cross-modality (query and gallery modalities differ)"
    head = f"{time}-ST"
    reason = (f"auto: query {q} ({q_how}), gallery {g} ({g_how}) -> {why}: {TIMES[time]}; clothes unknown -> "
              f"short-term (ST) head; use --scenario {time}-LT if the clothes may have changed")
    return head, reason


# ---- gallery and queries -------------------------------------------------------------
def extracted_gallery(model: torch.nn.Module, images: ImageSet, *, image_size: Sequence[int], batch_size: int,
                      flip: bool, device: torch.device) -> Gallery:
    check_images(images.files(), image_size)
    features = image_features(model, images, image_size=image_size, batch_size=batch_size, flip=flip, device=device)
    return Gallery(images.display_paths(), images.labels.reset_index(drop=True),
                   {head: features[:, i] for i, head in enumerate(SCENARIOS)}, images.source)


def table_gallery(path: str | Path, model_path: Path) -> tuple[Gallery, bool]:
    """A feature table of ``atreid extract`` -> (gallery, its flip setting)."""
    frame, metadata, features = read_feature_table(path)
    if metadata.get("model_sha256") != file_sha256(model_path):
        raise AtreidError(f"{path}: features of another model file ({metadata.get('model')}), not of "
                          f"{model_path}; re-extract the gallery: atreid extract --model {model_path} ... --out {path}")
    if not len(frame):
        raise AtreidError(f"{path}: the feature table has no rows; re-extract it from a gallery with images")
    labels = pd.DataFrame({c: frame[c] if c in frame else [None] * len(frame) for c in LABEL_COLUMNS}, dtype=object)
    return (Gallery(frame["path"].tolist(), labels, {h: torch.from_numpy(f) for h, f in features.items()},
                    f"feature table {path} ({metadata.get('source')})"), bool(metadata.get("flip", False)))


def query_labels(queries: Sequence[str], known: Sequence[tuple[Sequence[str], pd.DataFrame]]) -> pd.DataFrame:
    """A query's labels: those of the same file in ``known`` ((paths, labels) pairs: the
    gallery, the whole benchmark), else unknown."""
    by_file: dict[str, list[Any]] = {}
    for paths, labels in known:
        for path, row in zip(paths, labels[list(LABEL_COLUMNS)].itertuples(index=False)):
            by_file.setdefault(os.path.abspath(path), list(row))
    labels = empty_labels(len(queries))
    for i, query in enumerate(queries):
        row = by_file.get(os.path.abspath(query))
        if row is not None:
            labels.iloc[i] = row
    return labels


def rank(query_features: torch.Tensor, gallery_features: torch.Tensor, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``top_k`` gallery rows and distances for one query (stable: ties keep gallery order)."""
    distances = cosine_distance(query_features[None].float(), gallery_features.float())[0].numpy()
    order = np.argsort(distances, kind="stable")[:top_k]
    return order, distances[order]


def _label_text(labels: dict[str, Any]) -> str:
    parts = []
    for column, prefix in (("person", "p"), ("camera", "c"), ("modality", ""), ("clothes", "cl"), ("split", "")):
        value = labels.get(column)
        if value is not None and not pd.isna(value):
            parts.append(f"{prefix}{value}")
    return " ".join(parts)


def _plain(value: Any) -> Any:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    return value.item() if hasattr(value, "item") else value


# ---- outputs -------------------------------------------------------------------------
def thumbnail_uri(path: str | Path, height: int = THUMB_HEIGHT) -> str:
    """A ``data:image/jpeg;base64,...`` thumbnail of ``path`` (``height`` pixels high)."""
    # start-up: PIL loaded only when this runs
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")
        width = max(1, round(image.width * height / image.height))
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


_STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
section.query { border-top: 1px solid #ccc; padding: 0.6em 0; }
p.head { background: #f3f3f3; padding: 0.3em 0.6em; }
.row { display: flex; align-items: flex-start; gap: 0.8em; }
ol.results { display: flex; flex-wrap: wrap; gap: 0.5em; list-style: none; margin: 0; padding: 0; }
figure { margin: 0; text-align: center; font-size: 11px; max-width: 9em; word-break: break-all; }
figure img { border: 3px solid #bbb; display: block; margin: 0 auto; }
figure.query-image img { border-color: #222; }
li.match img { border-color: limegreen; } li.nonmatch img { border-color: red; }
.distance { font-weight: bold; }
"""


# Once loaded, the page records on <body data-images-shown="shown/total"> how many of its
# images the browser decoded (what the headless-browser test reads).
_SHOWN_SCRIPT = """
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var shown = images.filter(function (image) { return image.complete && image.naturalWidth > 0; }).length;
  document.body.setAttribute("data-images-shown", shown + "/" + images.length);
});
"""


def _figure(image: str, caption: str, alt: str, cls: str = "") -> str:
    cls_attr = f' class="{cls}"' if cls else ""
    return (f'<figure{cls_attr}><img alt="{html.escape(alt)}" src="{image}">'
            f"<figcaption>{caption}</figcaption></figure>")


def _path_span(path: str) -> str:
    """The file's last two path parts (the whole path on hover)."""
    short = "/".join(Path(path).parts[-2:])
    return f'<span class="path" title="{html.escape(path)}">{html.escape(short)}</span>'


def search_html(results: Sequence[QueryResult], summary: str) -> str:
    """The self-contained page: per query its head line, the query and its ranked results."""
    esc = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             "<title>atreid search</title>", f"<style>{_STYLE}</style></head><body>",
             "<h1>atreid search</h1>", f'<p class="summary">{summary}</p>']
    for number, result in enumerate(results, start=1):
        query_caption = (f'<span class="role">query</span><br>{_path_span(result.path)}'
                         f'<br>{esc(_label_text(result.labels))}')
        parts += [f'<section class="query" id="query-{number}" data-head="{esc(result.head)}">',
                  f"<h2>Query {number}: <code>{esc(result.path)}</code></h2>",
                  f'<p class="head">Head <b class="head-name">{esc(result.head)}</b>: {esc(result.reason)}</p>',
                  '<div class="row">',
                  _figure(thumbnail_uri(result.path), query_caption, f"query {result.path}", "query-image"),
                  '<ol class="results">']
        for entry in result.ranks:
            match = entry.get("match")
            cls = "result" + ("" if match is None else (" match" if match else " nonmatch"))
            caption = (f'<span class="rank">#{entry["rank"]}</span> '
                       f'<span class="distance">d={entry["distance"]:.4f}</span><br>'
                       f'{_path_span(entry["path"])}<br>{esc(_label_text(entry["labels"]))}')
            parts.append(f'<li class="{cls}" data-rank="{entry["rank"]}" data-distance="{entry["distance"]:.6f}">'
                         + _figure(thumbnail_uri(entry["path"]), caption, f"rank {entry['rank']}: {entry['path']}")
                         + "</li>")
        parts += ["</ol>", "</div>", "</section>"]
    parts += [f"<script>{_SHOWN_SCRIPT}</script>", "</body></html>"]
    return "\n".join(parts) + "\n"


def plot_search(results: Sequence[QueryResult], out: str | Path, title: str) -> None:
    """One row per query: the query, then its ranked results with distances (as the gallery figures)."""
    # start-up: PIL, matplotlib loaded only when this runs
    from atreid.report.gallery import draw_ranked_rows

    rows = []
    for result in results:
        cells = [(Path(result.path), f"query\n{result.head}", "black", 2)]
        for entry in result.ranks:
            colour = {None: "grey", True: "limegreen", False: "red"}[entry.get("match")]
            cells.append((Path(entry["path"]), f"#{entry['rank']} d={entry['distance']:.3f}\n"
                                               f"{_label_text(entry['labels'])}", colour, 4))
        rows.append(cells)
    draw_ranked_rows(rows, title, out, empty_columns=1 + 1, title_size=9)


# ---- the command ---------------------------------------------------------------------
def benchmark_queries(name: str, count: int, data_dir: str | Path = "data") -> list[str]:
    """``count`` query images of a prepared benchmark's query split, one per person: the
    first persons in label order, each with its first image (sorted paths), alternating
    RGB and IR where the person has both, so the page shows both kinds. Deterministic."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise AtreidError(f"--queries {count!r}: give a number of query images >= 1")
    images = benchmark_images(name, "query", data_dir)
    rows = images.labels.assign(path=images.paths).sort_values("path", kind="stable")
    picked: list[str] = []
    for i, (_, person_rows) in enumerate(rows.groupby("person", sort=True)):
        if len(picked) == count:
            break
        wanted = "rgb" if i % 2 == 0 else "ir"
        modality = person_rows["modality"].astype(str)
        choice = person_rows[modality == wanted] if (modality == wanted).any() else person_rows
        picked.append(str(Path(images.root) / choice["path"].iloc[0]))
    return picked


def search(model_path: str | Path, queries: Sequence[str], out_dir: str | Path, *,
           gallery_folder: str | Path | None = None, gallery_features: str | Path | None = None,
           benchmark: str | None = None, split: str | None = None, data_dir: str | Path = "data",
           scenario: str = "auto", top_k: int = 10, flip: bool = False, batch_size: int = 128,
           device: str = "auto") -> dict[str, Any]:
    """``atreid search``: rank a gallery for each query; write ``out_dir/index.html``,
    ``search.png`` and ``search.json``.

    The gallery is one of ``gallery_folder``, ``gallery_features`` (a table of ``atreid
    extract`` made with the same model; its flip setting is used for the queries) and
    ``benchmark`` + ``split``. Returns the JSON written to ``search.json``.
    """
    if scenario != "auto" and scenario not in SCENARIOS:
        raise AtreidError(f"--scenario {scenario!r} unknown; valid: {', '.join(SCENARIOS)} or auto")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise AtreidError(f"--top-k {top_k!r} must be a positive integer")
    check_batch(batch_size)
    if not queries:
        raise AtreidError("give at least one --query image")
    model_path, out_dir = Path(model_path), Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise AtreidError(f"{out_dir}: is a file; --out needs a folder (created if missing)")
    sources = [x is not None for x in (gallery_folder, gallery_features, benchmark)]
    if sum(sources) != 1:
        raise AtreidError("give exactly one gallery: --gallery-folder DIR, --gallery-features F.parquet or "
                          "--benchmark NAME --split gallery")
    gallery_images = None
    if gallery_features is None:
        gallery_images = select_images(folder=gallery_folder, benchmark=benchmark, split=split, data_dir=data_dir)
    torch_device = resolve_device(device)
    model, payload = load_model(model_path, torch_device)
    image_size = model_image_size(payload)
    query_set = ImageSet(Path("."), [str(q) for q in queries], empty_labels(len(queries)), "queries")
    check_images(query_set.files(), image_size)
    if gallery_images is not None:
        gallery = extracted_gallery(model, gallery_images, image_size=image_size, batch_size=batch_size, flip=flip,
                                    device=torch_device)
    else:
        gallery, table_flip = table_gallery(gallery_features, model_path)
        if flip != table_flip:
            log.info("queries %s flip averaging, as the gallery's feature table was extracted",
                     "with" if table_flip else "without")
        flip = table_flip
        if scenario != "auto" and scenario not in gallery.features:
            raise AtreidError(f"{gallery_features}: has no {scenario} features (heads {', '.join(gallery.features)}); "
                              f"re-extract it with --heads all or a --scenario among those")
    known = [(gallery.paths, gallery.labels)]
    if benchmark is not None:  # a query taken from the benchmark's other splits has labels too
        whole = benchmark_images(benchmark, None, data_dir)
        known.append((whole.display_paths(), whole.labels))
    query_set.labels = query_labels(query_set.paths, known)
    query_features = image_features(model, query_set, image_size=image_size, batch_size=batch_size, flip=flip,
                                    device=torch_device)
    g_modalities, g_origins = fill_modalities(gallery.paths, gallery.labels)
    g_kind = gallery_modality(g_modalities, g_origins)
    q_modalities, q_origins = fill_modalities(query_set.paths, query_set.labels)
    k = min(top_k, len(gallery.paths))
    results = []
    for i, query in enumerate(query_set.paths):
        head, reason = choose_head(scenario, (q_modalities[i] or "unknown", q_origins[i]), g_kind)
        if head not in gallery.features:
            available = ", ".join(gallery.features)
            raise AtreidError(f"{gallery_features}: has no {head} features (heads {available}), which {query} needs "
                              f"({reason}); re-extract it with --heads all, or pass --scenario with one of {available}")
        order, distances = rank(query_features[i, SCENARIOS.index(head)], gallery.features[head], k)
        q_labels = {c: _plain(v) for c, v in query_set.labels.iloc[i].items()}
        ranks = []
        for position, (row, distance) in enumerate(zip(order.tolist(), distances.tolist()), start=1):
            g_labels = {c: _plain(v) for c, v in gallery.labels.iloc[row].items()}
            match = (None if q_labels.get("person") is None or g_labels.get("person") is None
                     else bool(q_labels["person"] == g_labels["person"]))
            ranks.append({"rank": position, "path": gallery.paths[row], "distance": float(distance),
                          "labels": g_labels, "match": match})
        results.append(QueryResult(query, q_modalities[i], q_origins[i], head, reason, q_labels, ranks))
    settings = payload.get("settings", {})
    summary = (f"Model <code>{html.escape(str(model_path))}</code> ({html.escape(str(settings.get('name')))}, "
               f"{html.escape(str(payload.get('arch')))}); gallery: {html.escape(gallery.source)}, "
               f"{len(gallery.paths)} images, modality {html.escape(g_kind[0])} ({html.escape(g_kind[1])}); "
               f"top {k} by distance = 1 - cosine of the head's features, as the evaluation ranks"
               f"{' (flip-averaged)' if flip else ''}. Green/red frames: same/other person, where labels are known.")
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {"model": str(model_path), "gallery": gallery.source, "gallery_images": len(gallery.paths),
              "gallery_modality": list(g_kind), "scenario": scenario, "top_k": k, "flip": bool(flip),
              "queries": [{"path": r.path, "modality": r.modality, "modality_from": r.modality_from,
                           "head": r.head, "reason": r.reason, "labels": r.labels, "results": r.ranks}
                          for r in results]}
    atomic_write_text(out_dir / "index.html", search_html(results, summary))
    plot_search(results, out_dir / "search.png", f"atreid search: {model_path} on {gallery.source}")
    atomic_write_json(out_dir / "search.json", report)
    log.info("%d queries against %d gallery images -> %s", len(results), len(gallery.paths), out_dir / "index.html")
    return report
