"""Parameter helpers: validate params files; apply a preset to params.yaml (for DVC)."""

from __future__ import annotations

import argparse
import io
import logging
from pathlib import Path

from atreid.config import load_params
from atreid.errors import AtreidError
from atreid.io import atomic_write_text

log = logging.getLogger("atreid.params")


def _merge_into(target, override) -> None:
    """Deep-merge ``override`` into the round-trip mapping ``target`` in place (keeps comments)."""
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge_into(target[key], value)
        else:
            target[key] = value


def checked_params(*paths: str | Path) -> dict:
    """The merged params files, validated against the schema and the benchmark registry."""
    # start-up: the registry imports every benchmark module (pandas), only when the verb runs
    from atreid.data.benchmarks import check_params_benchmarks

    params = load_params(*paths)
    check_params_benchmarks(params, " + ".join(str(p) for p in paths))
    return params


def run_apply_preset(args: argparse.Namespace) -> None:
    """Write params.yaml deep-merged with a preset, keeping params.yaml's comments.

    Snakemake takes presets with ``--configfile``; DVC reads params.yaml only, so a DVC
    run of the paper recipe first applies the preset to params.yaml (commit it on a branch).
    """
    # start-up: ruamel loaded only when this runs
    from ruamel.yaml import YAML

    params_path, preset_path = Path(args.params), Path(args.preset)
    checked_params(params_path, preset_path)  # validate the merged result before writing anything
    yaml = YAML()
    yaml.preserve_quotes = True
    params = yaml.load(params_path.read_text())
    preset = yaml.load(preset_path.read_text()) or {}
    if not isinstance(preset, dict):
        raise AtreidError(f"{preset_path}: expected a mapping of settings")
    _merge_into(params, preset)
    buffer = io.StringIO()
    yaml.dump(params, buffer)
    atomic_write_text(params_path, buffer.getvalue())
    log.info("applied %s to %s", preset_path, params_path)


def run_check(args: argparse.Namespace) -> None:
    checked_params(*args.files)
    print(f"ok: {' + '.join(args.files)}")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("apply-preset", help="merge a preset (e.g. presets/paper.yaml) into params.yaml")
    p.add_argument("preset")
    p.add_argument("--params", default="params.yaml")
    p.set_defaults(func=run_apply_preset)

    p = subparsers.add_parser("check-params", help="validate params files (merged in order)")
    p.add_argument("files", nargs="*", default=["params.yaml"])
    p.set_defaults(func=run_check)
