"""``atreid code-deps``: the package code a step runs (what reruns it), and dvc.yaml's code deps."""

from __future__ import annotations

import argparse
import io
import logging
from pathlib import Path

from atreid import code_deps
from atreid.errors import AtreidError
from atreid.io import atomic_write_text

log = logging.getLogger("atreid.code_deps")


def dvc_code_deps(dvc_yaml: Path, params_yaml: Path, *, write: bool) -> list[str]:
    """Compare (or, with ``write``, make) each stage's ``atreid/`` deps in ``dvc_yaml`` to the
    code its Snakemake rules run; returns one line per stage that differs."""
    # start-up: ruamel, yaml loaded only when this runs
    from ruamel.yaml import YAML

    from atreid.config import load_params, resolve_variant

    params = load_params(params_yaml)
    variants = [resolve_variant(params, name, params["seeds"][0]) for name in params["variants"]]
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)  # dvc.yaml's own style
    document = yaml.load(dvc_yaml.read_text(encoding="utf-8"))
    differences = []
    for name, stage in document["stages"].items():
        body = stage.get("do", stage)
        cmd = " ".join(str(body.get("cmd", "")).split())
        if "--allowed-rules" not in cmd:
            continue
        deps = body.setdefault("deps", [])
        have = [dep for dep in deps if isinstance(dep, str) and dep.startswith("atreid/")]
        want = code_deps.stage_code_files(cmd, variants)
        if have == want:
            continue
        missing, extra = sorted(set(want) - set(have)), sorted(set(have) - set(want))
        differences.append(f"stage {name}: " + "; ".join(
            part for part in (f"missing {', '.join(missing)}" if missing else "",
                              f"not run by it {', '.join(extra)}" if extra else "",
                              "order" if not (missing or extra) else "") if part))
        kept = [dep for dep in deps if not (isinstance(dep, str) and dep.startswith("atreid/"))]
        deps[:] = kept + want
    if write and differences:

        buffer = io.StringIO()
        yaml.dump(document, buffer)
        atomic_write_text(dvc_yaml, buffer.getvalue())
    return differences


def run_code_deps(args: argparse.Namespace) -> None:
    if args.dvc:
        differences = dvc_code_deps(Path(args.dvc_yaml), Path(args.params), write=not args.check)
        for line in differences:
            print(line)
        if differences and args.check:
            raise AtreidError(f"{args.dvc_yaml}: the code deps of {len(differences)} stage(s) differ from the code "
                              "their rules run; run `atreid code-deps --dvc` to rewrite them")
        if not args.check:
            log.info("%s: %s", args.dvc_yaml, f"rewrote {len(differences)} stage(s)" if differences else "up to date")
        return
    if not args.verb:
        raise AtreidError("give a verb (e.g. `atreid code-deps train --variant full`) or --dvc")

    settings = None
    if args.variant:
        # start-up: yaml loaded only when this runs
        from atreid.config import load_params, resolve_variant

        params = load_params(Path(args.params))
        if args.variant not in params["variants"]:
            raise AtreidError(f"{args.params}: no variant {args.variant!r}; valid: {', '.join(params['variants'])}")
        settings = resolve_variant(params, args.variant, params["seeds"][0])
    try:
        prints = code_deps.step_fingerprints(args.verb, settings)
    except KeyError as exc:
        raise AtreidError(str(exc.args[0])) from None
    for path, value in prints.items():
        print(f"{path}@{value}")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("code-deps", help="the package files a step runs, with the fingerprints that rerun "
                                                "it; --dvc: check or rewrite dvc.yaml's code deps")
    p.add_argument("verb", nargs="?", help="an atreid verb (train, evaluate, table, ...)")
    p.add_argument("--variant", default=None, help="a variant of params.yaml: leave out what its switches turn off")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--dvc", action="store_true", help="rewrite the atreid/ deps of every dvc.yaml stage")
    p.add_argument("--check", action="store_true", help="with --dvc: only check (exit 2 when they differ)")
    p.add_argument("--dvc-yaml", default="dvc.yaml")
    p.set_defaults(func=run_code_deps)
