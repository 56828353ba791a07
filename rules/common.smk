# Shared by all .smk files -- config validation, paths and input functions.
import json
import os
import re
import shlex
import sys
from types import SimpleNamespace

from atreid.config import deep_merge, typed_command_line_values, validate_params
from atreid.errors import AtreidError

try:
    # Nested --config values arrive as strings from Snakemake's parser: type them first.
    config = deep_merge(config, typed_command_line_values(dict(workflow.config_settings.config)))
    # Validates against atreid/schema/params.schema.yaml and fills defaults, so unknown
    # keys and wrong types stop the workflow with one line naming the key.
    config = validate_params(config, source="params.yaml (+ --configfile/--config)")
except AtreidError as exc:
    sys.exit(f"error: {exc}")

# Rules call the `atreid` CLI of the environment snakemake runs in (e.g. .venv/bin),
# also when that environment is not activated. The folder is shell-quoted, and its braces
# doubled because Snakemake formats the prefix like a shell line.
_BIN = shlex.quote(os.path.dirname(sys.executable)).replace("{", "{{").replace("}", "}}")
shell.prefix(f'export PATH={_BIN}:"$PATH"; ')
CONDA_ENV = "../envs/atreid.yaml"

DATA_DIR = config["data"]["dir"]
DATA = SimpleNamespace(
    images=f"{DATA_DIR}/atustc/images",
    record=f"{DATA_DIR}/atustc/source.json",
    index=f"{DATA_DIR}/atustc/index.csv",
    verification=f"{DATA_DIR}/atustc/verification.json",
    verification_txt=f"{DATA_DIR}/atustc/verification.txt",
    sampled_index=f"{DATA_DIR}/atustc/train_sampled.csv",
    labels=f"{DATA_DIR}/atustc/labels.json",
)


# The training set (data.train_on): AT-USTC's sampled frames (rules/data.smk), or a
# benchmark's training split labelled by label_training_split (rules/train.smk) into
# data/<name>/train_labelled.csv + labels.json, its paths relative to data/<name>/images.
TRAIN_ON = config["data"]["train_on"]
if TRAIN_ON == "atustc":
    TRAIN_DATA = SimpleNamespace(index=DATA.sampled_index, labels=DATA.labels, images=DATA.images,
                                 images_root=f"{DATA.images}/AT-USTC")
else:
    TRAIN_DATA = SimpleNamespace(index=f"{DATA_DIR}/{TRAIN_ON}/train_labelled.csv",
                                 labels=f"{DATA_DIR}/{TRAIN_ON}/labels.json",
                                 images=f"{DATA_DIR}/{TRAIN_ON}/images",
                                 images_root=f"{DATA_DIR}/{TRAIN_ON}/images")


def one_of(names):
    """A wildcard constraint matching exactly ``names`` (and nothing when there are none)."""
    return "|".join(re.escape(name) for name in names) if names else "(?!)"


def as_json(obj):
    """A settings dict as JSON text (shell lines quote it: {params.settings:q})."""
    return json.dumps(obj, sort_keys=True)


def atustc_source_settings():
    """What decides the raw dataset: its source, plus the generator settings if synthetic."""
    atustc = config["data"]["atustc"]
    source = {"source": atustc["source"], "sha256": atustc["sha256"]}
    synthetic = config["data"]["synthetic"] if atustc["source"] == "synthetic" else {}
    return source, synthetic


# ---- variants and benchmarks ----------------------------------------------------
from atreid.config import resolve_variant

VARIANTS = sorted(config["variants"])
# Variants naming a reference checkpoint are imported (rules/reference.smk), the others trained.
IMPORTED_VARIANTS = [v for v in VARIANTS if "reference_checkpoint" in config["variants"][v]]
TRAINED_VARIANTS = [v for v in VARIANTS if v not in IMPORTED_VARIANTS]
BENCHMARKS = list(config["eval"]["benchmarks"])
FEATURE_CACHE = "cache/features"

# Runs: a trained variant has one run per seed, named seed<s> (models/{variant}/seed<s>/);
# an imported variant has one run, named `imported` (its weights do not depend on a seed).
SEEDS = list(config["seeds"])
FIRST_SEED = SEEDS[0]  # draws made once (gallery queries), the run shown in curves and galleries
IMPORTED_RUN = "imported"


def runs_of(variant):
    """The run names of ``variant``, the first seed's first."""
    return [IMPORTED_RUN] if variant in IMPORTED_VARIANTS else [f"seed{seed}" for seed in SEEDS]


def first_run(variant):
    """The run whose CMC curves, training curves and galleries stand for the variant."""
    return runs_of(variant)[0]


RUNS = sorted({run for variant in VARIANTS for run in runs_of(variant)})


def model_of_run(variant, run):
    return f"models/{variant}/{run}/model.pt"


def variant_settings(wildcards):
    """Exactly this run's resolved settings (its seed included): changing one variant
    reruns only its runs, and adding a seed only the new seed's."""
    return as_json(resolve_variant(config, wildcards.variant, int(wildcards.seed)))


def imported_settings(wildcards):
    """What the import depends on: the variant's resolved settings without the recipe and
    the seed (ncls, moae, said and model.arch/image_size/patch_stride are checked against
    the weights), so the list of seeds never reruns an import."""
    settings = resolve_variant(config, wildcards.variant, FIRST_SEED)
    settings.pop("train")
    settings.pop("seed")
    return as_json(settings)


def training_threads(wildcards):
    """The variant's train.cpu_threads, or (0) all the cores snakemake may use, capped by
    the machine: torch threads follow this.

    A fixed count makes CPU results independent of the machine's core count (the weights
    depend on the thread count) and lets snakemake run that many jobs side by side. A
    function of the job (not a number fixed at parse time), so commands that set no
    --cores, such as `snakemake --report`, still parse the workflow."""
    train = resolve_variant(config, wildcards.variant, FIRST_SEED)["train"]
    fixed = train.get("cpu_threads", 0)
    # Under DDP on the CPU each of the train.devices processes runs at least one thread
    # (the trainer gives each max(1, threads // devices)), so reserve that many cores.
    return max(fixed, int(train.get("devices", 1))) if fixed else max(1, min(workflow.cores, os.cpu_count() or 1))


def benchmark_inputs(wildcards):
    """Files the evaluation of a run reads: every benchmark's index and images."""
    return {
        "indexes": [f"{DATA_DIR}/{benchmark}/index.csv" for benchmark in BENCHMARKS],
        "images": [f"{DATA_DIR}/{benchmark}/images" for benchmark in BENCHMARKS],
    }


def atustc_eval_inputs(wildcards):
    return {"index": DATA.index, "images": DATA.images}


from atreid.constants import SCENARIOS as SCENARIO_NAMES


def eval_settings(rerank=True):
    """The eval section a job receives (its params: a change reruns the job, never training).

    eval.rerank (and eval.compile) reach the job only when on, rerank as its resolved {k1, k2, lambda}: with
    it off the settings (so the metrics files and the jobs' params) are what they were
    before the option existed. ``rerank=False`` leaves it out (the galleries do not
    re-rank, so switching it does not redraw them)."""
    from atreid.eval.rerank_options import rerank_options

    settings = dict(config["eval"])
    settings.pop("benchmarks")  # which benchmarks run is the DAG's business, not the job's
    settings.pop("paper_results")
    options = rerank_options(settings.pop("rerank", None))
    if rerank and options is not None:
        settings["rerank"] = {"enabled": True, **options}
    if settings.pop("compile", False):  # likewise only when on
        settings["compile"] = True
    return as_json(settings)


def run_metrics(variant, run):
    """The per-benchmark metrics files one evaluation job (one run) writes."""
    return expand("results/metrics/{variant}/{run}/{benchmark}.json", variant=variant, run=run,
                  benchmark=BENCHMARKS)


def all_metrics():
    """Every run's metrics files: the table's inputs (mean ± std over each variant's runs)."""
    return [path for variant in VARIANTS for run in runs_of(variant) for path in run_metrics(variant, run)]


def first_run_metrics(benchmark):
    """The first run's metrics file of ``benchmark`` for every variant (CMC curves)."""
    return [f"results/metrics/{variant}/{first_run(variant)}/{benchmark}.json" for variant in VARIANTS]


# ---- user-supplied files (real datasets, pretrained weights) ----------------------
from atreid.commands.data import replaced_folders
from atreid.workflow import is_local_path, setting_origin, user_file_input


def required_file(source, key, what, data_dir=None):
    """A local file the user must provide: declared as an input (so a replaced file reruns
    what depends on it). Missing, or inside data_dir/images (which its import replaces),
    it stops the run with one line naming the setting and the params file that set it;
    an archive already imported from (data_dir/prepared.json) may be gone."""
    if not is_local_path(source):
        return []
    origin = setting_origin(key, workflow.config_settings.configfiles,
                            typed_command_line_values(dict(workflow.config_settings.config)))
    try:
        return user_file_input(
            source, key, what, origin=origin, warn=logger.warning,
            replaced=replaced_folders(f"{data_dir}/images") if data_dir else (),
            manifest=f"{data_dir}/prepared.json" if data_dir else None)
    except AtreidError as exc:
        sys.exit(f"error: {exc}")


def atustc_source_input(wildcards):
    return required_file(config["data"]["atustc"]["source"], "data.atustc.source",
                         "your signed-release copy of AT-USTC (zip, tar, tar.gz or folder)", f"{DATA_DIR}/atustc")


def reference_checkpoint_input(wildcards):
    source = config["variants"][wildcards.variant]["reference_checkpoint"]
    return required_file(source, f"variants.{wildcards.variant}.reference_checkpoint",
                         "the reference implementation's checkpoint (epoch_best.t)")


# The pretrain_backbone stage's weights (rules/pretrain.smk): model.pretrained "synthetic".
PRETRAINED_BACKBONE = "models/pretrained/backbone.pth"
PRETRAINED_HISTORY = "models/pretrained/history.csv"


def synthetic_backbone(wildcards):
    """Whether the variant starts from the pretrain_backbone stage's weights."""
    return resolve_variant(config, wildcards.variant, FIRST_SEED)["model"]["pretrained"] == "synthetic"


def pretrained_input(wildcards):
    if synthetic_backbone(wildcards):
        return [PRETRAINED_BACKBONE]
    source = resolve_variant(config, wildcards.variant, FIRST_SEED)["model"]["pretrained"]
    own = "pretrained" in config["variants"][wildcards.variant].get("model", {})
    return required_file(source, f"variants.{wildcards.variant}.model.pretrained" if own else "model.pretrained",
                         "jx_vit_base_p16_224-80ecf9dd.pth (timm vit_base_patch16_224.orig_in21k_ft_in1k)")


# ---- code as an input -------------------------------------------------------------
# Each job carries one param per package file its `atreid` verb may run (atreid/code_deps.py),
# `<file>@<fingerprint of the parts the job may run>`. Editing code reruns exactly the jobs
# that may run it, and `snakemake -n` names the file in the reason ("Params have changed
# since last execution: ... before: atreid/model/moae.py@... now: atreid/model/moae.py@...").
# Variant jobs leave out what the variant's switches turn off (MoAE, HDW, SAID's masking).
from atreid.code_deps import NO_METHOD_SWITCHES, snakemake_params


# The method switches of each variant (its seed does not change which code runs).
VARIANT_SWITCHES = {variant: resolve_variant(config, variant, FIRST_SEED) for variant in VARIANTS}


def code_params(*verbs, by_variant=False, switches=None):
    if switches is not None:
        return snakemake_params(verbs, settings_of=lambda wildcards: switches, all_settings=[switches])
    if not by_variant:
        return snakemake_params(verbs)
    return snakemake_params(verbs, settings_of=lambda wildcards: VARIANT_SWITCHES[wildcards.variant],
                            all_settings=list(VARIANT_SWITCHES.values()))
