"""Record in dvc.lock what a Snakemake run built, so that DVC and Snakemake agree.

Without it, a pipeline built by `snakemake` (`make run`) has no dvc.lock: `dvc status`
hashes everything and reports every stage changed, and `dvc repro` reruns it all. The
Snakefile's ``onsuccess`` handler calls :func:`record_snakemake_run` after every real run
(Snakemake calls no handler for `-n`, nor when there was nothing to do). It lists the
outputs of every job in the run's DAG: at the end of a successful run Snakemake holds
each of them current for the settings it ran with. It then hands the list to
`atreid dvc-sync`, which commits the DVC stages whose outputs are all in it, like
`dvc commit --force --no-relink <stages>`: the files, and the modification times
Snakemake judges by, stay as Snakemake wrote them. Stages of a partial run's other
targets are left as they were.

Skipped, with one line on stderr, when the run's settings are not params.yaml's alone
(`--config`, `--configfile`: DVC reads params.yaml only), when dvc is not installed or
the folder is no DVC repository. Skipped silently inside a DVC stage (`dvc repro` sets
DVC_STAGE for the commands it runs and writes dvc.lock itself).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterable

PREFIX = "dvc.lock"
EMPTY_FOLDER_MD5 = "d751713988987e9331980363e24189ce.dir"  # DVC's digest of an empty folder


def skip_reason(workflow, root: Path) -> str | None:
    """Why this run is not recorded ('' for silently), or None to record it."""
    if os.environ.get("DVC_STAGE"):
        return ""  # a `dvc repro` stage: DVC records it
    settings = workflow.config_settings
    others = [f for f in settings.configfiles if Path(f).resolve() != (root / "params.yaml").resolve()]
    if settings.config or others:
        return "this run's settings are not params.yaml's alone (--config/--configfile), and DVC reads params.yaml"
    if not (root / "dvc.yaml").is_file() or not (root / ".dvc").is_dir():
        return "not a DVC repository (no dvc.yaml or .dvc/ here)"
    if importlib.util.find_spec("dvc") is None:
        return "dvc is not installed"
    return None


def record_snakemake_run(workflow) -> None:
    """The Snakefile's ``onsuccess``: commit the DVC stages whose outputs this run holds current."""
    root = Path.cwd()
    reason = skip_reason(workflow, root)
    if reason is not None:
        if reason:
            print(f"{PREFIX}: not updated: {reason}", file=sys.stderr)
        return
    current = sorted({os.path.normpath(str(path)) for job in workflow.dag.jobs if built_from_current_inputs(workflow, job)
                      for path in job.output})
    with tempfile.NamedTemporaryFile("w", prefix="atreid-dvc-sync.", suffix=".txt", delete=False) as f:
        f.write("".join(f"{path}\n" for path in current))
    try:
        result = subprocess.run([sys.executable, "-m", "atreid", "dvc-sync", "--current", f.name],
                                cwd=root, capture_output=True, text=True)
    finally:
        os.unlink(f.name)
    for line in (result.stdout + result.stderr).splitlines():
        print(line, file=sys.stderr)
    if result.returncode != 0 and f"{PREFIX}:" not in result.stdout + result.stderr:  # it crashed
        print(f"{PREFIX}: not updated (atreid dvc-sync exited with {result.returncode}); "
              f"`dvc status` will show the stages this run built as changed", file=sys.stderr)


def built_from_current_inputs(workflow, job) -> bool:
    """Whether ``job``'s outputs were built from what the run has now: the job ran in this
    run, or Snakemake found it up to date and its own record of each output shows the
    params (the settings and the code fingerprints of atreid/code_deps.py) it has now.

    A job that needed to run but did not (``--allowed-rules``, ``--rerun-triggers mtime``,
    ``--touch``), or whose outputs Snakemake holds no record of (copied in, `dvc checkout`),
    is not: its DVC stages keep their old dvc.lock entries, so `dvc status` still reports
    them when they are stale."""
    dag, persistence = workflow.dag, workflow.persistence
    if dag.finished(job) and not workflow.touch:
        return True
    if dag.needrun(job) or not job.output:
        return False
    for path in job.output:
        if persistence.metadata(path) is None:
            return False
    # code_changed() without a file is a generator over the changed outputs (always truthy).
    return not (persistence.params_changed(job) or any(persistence.code_changed(job)))


def covered(path: str, current: set[str]) -> bool:
    """Whether ``path`` exists and is current: listed, inside a listed folder, or a folder
    of which every file is."""
    if not os.path.lexists(path):
        return False
    parts = Path(path).parts
    if any(os.path.join(*parts[:n]) in current for n in range(1, len(parts) + 1)):
        return True
    if not os.path.isdir(path):
        return False
    files = [os.path.join(top, name) for top, _, names in os.walk(path) for name in names]
    return bool(files) and all(os.path.normpath(file) in current for file in files)


def complete_stages(stages: Iterable, current: set[str], root: str) -> tuple[list, list]:
    """The pipeline stages whose outputs are all current, and the others."""
    complete, incomplete = [], []
    for stage in stages:
        if stage.frozen or not stage.outs:
            continue
        if stage.is_data_source:  # a .dvc file (data.dvc: data/raw): cached when unchanged, never re-hashed
            for out in stage.outs:
                # A fresh clone has no data/raw (the folder for your own files): the empty
                # folder data.dvc records, made here so that it is cached and `dvc status` clean.
                if not os.path.lexists(out.fs_path) and getattr(out.hash_info, "value", "") == EMPTY_FOLDER_MD5:
                    os.makedirs(out.fs_path, exist_ok=True)
            if all(os.path.lexists(out.fs_path) for out in stage.outs) \
                    and not any(out.changed_checksum() for out in stage.outs):
                complete.append(stage)
            continue
        outs = [os.path.relpath(out.fs_path, root) for out in stage.outs]
        (complete if all(covered(out, current) for out in outs) else incomplete).append(stage)
    return complete, incomplete


def commit_stages(stages: list) -> None:
    """What `dvc commit --force --no-relink <stage>` does for each stage, with dvc.lock
    written once per file: a `Repo.commit` per stage re-resolves the whole dvc.yaml and
    rewrites the lock each time (~1.7 s a stage, a minute for the demo's 34)."""
    by_file: dict[str, list] = {}
    for stage in stages:
        by_file.setdefault(stage.dvcfile.path, []).append(stage)
    for group in by_file.values():
        for stage in group:
            stage.save()
            stage.commit(relink=False)
        group[0].dvcfile.dump_stages(group, update_pipeline=False)


def run_dvc_sync(args: argparse.Namespace) -> None:
    # start-up: dvc, tqdm loaded only when this runs
    from dvc.exceptions import DvcException, NotDvcRepoError
    from dvc.repo import Repo, lock_repo

    current = {os.path.normpath(line) for line in Path(args.current).read_text().splitlines() if line}
    try:
        with Repo(".") as repo, lock_repo(repo):
            root = repo.root_dir
            os.chdir(root)
            complete, incomplete = complete_stages(repo.index.stages, current, root)
            commit_stages(complete)
    except NotDvcRepoError:
        print(f"{PREFIX}: not updated: not a DVC repository", file=sys.stderr)
        return
    except DvcException as exc:
        print(f"{PREFIX}: not updated: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    except Exception as exc:  # noqa: BLE001 -- the last step of a run that succeeded: one line, not a traceback
        print(f"{PREFIX}: not updated ({type(exc).__name__}: {exc}); `dvc status` will show the stages this run "
              "built as changed; `dvc commit <stage>` records one by hand", file=sys.stderr)
        raise SystemExit(1) from None
    names = [stage.addressing for stage in complete]
    line = f"{PREFIX}: recorded {len(names)} DVC stage(s) this run built or found current"
    if incomplete:
        line += f"; left as they were: {len(incomplete)} ({', '.join(s.addressing for s in incomplete[:6])}"
        line += ", ...)" if len(incomplete) > 6 else ")"
    print(line, file=sys.stderr)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("dvc-sync", help="record in dvc.lock the DVC stages whose outputs are all current "
                                               "(the Snakefile runs it after every snakemake run)")
    p.add_argument("--current", required=True,
                   help="file listing the outputs Snakemake holds current, one path a line")
    p.set_defaults(func=run_dvc_sync)
