"""RegDB (visible-thermal, 10 fixed trials).

Reference: Nguyen et al., "Person Recognition System Based on a Combination of Body
Images from Visible Light and Thermal Cameras", Sensors 2017.
URL: http://dm.dongguk.edu/link.html (by request); trial lists as distributed with
the cross-modality re-id code bases (``idx/``).

Layout (``RegDB/``)::

    Visible/PPP/<gender>_<view>_v_<frame>_<person>.bmp     camera 1, RGB
    Thermal/PPP/<gender>_<view>_t_<frame>_<person>.bmp     camera 2, IR
    idx/{train,test}_{visible,thermal}_{1..10}.txt         "<path> <label>" per trial

Each trial k splits the 412 persons into 206 training and 206 test persons. The index
has every image once with its trial membership: ``train_trials`` / ``test_trials`` list
the trials (1-10, ``;``-separated) whose train/test files name the image; ``split`` is
``test`` for an image some trial tests on, else ``train``. person = the folder PPP.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd

from atreid.data.benchmarks.base import Benchmark
from atreid.data.benchmarks.registry import register_benchmark
from atreid.data.protocols import CM_ALL, HEAD_AD_ST, BenchmarkProtocols, Protocol
from atreid.data.synthetic.miniatures import Context, PLAN_DRAWS, Plan, Shot, pick, shot_row
from atreid.data.benchmarks.files import read_path_list

PATH_RE = re.compile(r"^(?P<folder>Visible|Thermal)/(?P<dir>\d+)/"
                     r"(?P<stem>[^/]+)_(?P<vt>[vt])_(?P<frame>\d+)_(?P<person>\d+)\.(?:bmp|jpg|png)$")
TRIALS = tuple(range(1, 11))
FOLDER_CAMERA = {"Visible": 1, "Thermal": 2}
FOLDER_MODALITY = {"Visible": "rgb", "Thermal": "ir"}


def trial_list(trials: list[int]) -> str:
    return ";".join(str(t) for t in sorted(trials))


def parse_trial_list(value: Any) -> set[int]:
    """Trials named in a ``train_trials``/``test_trials`` cell (empty / NaN -> none)."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return set()
    return {int(float(t)) for t in str(value).split(";") if t.strip()}


# ---- protocols ------------------------------------------------------------------------------
_IR = {"split": ("test",), "modality": ("ir",)}
_RGB = {"split": ("test",), "modality": ("rgb",)}
PROTOCOLS = BenchmarkProtocols("regdb", (
    Protocol("IR->RGB", HEAD_AD_ST, _IR, _RGB, CM_ALL,
             "thermal queries x visible gallery of trial k's test files (k = 1..10)",
             trials=len(TRIALS), trial_column="test_trials"),
    Protocol("RGB->IR", HEAD_AD_ST, _RGB, _IR, CM_ALL,
             "visible queries x thermal gallery of trial k's test files (k = 1..10)",
             trials=len(TRIALS), trial_column="test_trials"),
), main="both-directions", combined={"both-directions": ("IR->RGB", "RGB->IR")})


# The miniature that stands in for the release in the demo (atreid.data.synthetic.miniatures).
def plan_regdb(ctx: Context) -> Plan:
    plan = Plan("RegDB")
    rng = ctx.rng(PLAN_DRAWS)
    persons = list(range(1, 25))
    per_person = 4
    names: dict[tuple[int, str], list[str]] = {}
    for pid in persons:
        gender = ("male", "female")[int(rng.integers(0, 2))]
        view = ("front", "back")[int(rng.integers(0, 2))]
        frames = sorted(pick(rng, range(0, 99_999), per_person))
        for folder, vt in (("Visible", "v"), ("Thermal", "t")):
            names[(pid, folder)] = [f"{folder}/{pid}/{gender}_{view}_{vt}_{f:05d}_{pid}.bmp" for f in frames]
    train_trials: dict[str, list[int]] = {}
    test_trials: dict[str, list[int]] = {}
    for k in range(1, 11):
        test = sorted(pick(ctx.rng(PLAN_DRAWS, k), persons, len(persons) // 2))
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
                row = shot_row(rel, pid, camera, "test" if tests else "train", modality=modality,
                           train_trials=";".join(map(str, sorted(train_trials.get(rel, [])))),
                           test_trials=";".join(map(str, sorted(tests))))
                # One co-located camera pair: the same view, rendered visible or thermal.
                plan.shots.append(Shot(rel, pid, 1, 1, modality == "ir", row))
    return plan


@register_benchmark
class RegDB(Benchmark):
    name = "regdb"
    protocols = PROTOCOLS
    miniature = staticmethod(plan_regdb)
    title = "RegDB"
    reference = "Nguyen et al., Person Recognition System Based on a Combination of Body Images ..., Sensors 2017"
    top_folders = ("RegDB", "regdb")
    required = ("Visible/", "Thermal/", *(f"idx/{part}_{mod}_{k}.txt" for part in ("train", "test")
                                          for mod in ("visible", "thermal") for k in TRIALS))
    layout = "RegDB/{Visible,Thermal}/PPP/*_{v,t}_FFFFF_P.bmp + idx/{train,test}_{visible,thermal}_{1..10}.txt"
    splits = ("train", "test")
    extra_columns = ("train_trials", "test_trials")
    published = {
        "all": {"ids": 412, "images": 8_240, "rgb_images": 4_120, "ir_images": 4_120},
        **{f"train_trial{k}": {"ids": 206} for k in TRIALS},
        **{f"test_trial{k}": {"ids": 206} for k in TRIALS},
    }

    def parse(self, root: Path) -> tuple[list[dict[str, Any]], list[str]]:
        def row(found: re.Match[str], rel: str, folder: str) -> dict[str, Any]:
            if (found["vt"] == "v") != (folder == "Visible"):
                raise self.malformed(root, rel, "naming (_v_ files belong in Visible/, _t_ in Thermal/)")
            return {"path": rel, "person": int(found["dir"]), "camera": FOLDER_CAMERA[folder],
                    "modality": FOLDER_MODALITY[folder], "clothes": -1, "split": "train", "train_trials": [],
                    "test_trials": [], "name_person": int(found["person"])}

        images, _ = self.walk(root, {folder: folder for folder in FOLDER_CAMERA}, PATH_RE,
                              "{Visible,Thermal}/PPP/*_{v,t}_FFFFF_P.bmp layout", row, on_path=True)
        mismatched = sum(image.pop("name_person") != image["person"] for image in images)
        rows = {image["path"]: image for image in images}
        for part in ("train", "test"):
            for modality in ("visible", "thermal"):
                for k in TRIALS:
                    list_name = f"idx/{part}_{modality}_{k}.txt"
                    for rel, _ in read_path_list(root / list_name):
                        if rel not in rows:
                            raise self.missing_listed(root, rel, list_name)
                        rows[rel][f"{part}_trials"].append(k)
        for row in rows.values():
            if row["test_trials"]:
                row["split"] = "test"
            row["train_trials"] = trial_list(row["train_trials"])
            row["test_trials"] = trial_list(row["test_trials"])
        warnings = []
        if mismatched:
            warnings.append(f"{mismatched} file names end in a person id other than their folder's (folder used)")
        return list(rows.values()), warnings

    def extra_statistics(self, index: pd.DataFrame) -> dict[str, dict[str, int]]:
        stats: dict[str, dict[str, int]] = {}
        for part in ("train", "test"):
            members = index[f"{part}_trials"].map(parse_trial_list)
            for k in TRIALS:
                frame = index[members.map(lambda trials: k in trials)]
                stats[f"{part}_trial{k}"] = {"ids": int(frame["person"].nunique()), "images": int(len(frame)),
                                             "rgb_images": int((frame["modality"] == "rgb").sum()),
                                             "ir_images": int((frame["modality"] == "ir").sum())}
        return stats
