"""Atomic output helpers and progress reporting.

Every file the pipeline writes goes through these helpers: the content is written to a
temporary sibling and moved into place with ``os.replace``, so a crash (even kill -9)
never leaves a truncated output that a later step or Snakemake would trust.

Temporary siblings are named ``.{name}.{8 random characters}{suffix}`` (``.tmp`` for
files, ``.partial`` for folders) and are created with the modes a plain ``open`` or
``mkdir`` would give (0666 / 0777 less the umask), not ``mkstemp``'s private 0600 / 0700:
on a shared machine the results stay as readable as the user's umask says. A kill -9
can still leave a temporary sibling behind; :func:`remove_stale_temporaries` removes a
target's own leftovers at the start of the next run of the step that writes it.
"""

from __future__ import annotations

import contextlib
import io
import errno
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import sys
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator, TypeVar


from atreid.errors import AtreidError

T = TypeVar("T")

log = logging.getLogger("atreid.io")

# The random part of a temporary sibling's name: 8 characters, as tempfile's names.
_RANDOM_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789_"
_RANDOM_LENGTH = 8
# Suffixes of atreid's temporary siblings: atomic files, atomic folders, downloads.
TEMP_SUFFIXES = (".tmp", ".partial", ".download")
# The old copy of a folder that atomic_output_dir is replacing (complete, never a leftover to delete).
SWAPPED_OUT_SUFFIX = ".previous"


def _temp_name(path: Path, suffix: str) -> Path:
    random_part = "".join(secrets.choice(_RANDOM_ALPHABET) for _ in range(_RANDOM_LENGTH))
    return path.parent / f".{path.name}.{random_part}{suffix}"


def _temp_sibling(path: Path, suffix: str = ".tmp") -> Path:
    """Create an empty temporary file beside ``path`` with mode 0666 less the umask."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        name = _temp_name(path, suffix)
        try:
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return name
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(path.parent))


def temp_dir_sibling(path: str | os.PathLike, suffix: str = ".partial") -> Path:
    """Create an empty temporary folder beside ``path`` with mode 0777 less the umask
    (``tempfile.mkdtemp`` would make it 0700 whatever the umask)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        name = _temp_name(path, suffix)
        try:
            os.mkdir(name, 0o777)
        except FileExistsError:
            continue
        return name
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(path.parent))


def stale_temporaries(target: str | os.PathLike, suffixes: Iterable[str] = TEMP_SUFFIXES) -> list[Path]:
    """The temporary siblings an interrupted atomic write of ``target`` may have left:
    ``.{target name}.{8 random characters}{suffix}`` in ``target``'s folder, and nothing
    else (not another target's, not a user's file)."""
    target = Path(target)
    folder = target.parent
    if not folder.is_dir():
        return []
    pattern = re.compile(rf"\.{re.escape(target.name)}\.[{_RANDOM_ALPHABET}]{{{_RANDOM_LENGTH}}}"
                         rf"(?:{'|'.join(re.escape(s) for s in suffixes)})")
    return sorted(folder / entry.name for entry in os.scandir(folder) if pattern.fullmatch(entry.name))


def remove_stale_temporaries(target: str | os.PathLike, suffixes: Iterable[str] = TEMP_SUFFIXES) -> list[Path]:
    """Remove what an interrupted (killed) atomic write of ``target`` left beside it.

    Call it at the start of the step that writes ``target`` (the only writer of that
    target, so no live write is disturbed). Only names matching ``target``'s own
    temporary pattern (:func:`stale_temporaries`) are touched: files and links are
    unlinked, folders removed with their contents (links inside are not followed).
    Returns the removed paths; each is logged.
    """
    removed = []
    for leftover in stale_temporaries(target, suffixes):
        try:
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover)
            else:
                leftover.unlink()
        except FileNotFoundError:
            continue
        log.info("removed %s, left by an interrupted earlier run", leftover)
        removed.append(leftover)
    return removed


# OSErrors that mean "this disk or folder cannot take the output": one line, not a traceback.
_WRITE_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EROFS, errno.EACCES, errno.EPERM}


def write_failure(path: str | os.PathLike, exc: OSError) -> AtreidError:
    """The one-line error for an ``OSError`` while writing ``path`` (full disk, quota,
    read-only or forbidden folder), naming the file and the fix."""
    path = Path(path)
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        fix = f"free space on the disk holding {path.parent} (or point the output elsewhere) and rerun"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = f"make {path.parent} writable and rerun"
    else:
        fix = "check the disk and rerun"
    return AtreidError(f"{path}: could not be written ({reason}); nothing was changed there; {fix}")


def atomic_write_stream(path: str | os.PathLike, fill: Callable[[BinaryIO], Any], *,
                        before_replace: Callable[[], Any] | None = None) -> None:
    """Write ``path`` atomically from ``fill(file)``, which writes the content into an open file.

    The content goes straight into a temporary sibling (no copy of it in memory: a ~3 GB
    checkpoint costs no 3 GB buffer), is fsynced, then ``before_replace()`` runs (if given)
    and the sibling is moved over ``path``. An error in ``fill`` or ``before_replace``, or an
    ``OSError`` (full disk, quota, permissions), removes the temporary sibling and leaves
    ``path`` as it was; an ``OSError`` is raised as a one-line :class:`AtreidError`.
    """
    path = Path(path)
    tmp: Path | None = None
    try:
        tmp = _temp_sibling(path)
        with open(tmp, "wb") as f:
            fill(f)
            f.flush()
            os.fsync(f.fileno())
        if before_replace is not None:
            before_replace()
        os.replace(tmp, path)
    except BaseException as exc:
        _discard_and_raise(tmp, path, exc)


def _discard_and_raise(tmp: Path | None, path: Path, exc: BaseException) -> None:
    """After a failed atomic write: remove the temporary sibling, then raise a disk error
    as one line naming ``path`` (:func:`write_failure`), anything else as it was."""
    if tmp is not None:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
    os_error = _os_error_in(exc)
    if os_error is not None:
        raise write_failure(path, os_error) from None
    raise exc


def _os_error_in(exc: BaseException) -> OSError | None:
    """``exc`` if it is an ``OSError``, else the one it was raised from: ``torch.save``
    turns the ``OSError`` of a full disk, raised by the file's ``write``, into a
    ``RuntimeError`` whose context it is."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, OSError):
            return exc
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def atomic_write_with(path: str | os.PathLike, write: Callable[[Path], Any]) -> None:
    """Write ``path`` atomically by ``write(temporary_path)``, for writers that take a file
    name rather than an open file (an ONNX program's ``save``). The temporary sibling is
    created first, with mode 0666 less the umask, so the written file follows the umask
    like every other output; on any error it is removed and ``path`` is left as it was."""
    path = Path(path)
    tmp: Path | None = None
    try:
        tmp = _temp_sibling(path)
        write(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        _discard_and_raise(tmp, path, exc)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary sibling + fsync + rename), see
    :func:`atomic_write_stream`."""
    atomic_write_stream(path, lambda f: f.write(data))


def keep_previous(path: str | os.PathLike, previous: str | os.PathLike) -> bool:
    """Make ``previous`` hold what ``path`` holds now, atomically, before ``path`` is rewritten.

    A hard link under a temporary name is moved over ``previous``, so at every moment both
    names hold a complete file; where the filesystem has no hard links ``path`` is renamed
    to ``previous`` (``path`` is then briefly absent). Returns False when ``path`` does not
    exist. An ``OSError`` is raised as a one-line :class:`AtreidError`.
    """
    path, previous = Path(path), Path(previous)
    if not path.is_file():
        return False
    # A write killed after the link below and before ``path`` was replaced leaves both names
    # on one file. ``previous`` then already holds what ``path`` holds; and linking again
    # would not help: renaming a name over another name of the same file does nothing, so
    # the temporary link would stay (keeping a ~3 GB checkpoint alive once ``previous`` moves on).
    if previous.exists() and os.path.samefile(path, previous):
        return True
    tmp = _temp_name(previous, ".tmp")
    try:
        try:
            os.link(path, tmp)
        except OSError:
            os.replace(path, previous)
        else:
            os.replace(tmp, previous)
    except OSError as exc:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise write_failure(previous, exc) from None
    return True


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted JSON atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def atomic_write_csv(path: str | os.PathLike, frame: "Any") -> None:
    """Write a pandas DataFrame as CSV (no index column) atomically."""
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, lineterminator="\n")
    atomic_write_text(path, buffer.getvalue())


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> None:
    """``torch.save`` to ``path`` atomically."""
    # start-up: numpy, torch, tqdm loaded only when this runs
    import torch  # here, not at the top: the data steps import this module and need no torch

    atomic_write_stream(path, lambda f: torch.save(obj, f))


def recover_interrupted_swap(path: str | os.PathLike) -> None:
    """Finish what a swap of :func:`atomic_output_dir` killed halfway left behind.

    The old copy is moved aside (``.{name}.XXXXXXXX.previous``) before the new one is
    moved in. Killed between the two renames, ``path`` is missing and the old copy is
    still complete: put it back. Killed after the second rename, the aside copy is
    merely stale: delete it. (Not a :data:`TEMP_SUFFIXES` suffix, so
    :func:`remove_stale_temporaries` never deletes a good copy.)
    """
    path = Path(path)
    aside = stale_temporaries(path, (SWAPPED_OUT_SUFFIX,))
    for candidate in aside:
        if not (path.exists() or path.is_symlink()):
            os.replace(candidate, path)
            log.warning("restored %s from %s (a swap of the previous run was interrupted)", path, candidate.name)
        elif candidate.is_dir() and not candidate.is_symlink():
            shutil.rmtree(candidate, ignore_errors=True)
        else:
            candidate.unlink(missing_ok=True)


def install_dir(built: str | os.PathLike, path: str | os.PathLike) -> None:
    """Move the complete folder ``built`` (a sibling of ``path``) to ``path``: an old
    ``path`` is first moved aside (:data:`SWAPPED_OUT_SUFFIX`, which
    :func:`recover_interrupted_swap` puts back after a kill) and deleted only once the new
    one is in place; a failed move puts it back."""
    built, path = Path(built), Path(path)
    old = None
    if path.exists() or path.is_symlink():
        old = _temp_name(path, SWAPPED_OUT_SUFFIX)
        os.replace(path, old)
    try:
        os.replace(built, path)
    except BaseException:
        if old is not None:
            os.replace(old, path)
        raise
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_output_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Build a directory under a temporary sibling name and move it into place on success.

    On any exception the temporary directory is removed and ``path`` is left as it was
    (absent if it did not exist), so no partial dataset is ever visible. An old ``path``
    is first moved aside and deleted only once the new one is in place. A full disk,
    quota or forbidden folder is raised as one :class:`AtreidError` line naming ``path``.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        recover_interrupted_swap(path)
        tmp = temp_dir_sibling(path)
    except OSError as exc:
        if exc.errno in _WRITE_ERRNOS:
            raise write_failure(path, exc) from None
        raise
    try:
        yield tmp
        install_dir(tmp, path)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError) and exc.errno in _WRITE_ERRNOS:
            raise write_failure(path, exc) from None
        raise


def progress(iterable: Iterable[T], *, total: int | None = None, desc: str = "", unit: str = "it") -> Iterable[T]:
    """Wrap ``iterable`` in a tqdm progress bar on stderr (quiet when ATREID_QUIET is set)."""
    # start-up: tqdm loaded only when this runs
    from tqdm import tqdm

    disable = bool(os.environ.get("ATREID_QUIET"))
    return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr, disable=disable,
                mininterval=1.0, dynamic_ncols=True)


def settings_sha256(settings: Any) -> str:
    """The sha256 hex digest of JSON-able settings (key order does not matter)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def file_sha256(path: str | Path, *, desc: str | None = None) -> str:
    """The sha256 hex digest of a file, read in 1 MiB blocks (a progress bar if ``desc``:
    an archive of many GiB takes minutes)."""
    size = 1 << 20
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        blocks: Iterable[bytes] = iter(lambda: f.read(size), b"")
        if desc:
            blocks = progress(blocks, total=max(1, -(-os.path.getsize(path) // size)), desc=desc, unit="MiB")
        for block in blocks:
            digest.update(block)
    return digest.hexdigest()
