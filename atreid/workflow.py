"""What the Snakefile runs before it reads params.yaml (kept here so the Snakefile stays wiring).

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
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from atreid.config import read_params_file
from atreid.errors import AtreidError

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
    from atreid.data.archive import check_source_outside

    check_source_outside(source, replaced, setting=f"{key} (in {origin})")
    if os.path.exists(source):
        return [source]
    from atreid.commands.data import prepared_source

    if manifest is not None and prepared_source(manifest) == source:
        warn(f"{key}: {source} not found; keeping the copy imported from it earlier ({manifest})")
        return [source]
    raise AtreidError(f"{key}: {source} not found (set in {origin}): put {what} there, or change {key} "
                      f"in {origin}")
