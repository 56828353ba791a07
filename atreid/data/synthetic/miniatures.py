"""Synthetic miniatures of the cross-dataset benchmarks, each in its exact release layout.

:func:`generate_miniature` writes a few hundred images of one benchmark the way its
authors distribute it - folder names, file-name schemes, split/list/info files, junk and
distractor conventions - so the real benchmark module (``atreid.data.benchmarks``) parses
it unchanged and every protocol has valid queries::

    out_dir/<release top folder>/...     e.g. Market-1501-v15.09.15/bounding_box_test/0000_c1s1_000011_01.jpg
    out_dir/synthetic_counts.json        the generator's own statistics (what it wrote)

Persons are drawn with the renderer the synthetic AT-USTC uses
(:mod:`atreid.data.synthetic.render`: :class:`Identity`, :class:`Outfit`,
:class:`Camera`, :func:`render_image`, infrared for IR cameras), so a model trained on
the synthetic AT-USTC meets new identities of the same kind, learnable in the same way.
Clothes follow each benchmark's story: one outfit per person where the benchmark has no
clothes change (Market-1501, CUHK03, MSMT17, SYSU-MM01, RegDB, LLCM), PRCC's camera C
in other clothes, LTCC's clothes-changing persons, DeepChange's outfit per capture
date (its ``clothes`` / ``clothes_with_year`` columns are the benchmark's timestamp
proxies), VC-Clothes' outfits per camera.

Deterministic per seed: every identity, outfit, camera and plan decision comes from a
generator seeded by ``(seed, benchmark code, kind, keys...)`` (the benchmark code is a
CRC32 of its name, so benchmarks never share persons with each other or with AT-USTC),
and image ``i`` of the plan from ``(seed, benchmark code, FRAME, i)``.

``synthetic_counts.json`` = ``{"benchmark", "seed", "statistics"}`` where
``statistics`` is computed by the benchmark's own statistics function from the index rows
the generator *intended* (not from parsing), so the verification step compares what was
written with what was parsed, exactly.
"""

from __future__ import annotations

import functools
import io
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from typing import Protocol as Interface

import numpy as np
import pandas as pd

from atreid.data.synthetic.render import Camera, Identity, Outfit, render_image
from atreid.errors import AtreidError
from atreid.io import atomic_output_dir, atomic_write_json

COUNTS_FILE = "synthetic_counts.json"


class MiniatureOf(Interface):
    """What the writer needs of a benchmark (``atreid.data.benchmarks.base.Benchmark``;
    not imported: the benchmark modules import this one for their plans)."""

    name: str
    miniature: Callable[["Context"], "Plan"] | None
    extra_columns: tuple[str, ...]

    def all_statistics(self, index: pd.DataFrame) -> dict[str, dict[str, int]]: ...
# Seed-stream tags, so draws of different kinds never share a generator.
_IDENTITY, _OUTFIT, _CAMERA, PLAN_DRAWS, _FRAME = 11, 12, 13, 14, 15


@dataclass
class Shot:
    """One image file of a miniature.

    Args:
        path: path relative to the release root (first file written).
        who: rendering identity key (a person; distractors/junk get their own keys).
        outfit: outfit key within ``who``.
        camera: rendering camera key (one :class:`Camera` model per key).
        infrared: render the infrared view.
        row: the index row the benchmark must produce for ``path`` (None: the benchmark
            leaves the file out by convention, e.g. Market-1501's junk id -1).
        copies: further paths that receive the same bytes (LLCM's test aliases).
    """

    path: str
    who: int
    outfit: int
    camera: int
    infrared: bool
    row: dict[str, Any] | None
    copies: tuple[str, ...] = ()


@dataclass
class Plan:
    """Everything a miniature writes: images and text files (split lists, id files)."""

    top: str
    shots: list[Shot] = field(default_factory=list)
    texts: dict[str, str] = field(default_factory=dict)


class Context:
    """Seeded draws of one miniature (identities, outfits, cameras, plan decisions)."""

    def __init__(self, name: str, seed: int):
        self.name = name
        self.seed = int(seed)
        self.code = zlib.crc32(name.encode())

    def rng(self, kind: int, *keys: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.code, kind, *(int(k) for k in keys)])

    @functools.lru_cache(maxsize=None)
    def identity(self, who: int) -> Identity:
        return Identity.sample(self.rng(_IDENTITY, who))

    @functools.lru_cache(maxsize=None)
    def outfit(self, who: int, key: int) -> Outfit:
        return Outfit.sample(self.rng(_OUTFIT, who, key))

    @functools.lru_cache(maxsize=None)
    def camera(self, key: int) -> Camera:
        return Camera.sample(self.rng(_CAMERA, key), key)


def shot_row(path: str, person: int, camera: int, split: str, *, modality: str = "rgb", clothes: int = -1,
         **extra: Any) -> dict[str, Any]:
    return {"path": path, "person": person, "camera": camera, "modality": modality, "clothes": clothes,
            "split": split, **extra}


def pick(rng: np.random.Generator, items, k: int) -> list:
    """``k`` distinct items in a random order (plain ints)."""
    return [int(x) for x in rng.choice(list(items), size=k, replace=False)]


def start_plan(ctx: Context, top: str, max_id: int, count: int) -> tuple[Plan, np.random.Generator, list[int]]:
    """The plan of release folder ``top``, its generator and ``count`` sorted person ids
    drawn from the release's id range 1..``max_id`` (the first draw of every plan)."""
    rng = ctx.rng(PLAN_DRAWS)
    return Plan(top), rng, sorted(pick(rng, range(1, max_id + 1), count))


def text_files(lists: dict[str, list[str]], name: str = "{}") -> dict[str, str]:
    """List files, one entry a line: file name (``name`` formatted with the key) -> text."""
    return {name.format(key): "\n".join(lines) + "\n" for key, lines in lists.items()}


# ---- writing ------------------------------------------------------------------------------------
def _encode(image: np.ndarray, suffix: str, quality: int) -> bytes:
    """Image bytes in the release's format (JPEG, PNG or BMP by file suffix)."""
    # start-up: PIL loaded only when this runs
    from PIL import Image

    buffer = io.BytesIO()
    picture = Image.fromarray(image)
    if suffix in (".jpg", ".jpeg"):
        picture.save(buffer, format="JPEG", quality=quality)
    elif suffix == ".png":
        picture.save(buffer, format="PNG")
    elif suffix == ".bmp":
        picture.save(buffer, format="BMP")
    else:  # pragma: no cover - plans only use the three
        raise ValueError(f"unsupported image suffix {suffix}")
    return buffer.getvalue()


def plan_miniature(benchmark: MiniatureOf, seed: int) -> tuple[Plan, pd.DataFrame]:
    """The plan of ``benchmark``'s miniature and the index rows it must parse into."""
    if benchmark.miniature is None:
        raise AtreidError(f"no synthetic miniature for {benchmark.name!r}; "
                          f"set data.benchmarks.{benchmark.name}.source to your copy")
    plan = benchmark.miniature(Context(benchmark.name, seed))
    columns = ["path", "person", "camera", "modality", "clothes", "split", *benchmark.extra_columns]
    rows = pd.DataFrame([s.row for s in plan.shots if s.row is not None], columns=columns)
    return plan, rows.sort_values("path", kind="stable").reset_index(drop=True)


def generate_miniature(benchmark: MiniatureOf, out_dir: str | Path, *, seed: int = 0, image_height: int = 128,
                       image_width: int = 64, jpeg_quality: int = 90) -> dict[str, Any]:
    """Write the synthetic miniature of ``benchmark`` into ``out_dir``.

    Args:
        benchmark: the benchmark (``atreid.data.benchmarks.get_benchmark(name)``).
        out_dir: folder receiving the release's top folder and ``synthetic_counts.json``
            (built under a temporary name and moved into place when complete).
        seed: seed of every draw (same seed -> byte-identical files).
        image_height, image_width: image size in pixels.
        jpeg_quality: JPEG quality of ``.jpg`` releases (PNG/BMP releases are lossless).

    Returns:
        The counts written to ``synthetic_counts.json``.
    """
    if image_height < 32 or image_width < 16 or not 1 <= jpeg_quality <= 100:
        raise AtreidError("miniature settings: need image_height >= 32, image_width >= 16 and "
                          "jpeg_quality between 1 and 100 (data.synthetic)")
    name = benchmark.name
    plan, rows = plan_miniature(benchmark, seed)
    ctx = Context(name, seed)
    statistics = benchmark.all_statistics(rows)
    counts = {"benchmark": name, "seed": int(seed), "files": len(plan.shots), "statistics": statistics}
    with atomic_output_dir(out_dir) as tmp:
        root = tmp / plan.top
        for i, shot in enumerate(plan.shots):
            image = render_image(ctx.identity(shot.who), ctx.outfit(shot.who, shot.outfit), ctx.camera(shot.camera),
                                 infrared=shot.infrared, rng=ctx.rng(_FRAME, i), height=image_height,
                                 width=image_width)
            data = _encode(image, Path(shot.path).suffix.lower(), jpeg_quality)
            for rel in (shot.path, *shot.copies):
                target = root / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
        for rel, text in plan.texts.items():
            target = root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        atomic_write_json(tmp / COUNTS_FILE, counts)
    return counts
