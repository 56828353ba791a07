"""The workflow's logic, kept here so the Snakefile and rules/*.smk stay wiring (and this is
unit-tested without Snakemake, tests/test_workflow.py).

The plan (second half): functions of the validated params (``config``) giving the runs,
their files and what each job receives; :func:`write_settings` writes a job's settings to
the file its ``--settings`` flag names. Before params.yaml is read:

- :func:`check_params_files`: Snakemake's own YAML reading keeps the last of a duplicated
  key and reports a syntax error without file or line, so every params file is first
  read strictly (file, line, key) and must hold a mapping of settings. A
  ``--configfile`` that is not YAML at all stops Snakemake before the Snakefile is read;
  ``atreid check-params params.yaml <file>`` names its line.
- :func:`user_file_input`: a file the user must provide (an AT-USTC archive, weights) is
  an input of the rules that read it; when it is missing the run stops with one line
  naming the setting and the params file that set it (Snakemake would otherwise keep an
  older copy's outputs and plan the rest on them, e.g. the paper preset re-indexing the
  demo's synthetic images). A source inside a folder its import replaces is refused.
- :func:`hint_stale_locks`: a killed snakemake leaves its locks in ``.snakemake/locks``
  and the next run stops with a LockException. Locks present when this run started and
  still there when it ends are not its own: say what to run (on stderr, after
  Snakemake's own message).
"""

from __future__ import annotations

import atexit
import json
import os
import re
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Iterable, Mapping, Sequence

from atreid.config import read_params_file, resolve_variant, schema_defaults
from atreid.data.archive import check_source_outside, prepared_source
from atreid.errors import AtreidError
from atreid.eval.rerank_options import rerank_options
from atreid.io import atomic_write_text, settings_sha256

LOCK_HINT = ("hint: .snakemake/locks holds a lock of an earlier snakemake. If no other snakemake is running in "
             "this folder (the last one was killed or the machine went down), run `snakemake --unlock` then rerun.")


def check_params_files(paths: Iterable[str | Path]) -> None:
    """Exit with one line naming file, line and key when a params file is not strict YAML,
    or naming the file when it does not hold a mapping of settings (empty, a list):
    Snakemake's own message would name the Snakefile."""
    for path in paths:
        try:
            read_params_file(path)
        except AtreidError as exc:
            sys.exit(f"error: {exc}")


def hint_stale_locks(is_main_process: bool, locks_dir: str | Path = ".snakemake/locks") -> None:
    """Print :data:`LOCK_HINT` at exit when locks that predate this run are still there."""
    locks = tuple(sorted(Path(locks_dir).glob("*.lock")))
    if not locks or not is_main_process or "--unlock" in sys.argv:
        return

    def hint() -> None:
        if any(lock.exists() for lock in locks):
            print(LOCK_HINT, file=sys.stderr)

    atexit.register(hint)


def setting_origin(key: str, configfiles: Sequence[str | Path], command_line: Mapping[str, Any],
                   base: str = "params.yaml") -> str:
    """Where the value of the dotted ``key`` comes from, for messages: ``--config`` when
    the command line sets it, else the last ``--configfile`` that holds it (a preset
    such as presets/paper.yaml), else ``base``. The same precedence as Snakemake's."""
    def holds(mapping: Any) -> bool:
        for part in key.split("."):
            if not isinstance(mapping, Mapping) or part not in mapping:
                return False
            mapping = mapping[part]
        return True

    if holds(command_line):
        return "--config"
    for path in reversed(list(configfiles)):
        try:
            if holds(read_params_file(path)):
                return _shown(path)
        except AtreidError:
            continue
    return base


def _shown(path: str | Path) -> str:
    """``path`` relative to the working directory when it lies inside it."""
    try:
        return Path(path).resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(path)


def is_local_path(source: str) -> bool:
    """Whether a source setting names a local file or folder (not a keyword or a URL)."""
    return source not in ("synthetic", "none", "hub") and "://" not in source


def user_file_input(source: str, key: str, what: str, *, origin: str, replaced: Iterable[str | Path] = (),
                    manifest: str | Path | None = None, warn: Callable[[str], None] = print) -> list[str]:
    """The inputs a rule declares for a user-supplied ``source`` (the value of ``key``,
    set in ``origin``): ``[source]`` for a local path, ``[]`` for a keyword or URL.

    Raises:
        AtreidError: the source lies inside one of ``replaced`` (the folders its import
            replaces); or it is missing, unless ``manifest`` records that the installed
            copy came from this very source (the user may delete an archive once
            imported: then ``warn`` says so and the copy is kept). A missing source must
            stop the run: Snakemake would keep the outputs of whatever data is there.
    """
    if not is_local_path(source):
        return []
    check_source_outside(source, replaced, setting=f"{key} (in {origin})")
    if os.path.exists(source):
        return [source]
    if manifest is not None and prepared_source(manifest) == source:
        warn(f"{key}: {source} not found; keeping the copy imported from it earlier ({manifest})")
        return [source]
    raise AtreidError(f"{key}: {source} not found (set in {origin}): put {what} there, or change {key} "
                      f"in {origin}")


# ---- the workflow's plan, as functions of the validated params (rules/common.smk wires them) ----
# Every function below takes ``config``: params.yaml (+ --configfile/--config) after
# :func:`atreid.config.validate_params`, so the schema's defaults are filled in.

# An imported variant's one run (its weights have no seed); a trained variant's runs are seed<s>.
IMPORTED_RUN = "imported"
FEATURE_CACHE = "cache/features"
# The pretrain_backbone stage's weights (rules/pretrain.smk): model.pretrained "synthetic".
PRETRAINED_BACKBONE = "models/pretrained/backbone.pth"
PRETRAINED_HISTORY = "models/pretrained/history.csv"
# Where each job's resolved settings are written, one file per distinct content.
SETTINGS_DIR = "settings"


def one_of(names: Iterable[str]) -> str:
    """A wildcard constraint matching exactly ``names`` (and nothing when there are none)."""
    names = list(names)
    return "|".join(re.escape(name) for name in names) if names else "(?!)"


def data_paths(config: Mapping[str, Any]) -> SimpleNamespace:
    """AT-USTC's files under data.dir (rules/data.smk)."""
    root = f"{config['data']['dir']}/atustc"
    return SimpleNamespace(images=f"{root}/images", record=f"{root}/source.json", index=f"{root}/index.csv",
                           verification=f"{root}/verification.json", verification_txt=f"{root}/verification.txt",
                           sampled_index=f"{root}/train_sampled.csv", labels=f"{root}/labels.json")


def training_data(config: Mapping[str, Any]) -> SimpleNamespace:
    """The training set of data.train_on: AT-USTC's sampled frames (rules/data.smk), or a
    benchmark's training split labelled by label_training_split (rules/train.smk) into
    data/<name>/train_labelled.csv + labels.json, its paths relative to data/<name>/images."""
    data_dir, train_on = config["data"]["dir"], config["data"]["train_on"]
    if train_on == "atustc":
        atustc = data_paths(config)
        return SimpleNamespace(index=atustc.sampled_index, labels=atustc.labels, images=atustc.images,
                               images_root=f"{atustc.images}/AT-USTC")
    root = f"{data_dir}/{train_on}"
    return SimpleNamespace(index=f"{root}/train_labelled.csv", labels=f"{root}/labels.json",
                           images=f"{root}/images", images_root=f"{root}/images")


def variants(config: Mapping[str, Any]) -> list[str]:
    return sorted(config["variants"])


def imported_variants(config: Mapping[str, Any]) -> list[str]:
    """Variants naming a reference checkpoint: imported (rules/reference.smk), not trained."""
    return [v for v in variants(config) if "reference_checkpoint" in config["variants"][v]]


def trained_variants(config: Mapping[str, Any]) -> list[str]:
    imported = imported_variants(config)
    return [v for v in variants(config) if v not in imported]


def first_seed(config: Mapping[str, Any]) -> int:
    """The seed of draws made once (gallery queries) and of the run shown in curves and galleries."""
    return config["seeds"][0]


def runs_of(config: Mapping[str, Any], variant: str) -> list[str]:
    """The run names of ``variant`` (models/{variant}/{run}/), the first seed's first: one
    run per seed, seed<s>, for a trained variant; `imported` for an imported one."""
    if variant in imported_variants(config):
        return [IMPORTED_RUN]
    return [f"seed{seed}" for seed in config["seeds"]]


def first_run(config: Mapping[str, Any], variant: str) -> str:
    """The run whose CMC curves, training curves and galleries stand for the variant."""
    return runs_of(config, variant)[0]


def all_runs(config: Mapping[str, Any]) -> list[str]:
    return sorted({run for variant in variants(config) for run in runs_of(config, variant)})


def model_of_run(variant: str, run: str) -> str:
    return f"models/{variant}/{run}/model.pt"


def run_metrics(config: Mapping[str, Any], variant: str, run: str) -> list[str]:
    """The per-benchmark metrics files one evaluation job (one run) writes."""
    return [f"results/metrics/{variant}/{run}/{benchmark}.json" for benchmark in config["eval"]["benchmarks"]]


def all_metrics(config: Mapping[str, Any]) -> list[str]:
    """Every run's metrics files: the table's inputs (mean ± std over each variant's runs)."""
    return [path for variant in variants(config) for run in runs_of(config, variant)
            for path in run_metrics(config, variant, run)]


def first_run_metrics(config: Mapping[str, Any], benchmark: str) -> list[str]:
    """The first run's metrics file of ``benchmark`` for every variant (CMC curves)."""
    return [f"results/metrics/{variant}/{first_run(config, variant)}/{benchmark}.json" for variant in variants(config)]


# ---- what each job receives (its settings file; see write_settings) ----------------------
def comparison_sides(config: Mapping[str, Any]) -> list[str]:
    """``atreid compare``'s sides for results/comparison.md: the reference variant first
    (``baseline``, or the first variant when there is none), then every other variant; each
    side is the comma-joined list of its runs' metrics folders (all its seeds)."""
    names = variants(config)
    reference = "baseline" if "baseline" in names else names[0]
    order = [reference] + [name for name in names if name != reference]
    return [",".join(f"results/metrics/{name}/{run}" for run in runs_of(config, name)) for name in order]


def train_settings(config: Mapping[str, Any], variant: str, seed: int) -> dict[str, Any]:
    """Exactly one run's resolved settings (its seed included): changing one variant
    reruns only its runs, and adding a seed only the new seed's."""
    return resolve_variant(config, variant, seed)


def import_settings(config: Mapping[str, Any], variant: str) -> dict[str, Any]:
    """What the import of a reference checkpoint depends on: the variant's resolved
    settings without the recipe and the seed (ncls, moae, said and
    model.arch/image_size/patch_stride are checked against the weights), so the list of
    seeds never reruns an import."""
    settings = train_settings(config, variant, first_seed(config))
    settings.pop("train")
    settings.pop("seed")
    return settings


def eval_settings(config: Mapping[str, Any], *, rerank: bool = True) -> dict[str, Any]:
    """The eval section an evaluation job receives (a change reruns evaluations, never training).

    Which benchmarks run is the DAG's business, and paper_results the table's, not the
    job's. eval.rerank reaches the job as its resolved ``{enabled, k1, k2, lambda}`` and
    eval.compile as ``true``, each only when on: off, the job's settings hold neither, so
    their digest (``eval_settings_sha256`` in every metrics file) stays that of an eval
    section without them. ``rerank=False`` leaves re-ranking out (the galleries do not
    re-rank: switching it does not redraw them).
    """
    settings = dict(config["eval"])
    settings.pop("benchmarks")
    settings.pop("paper_results")
    options = rerank_options(settings.pop("rerank", None))
    if rerank and options is not None:
        settings["rerank"] = {"enabled": True, **options}
    if settings.pop("compile", False):
        settings["compile"] = True
    return settings


def pretrain_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """What the demo backbone's pre-training depends on (rules/pretrain.smk)."""
    return {"arch": config["model"]["arch"], "image_size": config["model"]["image_size"],
            "pretrain": config["pretrain"]}


def training_threads(config: Mapping[str, Any], variant: str, cores: int | Callable[[], int]) -> int:
    """The variant's train.cpu_threads, or (0) all the ``cores`` snakemake may use, capped
    by the machine: torch threads follow this. ``cores`` may be a function, called only in
    that last case: Snakemake's ``workflow.cores`` raises when a run sets no ``--cores``
    (an executor profile such as profiles/slurm), where a fixed count needs no cores.

    A fixed count makes CPU results independent of the machine's core count (the weights
    depend on the thread count) and lets snakemake run that many jobs side by side. Under
    DDP on the CPU each of the train.devices processes runs at least one thread (the
    trainer gives each max(1, threads // devices)), so that many cores are reserved."""
    train = train_settings(config, variant, first_seed(config))["train"]
    fixed = train["cpu_threads"]
    if fixed:
        return max(fixed, int(train["devices"]))
    return max(1, min(cores() if callable(cores) else cores, os.cpu_count() or 1))


def training_devices(config: Mapping[str, Any], variant: str, seed: int) -> int:
    """GPUs one training job takes: one per device it trains on (DDP when train.devices > 1)."""
    return train_settings(config, variant, seed)["train"]["devices"]


def synthetic_backbone(config: Mapping[str, Any], variant: str) -> bool:
    """Whether the variant starts from the pretrain_backbone stage's weights."""
    return train_settings(config, variant, first_seed(config))["model"]["pretrained"] == "synthetic"


def atustc_source_settings(config: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """What decides the raw AT-USTC copy: its source, plus the generator settings if synthetic."""
    atustc = config["data"]["atustc"]
    source = {"source": atustc["source"], "sha256": atustc["sha256"]}
    synthetic = config["data"]["synthetic"] if atustc["source"] == "synthetic" else {}
    return source, synthetic


def benchmark_sources(config: Mapping[str, Any], names: Iterable[str]) -> dict[str, dict[str, Any]]:
    """data.benchmarks.<name> of every one of ``names``, an absent entry as the schema's
    defaults (the miniature), so the schema is the one place that states them."""
    listed = config["data"]["benchmarks"]
    return {name: listed[name] if name in listed else schema_defaults("data", "benchmarks", name)
            for name in names}


def benchmark_prepare_settings(config: Mapping[str, Any], source: Mapping[str, Any]) -> tuple[dict, dict]:
    """What one benchmark's prepare job depends on: its source, plus the renderer settings
    for a miniature."""
    synthetic = config["data"]["synthetic"]
    renderer = ({key: synthetic[key] for key in ("seed", "image_height", "image_width", "jpeg_quality")}
                if source["source"] == "synthetic" else {})
    return {"source": source["source"], "sha256": source["sha256"]}, renderer


def write_settings(name: str, settings: Mapping[str, Any], folder: str | Path = SETTINGS_DIR) -> str:
    """Write a job's resolved ``settings`` to ``folder/<name>.<digest>.json`` and return that path.

    The job's command passes it as ``--settings FILE``, so a command copied from a log
    reruns the job by hand with the very settings it ran with. The name holds the
    content's digest: a file, once written, never changes (a later ``snakemake -n`` with
    other settings writes another file, never under a running job), and a job's params
    name a new file exactly when its settings change, which is what reruns it (the
    params trigger). A file that exists is left alone (same name, same content): its
    modification time does not move. Written atomically, with the user's umask.
    """
    text = json.dumps(settings, indent=2, sort_keys=True) + "\n"
    path = Path(folder) / f"{name}.{settings_sha256(settings)[:12]}.json"
    if not path.is_file():
        atomic_write_text(path, text)
    return path.as_posix()
