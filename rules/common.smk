# Shared by all .smk files -- config validation, paths and input functions.
import json
import os
import shlex
import sys

from atreid.config import deep_merge, typed_command_line_values, validate_params
from atreid.data.benchmarks import check_params_benchmarks
from atreid.constants import SCENARIOS
from atreid.errors import AtreidError

try:
    # Nested --config values arrive as strings from Snakemake's parser: type them first.
    config = deep_merge(config, typed_command_line_values(dict(workflow.config_settings.config)))
    # Validates against atreid/schema/params.schema.yaml and fills defaults, so unknown
    # keys and wrong types stop the workflow with one line naming the key.
    config = validate_params(config, source="params.yaml (+ --configfile/--config)")
    check_params_benchmarks(config, "params.yaml (+ --configfile/--config)")
except AtreidError as exc:
    sys.exit(f"error: {exc}")

# Rules call the `atreid` CLI of the environment snakemake runs in (e.g. .venv/bin),
# also when that environment is not activated. The folder is shell-quoted, and its braces
# doubled because Snakemake formats the prefix like a shell line.
_BIN = shlex.quote(os.path.dirname(sys.executable)).replace("{", "{{").replace("}", "}}")
shell.prefix(f'export PATH={_BIN}:"$PATH"; ')
CONDA_ENV = "../envs/atreid.yaml"

# The workflow's plan is atreid.workflow's functions of the validated params (unit-tested
# there, tests/test_workflow.py); what follows binds them to this run's config.
import atreid.workflow as plan

DATA_DIR = config["data"]["dir"]
DATA = plan.data_paths(config)
TRAIN_ON = config["data"]["train_on"]
TRAIN_DATA = plan.training_data(config)
one_of = plan.one_of

VARIANTS = plan.variants(config)
IMPORTED_VARIANTS = plan.imported_variants(config)
TRAINED_VARIANTS = plan.trained_variants(config)
BENCHMARKS = list(config["eval"]["benchmarks"])
FEATURE_CACHE = plan.FEATURE_CACHE
SEEDS = list(config["seeds"])
FIRST_SEED = plan.first_seed(config)
RUNS = plan.all_runs(config)
SCENARIO_NAMES = SCENARIOS
model_of_run = plan.model_of_run


def runs_of(variant):
    return plan.runs_of(config, variant)


def first_run(variant):
    return plan.first_run(config, variant)


def all_metrics():
    return plan.all_metrics(config)


def first_run_metrics(benchmark):
    return plan.first_run_metrics(config, benchmark)


# Each job's settings reach it as one file, --settings settings/<job>.<digest>.json
# (plan.write_settings): the params name the file, so a settings change reruns exactly the
# jobs whose file changes.
def train_settings_file(wildcards):
    settings = plan.train_settings(config, wildcards.variant, int(wildcards.seed))
    return plan.write_settings(f"train/{wildcards.variant}/seed{wildcards.seed}", settings)


def import_settings_file(wildcards):
    return plan.write_settings(f"import/{wildcards.variant}", plan.import_settings(config, wildcards.variant))


def eval_settings_file(rerank=True):
    return plan.write_settings("evaluate" if rerank else "galleries", plan.eval_settings(config, rerank=rerank))


def as_json(obj):
    """Settings of the data steps as JSON text (their shell lines quote it: {params.source:q})."""
    return json.dumps(obj, sort_keys=True)


def training_threads(wildcards):
    # A function of the job (not a number fixed at parse time), and workflow.cores read only
    # when the variant's threads follow it: commands that set no --cores (`snakemake
    # --report`, the SLURM profile) must still plan the training jobs.
    return plan.training_threads(config, wildcards.variant, lambda: workflow.cores)


def benchmark_inputs(wildcards):
    """Files the evaluation of a run reads: every benchmark's index and images."""
    return {
        "indexes": [f"{DATA_DIR}/{benchmark}/index.csv" for benchmark in BENCHMARKS],
        "images": [f"{DATA_DIR}/{benchmark}/images" for benchmark in BENCHMARKS],
    }


def atustc_eval_inputs(wildcards):
    return {"index": DATA.index, "images": DATA.images}


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


PRETRAINED_BACKBONE = plan.PRETRAINED_BACKBONE
PRETRAINED_HISTORY = plan.PRETRAINED_HISTORY


def synthetic_backbone(wildcards):
    return plan.synthetic_backbone(config, wildcards.variant)


def pretrained_input(wildcards):
    if synthetic_backbone(wildcards):
        return [PRETRAINED_BACKBONE]
    source = plan.train_settings(config, wildcards.variant, FIRST_SEED)["model"]["pretrained"]
    own = "pretrained" in config["variants"][wildcards.variant].get("model", {})
    return required_file(source, f"variants.{wildcards.variant}.model.pretrained" if own else "model.pretrained",
                         "jx_vit_base_p16_224-80ecf9dd.pth (timm vit_base_patch16_224.orig_in21k_ft_in1k)")


# ---- code as an input -------------------------------------------------------------
# Each job carries one param per package file its `atreid` verb may run (atreid/code_deps.py),
# `<file>@<fingerprint of the parts the job may run>`. Editing code reruns exactly the jobs
# that may run it, and `snakemake -n` names the file in the reason ("Params have changed
# since last execution: ... before: atreid/model/moae.py@... now: atreid/model/moae.py@...").
# Variant jobs leave out what the variant's switches turn off (MoAE, HDW, SAID's masking).
from atreid.code_deps import NO_METHOD_SWITCHES, snakemake_params, use_fingerprint_cache

# Traced once per state of the package's files, then read from here by every parse.
use_fingerprint_cache(".snakemake/atreid")


# The method switches of each variant (its seed does not change which code runs).
VARIANT_SWITCHES = {variant: plan.train_settings(config, variant, FIRST_SEED) for variant in VARIANTS}


def code_params(*verbs, by_variant=False, switches=None):
    if switches is not None:
        return snakemake_params(verbs, settings_of=lambda wildcards: switches, all_settings=[switches])
    if not by_variant:
        return snakemake_params(verbs)
    return snakemake_params(verbs, settings_of=lambda wildcards: VARIANT_SWITCHES[wildcards.variant],
                            all_settings=list(VARIANT_SWITCHES.values()))
