"""What the Snakefile runs before it reads params.yaml (kept here so the Snakefile stays wiring).

- :func:`check_params_files`: Snakemake's own YAML reading keeps the last of a duplicated
  key and reports a syntax error without file or line, so every params file is first
  read strictly (file, line, key). A ``--configfile`` that is not YAML at all stops
  Snakemake before the Snakefile is read; ``atreid check-params params.yaml <file>``
  names its line.
- :func:`hint_stale_locks`: a killed snakemake leaves its locks in ``.snakemake/locks``
  and the next run stops with a LockException. Locks present when this run started and
  still there when it ends are not its own: say what to run (on stderr, after
  Snakemake's own message).
"""

from __future__ import annotations

import atexit
import sys
from pathlib import Path
from typing import Iterable

from atreid.config import read_yaml
from atreid.errors import AtreidError

LOCK_HINT = ("hint: .snakemake/locks holds a lock of an earlier snakemake. If no other snakemake is running in "
             "this folder (the last one was killed or the machine went down), run `snakemake --unlock` then rerun.")


def check_params_files(paths: Iterable[str | Path]) -> None:
    """Exit with one line naming file, line and key when a params file is not strict YAML."""
    for path in paths:
        try:
            read_yaml(path)
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
