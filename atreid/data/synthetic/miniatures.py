"""Synthetic miniatures of the cross-dataset benchmarks, each in its exact release layout.

:func:`generate_miniature` writes a few hundred images of one benchmark the way its
authors distribute it - folder names, file-name schemes, split/list/info files, junk and
distractor conventions - so the real adapter (``atreid.data.adapters``) parses it
unchanged and every protocol has valid queries::

    out_dir/<release top folder>/...     e.g. Market-1501-v15.09.15/bounding_box_test/0000_c1s1_000011_01.jpg
    out_dir/synthetic_counts.json        the generator's own statistics (what it wrote)

Persons are drawn with the renderer the synthetic AT-USTC uses
(:mod:`atreid.data.synthetic.render`: :class:`Identity`, :class:`Outfit`,
:class:`Camera`, :func:`render_image`, infrared for IR cameras), so a model trained on
the synthetic AT-USTC meets new identities of the same kind, learnable in the same way.
Clothes follow each benchmark's story: one outfit per person where the benchmark has no
clothes change (Market-1501, CUHK03, MSMT17, SYSU-MM01, RegDB, LLCM), PRCC's camera C
in other clothes, LTCC's clothes-changing persons, DeepChange's outfit per capture
date (its ``clothes`` / ``clothes_with_year`` columns are the adapter's timestamp
proxies), VC-Clothes' outfits per camera.

Deterministic per seed: every identity, outfit, camera and plan decision comes from a
generator seeded by ``(seed, benchmark code, kind, keys...)`` (the benchmark code is a
CRC32 of its name, so benchmarks never share persons with each other or with AT-USTC),
and image ``i`` of the plan from ``(seed, benchmark code, FRAME, i)``.

``synthetic_counts.json`` = ``{"benchmark", "seed", "statistics"}`` where
``statistics`` is computed by the adapter's own statistics function from the index rows
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

import numpy as np
import pandas as pd

from atreid.data.synthetic.render import Camera, Identity, Outfit, render_image
from atreid.errors import AtreidError
from atreid.io import atomic_output_dir, atomic_write_json

COUNTS_FILE = "synthetic_counts.json"
# Seed-stream tags, so draws of different kinds never share a generator.
_IDENTITY, _OUTFIT, _CAMERA, _PLAN, _FRAME = 11, 12, 13, 14, 15


@dataclass
class Shot:
    """One image file of a miniature.

    Args:
        path: path relative to the release root (first file written).
        who: rendering identity key (a person; distractors/junk get their own keys).
        outfit: outfit key within ``who``.
        camera: rendering camera key (one :class:`Camera` model per key).
        infrared: render the infrared view.
        row: the index row the adapter must produce for ``path`` (None: the adapter
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


def _row(path: str, person: int, camera: int, split: str, *, modality: str = "rgb", clothes: int = -1,
         **extra: Any) -> dict[str, Any]:
    return {"path": path, "person": person, "camera": camera, "modality": modality, "clothes": clothes,
            "split": split, **extra}


def _pick(rng: np.random.Generator, items, k: int) -> list:
    """``k`` distinct items in a random order (plain ints)."""
    return [int(x) for x in rng.choice(list(items), size=k, replace=False)]


def _start(ctx: Context, top: str, max_id: int, count: int) -> tuple[Plan, np.random.Generator, list[int]]:
    """The plan of release folder ``top``, its generator and ``count`` sorted person ids
    drawn from the release's id range 1..``max_id`` (the first draw of every plan)."""
    rng = ctx.rng(_PLAN)
    return Plan(top), rng, sorted(_pick(rng, range(1, max_id + 1), count))


def _text_files(lists: dict[str, list[str]], name: str = "{}") -> dict[str, str]:
    """List files, one entry a line: file name (``name`` formatted with the key) -> text."""
    return {name.format(key): "\n".join(lines) + "\n" for key, lines in lists.items()}


# ---- Market-1501 / CUHK03-NP / MSMT17 ---------------------------------------------------------
def plan_market1501(ctx: Context) -> Plan:
    plan, rng, ids = _start(ctx, "Market-1501-v15.09.15", 1501, 4 + 16)
    train, test = ids[:4], ids[4:]
    counter = iter(range(1, 100_000))

    def name(pid: int, cam: int) -> str:
        return f"{pid:04d}_c{cam}s{int(rng.integers(1, 7))}_{next(counter) * 25:06d}_{int(rng.integers(1, 4)):02d}.jpg"

    for pid in train:
        for cam in _pick(rng, range(1, 7), 2):
            for _ in range(2):
                rel = f"bounding_box_train/{name(pid, cam)}"
                plan.shots.append(Shot(rel, pid, 1, cam, False, _row(rel, pid, cam, "train")))
    for pid in test:
        cams = _pick(rng, range(1, 7), 3)
        for cam in cams[:2]:  # one query per camera, as the release picks them
            rel = f"query/{name(pid, cam)}"
            plan.shots.append(Shot(rel, pid, 1, cam, False, _row(rel, pid, cam, "query")))
        for cam in cams:
            for _ in range(3):
                rel = f"bounding_box_test/{name(pid, cam)}"
                plan.shots.append(Shot(rel, pid, 1, cam, False, _row(rel, pid, cam, "gallery")))
    # Distractors (id 0000: kept as negatives) and junk boxes (id -1: dropped), each a
    # person of its own.
    for k in range(8):
        cam = int(rng.integers(1, 7))
        rel = f"bounding_box_test/{name(0, cam)}"
        plan.shots.append(Shot(rel, 10_000 + k, 1, cam, False, _row(rel, 0, cam, "gallery")))
    for k in range(6):
        cam = int(rng.integers(1, 7))
        rel = f"bounding_box_test/-1_c{cam}s1_{next(counter) * 25:06d}_01.jpg"
        plan.shots.append(Shot(rel, 20_000 + k, 1, cam, False, None))
    return plan


def plan_cuhk03(ctx: Context, indexed: str) -> Plan:
    """The whole cuhk03-np release (both box types); the index rows are those of ``indexed``."""
    plan, _, ids = _start(ctx, "cuhk03-np", 1467, 4 + 14)
    train = ids[:4]
    for kind in ("detected", "labeled"):
        for pid in ids:
            split_images = (("bounding_box_train", 2),) if pid in train else (("query", 1), ("bounding_box_test", 2))
            number = iter(range(1, 100))
            for cam in (1, 2):
                for folder, count in split_images:
                    split = {"bounding_box_train": "train", "query": "query", "bounding_box_test": "gallery"}[folder]
                    for _ in range(count):
                        rel = f"{kind}/{folder}/{pid:04d}_c{cam}_{next(number)}.png"
                        row = _row(rel.split("/", 1)[1], pid, cam, split) if kind == indexed else None
                        # Camera keys differ per box type: detected and labeled crops differ.
                        plan.shots.append(Shot(rel, pid, 1, cam + (10 if kind == "labeled" else 0), False, row))
    return plan


def plan_msmt17(ctx: Context) -> Plan:
    plan = Plan("MSMT17_V1")
    rng = ctx.rng(_PLAN)
    lists: dict[str, list[str]] = {n: [] for n in ("list_train.txt", "list_val.txt", "list_query.txt",
                                                    "list_gallery.txt")}
    times = ("morning", "noon", "afternoon")

    def name(pid: int, number: int, cam: int) -> str:
        return (f"{pid:04d}_{number:03d}_{cam:02d}_{int(rng.integers(101, 1231)):04d}{times[int(rng.integers(0, 3))]}"
                f"_{int(rng.integers(0, 10000)):04d}_{int(rng.integers(0, 3))}.jpg")

    for label in range(4):  # training persons 0-3 (train list 0-2, validation list 3)
        who = 100 + label
        list_name = "list_train.txt" if label < 3 else "list_val.txt"
        number = iter(range(1000))
        for cam in _pick(rng, range(1, 16), 2):
            for _ in range(2):
                rel = f"{label:04d}/{name(label, next(number), cam)}"
                lists[list_name].append(f"{rel} {label}")
                plan.shots.append(Shot(f"train/{rel}", who, 1, cam, False, _row(f"train/{rel}", label, cam, "train")))
    for label in range(14):  # test persons: their labels restart at 0 (stored + 10000)
        who = 200 + label
        number = iter(range(1000))
        cams = _pick(rng, range(1, 16), 3)
        for list_name, split, chosen, count in (("list_query.txt", "query", cams[:2], 1),
                                                ("list_gallery.txt", "gallery", cams, 3)):
            for cam in chosen:
                for _ in range(count):
                    rel = f"{label:04d}/{name(label, next(number), cam)}"
                    lists[list_name].append(f"{rel} {label}")
                    plan.shots.append(Shot(f"test/{rel}", who, 1, cam, False,
                                           _row(f"test/{rel}", label + 10_000, cam, split)))
    plan.texts = _text_files(lists)
    return plan


# ---- SYSU-MM01 / RegDB / LLCM ----------------------------------------------------------------------
def plan_sysu_mm01(ctx: Context) -> Plan:
    plan, rng, ids = _start(ctx, "SYSU-MM01", 533, 7 + 14)
    order = rng.permutation(ids).tolist()
    parts = {"train": sorted(order[:5]), "val": sorted(order[5:7]), "test": sorted(order[7:])}
    for split, persons in parts.items():
        for pid in persons:
            if split == "test":
                # At least one indoor camera (1 or 2) and one camera other than 2, so every
                # protocol (indoor, camera-3 rule) keeps a positive for every query.
                rgb = sorted({_pick(rng, (1, 2), 1)[0], *_pick(rng, (1, 4, 5), 1), *_pick(rng, (1, 2, 4, 5), 1)})
                ir = sorted(_pick(rng, (3, 6), int(rng.integers(1, 3))))
                per = {**{c: 4 for c in rgb}, **{c: 3 for c in ir}}
            else:
                per = {c: 3 for c in (*_pick(rng, (1, 2, 4, 5), 2), *_pick(rng, (3, 6), 1))}
            for cam, count in sorted(per.items()):
                modality = "ir" if cam in (3, 6) else "rgb"
                row_split = split if split != "test" else ("query" if modality == "ir" else "gallery")
                for n in range(1, count + 1):
                    rel = f"cam{cam}/{pid:04d}/{n:04d}.jpg"
                    plan.shots.append(Shot(rel, pid, 1, cam, modality == "ir",
                                           _row(rel, pid, cam, row_split, modality=modality)))
    plan.texts = {f"exp/{split}_id.txt": ",".join(str(p) for p in persons) for split, persons in parts.items()}
    return plan


def plan_regdb(ctx: Context) -> Plan:
    plan = Plan("RegDB")
    rng = ctx.rng(_PLAN)
    persons = list(range(1, 25))
    per_person = 4
    names: dict[tuple[int, str], list[str]] = {}
    for pid in persons:
        gender = ("male", "female")[int(rng.integers(0, 2))]
        view = ("front", "back")[int(rng.integers(0, 2))]
        frames = sorted(_pick(rng, range(0, 99_999), per_person))
        for folder, vt in (("Visible", "v"), ("Thermal", "t")):
            names[(pid, folder)] = [f"{folder}/{pid}/{gender}_{view}_{vt}_{f:05d}_{pid}.bmp" for f in frames]
    train_trials: dict[str, list[int]] = {}
    test_trials: dict[str, list[int]] = {}
    for k in range(1, 11):
        test = sorted(_pick(ctx.rng(_PLAN, k), persons, len(persons) // 2))
        for part, chosen in (("train", [p for p in persons if p not in test]), ("test", test)):
            for folder, mod in (("Visible", "visible"), ("Thermal", "thermal")):
                lines = []
                for pid in chosen:
                    for rel in names[(pid, folder)]:
                        lines.append(f"{rel} {pid - 1}")
                        (test_trials if part == "test" else train_trials).setdefault(rel, []).append(k)
                plan.texts[f"idx/{part}_{mod}_{k}.txt"] = "\n".join(lines) + "\n"
    for pid in persons:
        for folder, camera, modality in (("Visible", 1, "rgb"), ("Thermal", 2, "ir")):
            for rel in names[(pid, folder)]:
                tests = test_trials.get(rel, [])
                row = _row(rel, pid, camera, "test" if tests else "train", modality=modality,
                           train_trials=";".join(map(str, sorted(train_trials.get(rel, [])))),
                           test_trials=";".join(map(str, sorted(tests))))
                # One co-located camera pair: the same view, rendered visible or thermal.
                plan.shots.append(Shot(rel, pid, 1, 1, modality == "ir", row))
    return plan


def plan_llcm(ctx: Context) -> Plan:
    plan, rng, ids = _start(ctx, "LLCM", 1064, 4 + 14)
    train, test = ids[:4], ids[4:]
    lists: dict[str, list[str]] = {n: [] for n in ("train_vis", "train_nir", "test_vis", "test_nir")}
    ir_cams = (1, 2, 4, 5, 6, 7, 8, 9)  # LLCM has no infrared view at camera 3
    for pid in ids:
        is_test = pid in test
        cams = {"vis": _pick(rng, range(1, 10), 2 if is_test else 1),
                "nir": _pick(rng, ir_cams, 2 if is_test else 1)}
        for mod, modality in (("vis", "rgb"), ("nir", "ir")):
            for cam in cams[mod]:
                for _ in range(3):
                    file = (f"{pid:04d}_c{cam:02d}_s{int(rng.integers(100_000, 240_000)):06d}"
                            f"_f{int(rng.integers(1, 10_000))}_{mod}.jpg")
                    rel = f"{mod}/{pid:04d}/{file}"
                    camera = cam + (9 if modality == "ir" else 0)
                    if is_test:
                        alias = f"test_{mod}/cam{cam}/{pid:04d}/{file}"
                        lists[f"test_{mod}"].append(f"{rel} {pid}")
                        row = _row(alias, pid, camera, "test", modality=modality)
                        plan.shots.append(Shot(alias, pid, 1, cam, modality == "ir", row, copies=(rel,)))
                    else:
                        lists[f"train_{mod}"].append(f"{rel} {train.index(pid)}")
                        row = _row(rel, pid, camera, "train", modality=modality)
                        plan.shots.append(Shot(rel, pid, 1, cam, modality == "ir", row))
    plan.texts = _text_files(lists, "idx/{}.txt")
    plan.texts["idx/test_id.txt"] = ",".join(str(p) for p in test)
    return plan


# ---- PRCC / LTCC / DeepChange / VC-Clothes -------------------------------------------------------------
def plan_prcc(ctx: Context) -> Plan:
    plan, rng, ids = _start(ctx, "prcc", 221, 4 + 16)
    parts = {"train": ids[:3], "val": ids[3:4], "test": ids[4:]}
    cameras, clothes = {"A": 1, "B": 2, "C": 3}, {"A": 1, "B": 1, "C": 2}
    for part, persons in parts.items():
        for pid in persons:
            number = iter(range(1, 1000))
            for letter, count in (("A", 2 if part != "test" else 4), ("B", 2), ("C", 2)):
                for _ in range(count):
                    if part == "test":
                        rel = f"rgb/test/{letter}/{pid:03d}/cropped_rgb{next(number):03d}.jpg"
                        split = "gallery" if letter == "A" else "query"
                    else:
                        rel = f"rgb/{part}/{pid:03d}/{letter}_cropped_rgb{next(number):03d}.jpg"
                        split = part
                    plan.shots.append(Shot(rel, pid, clothes[letter], cameras[letter], False,
                                           _row(rel, pid, cameras[letter], split, clothes=clothes[letter])))
    return plan


def plan_ltcc(ctx: Context) -> Plan:
    plan, rng, ids = _start(ctx, "LTCC_ReID", 152, 4 + 16)
    train, test = ids[:4], ids[4:]
    changing = {"train": set(train[:2]), "test": set(_pick(rng, test, 10))}
    counter = iter(range(1, 1_000_000))
    for part, persons in (("train", train), ("test", test)):
        for pid in persons:
            change = pid in changing[part]
            outfits = [1, 2] if change else [1]
            cams = _pick(rng, range(1, 13), 4)
            # (folder, split, outfit, camera) per image: queries on two cameras; the gallery
            # covers every outfit on the other cameras, so each query keeps a positive.
            if part == "train":
                images = [("train", "train", outfits[i % len(outfits)], cams[i % 2]) for i in range(4)]
            else:
                images = [("query", "query", outfits[0], cams[0]), ("query", "query", outfits[-1], cams[1])]
                images += [("test", "gallery", outfits[i % len(outfits)], cams[2 + i % 2]) for i in range(6)]
            for folder, split, outfit, cam in images:
                rel = f"{folder}/{pid:03d}_{outfit}_c{cam}_{next(counter) * 7:06d}.png"
                plan.shots.append(Shot(rel, pid, outfit, cam, False,
                                       _row(rel, pid, cam, split, clothes=outfit, clothes_changing=int(change))))
    for part in ("train", "test"):
        persons = train if part == "train" else test
        plan.texts[f"info/cloth-change_id_{part}.txt"] = "".join(f"{p}\n" for p in sorted(changing[part]))
        plan.texts[f"info/cloth-unchange_id_{part}.txt"] = "".join(
            f"{p}\n" for p in sorted(set(persons) - changing[part]))
    return plan


def plan_deepchange(ctx: Context) -> Plan:
    from atreid.data.adapters.deepchange import clothes_proxy, clothes_proxy_with_year

    plan, rng, ids = _start(ctx, "DeepChangeDataset", 1121, 6 + 12)
    groups = {"train": ids[:4], "val": ids[4:6], "test": ids[6:]}
    days = pd.date_range("2019-05-01", "2020-04-30", freq="D")
    bbox_lists: dict[str, list[str]] = {}
    tracklet = iter(range(1, 1_000_000))
    number = iter(range(1, 1_000_000))
    for group, persons in groups.items():
        for pid in persons:
            chosen_days = sorted(_pick(rng, range(len(days)), 3))
            cams = _pick(rng, range(1, 18), 3)
            # Tracklets (day index, camera, outfit): two cameras the first day (one
            # outfit per day), another day on a third camera, a last day back on the first.
            tracks = [(chosen_days[0], cams[0], 1), (chosen_days[0], cams[1], 1), (chosen_days[1], cams[2], 2),
                      (chosen_days[2], cams[0], 3)]
            for t, (day, cam, outfit) in enumerate(tracks):
                date = int(days[day].strftime("%Y%m%d"))
                hour = 8 + 2 * t + int(rng.integers(0, 2))
                time = hour * 10_000 + int(rng.integers(0, 60)) * 100 + int(rng.integers(0, 60))
                track = next(tracklet)
                if group == "train":
                    folder, split = "train-set", "train"
                elif t == 0:
                    folder, split = f"{group}-set-query", "query" if group == "test" else "val_query"
                else:
                    folder, split = f"{group}-set-gallery", "gallery" if group == "test" else "val_gallery"
                for _ in range(2):
                    file = f"p{pid:04d}_c{cam:02d}_{date}_{time:06d}_{next(number):06d}_bbox.jpg"
                    rel = f"{folder}/{file}"
                    bbox_lists.setdefault(f"{folder}-bbox.txt", []).append(f"{file},{track}")
                    plan.shots.append(Shot(rel, pid, outfit, cam, False,
                                           _row(rel, pid, cam, split, clothes=clothes_proxy(date, time),
                                                clothes_with_year=clothes_proxy_with_year(date, time), date=date,
                                                time=time)))
    plan.texts = _text_files(bbox_lists)
    return plan


def plan_vc_clothes(ctx: Context) -> Plan:
    plan, rng, ids = _start(ctx, "VC-Clothes", 512, 4 + 14)
    train, test = ids[:4], ids[4:]
    for pid in ids:
        # Cameras 2 and 3 see outfit 1; camera 1 outfit 1 or 2; camera 4 outfit 2 or 3.
        outfit_of = {1: int(rng.integers(1, 3)), 2: 1, 3: 1, 4: int(rng.integers(2, 4))}
        number = iter(range(1, 100))
        if pid in train:
            images = [("train", "train", cam) for cam in (1, 2, 3, 4)]
        else:
            images = [("query", "query", cam) for cam in (1, 2, 3, 4)]
            images += [("gallery", "gallery", cam) for cam in (1, 2, 3, 4) for _ in range(2)]
        for folder, split, cam in images:
            rel = f"{folder}/{pid:04d}-{cam:02d}-{outfit_of[cam]:02d}-{next(number):02d}.jpg"
            plan.shots.append(Shot(rel, pid, outfit_of[cam], cam, False,
                                   _row(rel, pid, cam, split, clothes=outfit_of[cam])))
    return plan


PLANS: dict[str, Callable[[Context], Plan]] = {
    "market1501": plan_market1501,
    "cuhk03": functools.partial(plan_cuhk03, indexed="detected"),
    "cuhk03_labeled": functools.partial(plan_cuhk03, indexed="labeled"),
    "msmt17": plan_msmt17,
    "sysu_mm01": plan_sysu_mm01,
    "regdb": plan_regdb,
    "llcm": plan_llcm,
    "prcc": plan_prcc,
    "ltcc": plan_ltcc,
    "deepchange": plan_deepchange,
    "vc_clothes": plan_vc_clothes,
}


# ---- writing ------------------------------------------------------------------------------------
def _encode(image: np.ndarray, suffix: str, quality: int) -> bytes:
    """Image bytes in the release's format (JPEG, PNG or BMP by file suffix)."""
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


def plan_miniature(name: str, seed: int) -> tuple[Plan, pd.DataFrame]:
    """The plan of benchmark ``name``'s miniature and the index rows it must parse into."""
    from atreid.data.adapters import get_adapter

    adapter = get_adapter(name)  # unknown names list the valid ones
    if name not in PLANS:  # pragma: no cover - every registered adapter has a plan (tested)
        raise AtreidError(f"no synthetic miniature for {name!r}; set data.benchmarks.{name}.source to your copy")
    plan = PLANS[name](Context(name, seed))
    columns = ["path", "person", "camera", "modality", "clothes", "split", *adapter.extra_columns]
    rows = pd.DataFrame([s.row for s in plan.shots if s.row is not None], columns=columns)
    return plan, rows.sort_values("path", kind="stable").reset_index(drop=True)


def generate_miniature(name: str, out_dir: str | Path, *, seed: int = 0, image_height: int = 128,
                       image_width: int = 64, jpeg_quality: int = 90) -> dict[str, Any]:
    """Write the synthetic miniature of benchmark ``name`` into ``out_dir``.

    Args:
        name: registered benchmark name (``market1501``, ``sysu_mm01``, ...).
        out_dir: folder receiving the release's top folder and ``synthetic_counts.json``
            (built under a temporary name and moved into place when complete).
        seed: seed of every draw (same seed -> byte-identical files).
        image_height, image_width: image size in pixels.
        jpeg_quality: JPEG quality of ``.jpg`` releases (PNG/BMP releases are lossless).

    Returns:
        The counts written to ``synthetic_counts.json``.
    """
    from atreid.data.adapters import get_adapter

    if image_height < 32 or image_width < 16 or not 1 <= jpeg_quality <= 100:
        raise AtreidError("miniature settings: need image_height >= 32, image_width >= 16 and "
                          "jpeg_quality between 1 and 100 (data.synthetic)")
    adapter = get_adapter(name)
    plan, rows = plan_miniature(name, seed)
    ctx = Context(name, seed)
    statistics = adapter.all_statistics(rows)
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
