"""Import of a user's copy of a dataset: copy or download it, verify its sha256, extract it safely.

Most re-identification benchmarks (AT-USTC above all) are released by signed agreement or
from a manual download page, so the pipeline never fetches them itself: the user brings
an archive, a folder or a URL of a mirror they host, and :func:`import_dataset` turns it
into ``dest/<top folder>/``.

What the import guarantees:

* **Integrity.** The sha256 of the source is checked against ``data.<name>.sha256`` when
  set, else against the digest recorded at the first import (``record``, e.g.
  ``data/atustc/source.json``), else recorded there. An archive's digest is the sha256
  of its bytes. A folder's digest is defined in :func:`sha256_folder`.
* **Safe extraction**, for zip and tar alike (the checks mirror ``tarfile.data_filter``
  but are implemented here, so they do not depend on the Python version): members with
  absolute paths, drive letters or ``..`` components are refused; symbolic links must
  be relative and resolve inside the destination (checked on the link text, again
  against the real file system when the link is created, and once more over the whole
  tree at the end); hard links must point to a file extracted earlier from the same
  archive; device files, FIFOs and other special members are refused. Symbolic links
  are created after every regular file, so no member is ever written through a link.
  Permissions, owners and times of the archive are not applied.
* **Bounded expansion.** What an archive may extract to is capped at
  ``max_expansion`` times its own size (never below :data:`EXPANSION_FLOOR`) and at
  ``max_extracted_gib`` GiB (params.yaml ``data.max_expansion``, ``data.max_extracted_gib``).
  The declared sizes are checked before a member is written (for a zip, all of them
  before anything is written), and the bytes actually written are counted as they are
  written, since declared sizes can lie; either over the limit refuses the archive.
* **Nothing partial.** Extraction and copies go to a temporary sibling of ``dest``
  moved into place only at the end (:func:`atreid.io.atomic_output_dir`); downloads go
  to a temporary file removed afterwards; the record is written, atomically, only after
  success. Any failure (checksum, unsafe member, corrupt archive, too large an expansion,
  interrupted download, Ctrl-C) leaves ``dest`` and ``record`` as they were; the
  temporaries a killed earlier import left beside ``dest`` are removed at the start.
"""

from __future__ import annotations

import datetime
import hashlib
import http.client
import json
import lzma
import math
import os
import posixpath
import re
import shutil
import stat
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Iterator

from atreid.errors import AtreidError
from atreid.io import atomic_output_dir, atomic_write_json, file_sha256, progress, remove_stale_temporaries

CHUNK = 1 << 20  # 1 MiB: hashing, copying and download chunk; the progress bars count these
SUPPORTED_TYPES = ".zip, .tar, .tar.gz/.tgz, .tar.bz2/.tbz2, .tar.xz/.txz (detected by content) or a folder"
URL_SCHEMES = ("http", "https", "file")
DOWNLOAD_TIMEOUT_S = 60
IGNORED_TOP_LEVEL = {"__MACOSX", ".DS_Store"}  # clutter of macOS archivers, ignored when
                                               # looking for a single wrapping folder

# Expansion limits (params.yaml data.max_expansion, data.max_extracted_gib): a real
# dataset of JPEG images barely compresses (ratio ~1); zip bombs reach ~1000x per layer.
DEFAULT_MAX_EXPANSION = 100.0
DEFAULT_MAX_EXTRACTED_GIB = 1024.0
EXPANSION_FLOOR = 16 << 20  # small archives may always extract this much (16 MiB)
GIB = 1 << 30

_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_DRIVE_RE = re.compile(r"^[A-Za-z]:")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_TAR_MODES = {"tar": "r:", "tar.gz": "r:gz", "tar.bz2": "r:bz2", "tar.xz": "r:xz"}
# What reading a damaged archive raises (gzip/bz2 report bad data as OSError).
_READ_ERRORS = (OSError, EOFError, zlib.error, lzma.LZMAError, tarfile.TarError,
                zipfile.BadZipFile, NotImplementedError, ValueError, RuntimeError)


# ---- digests ---------------------------------------------------------------------

def sha256_folder(path: str | os.PathLike) -> str:
    """The digest of a folder's content (what ``import_dataset`` checks for a folder source).

    Definition: the sha256 of a manifest in the format of ``sha256sum``, one line
    ``"<sha256 of the file's bytes, hex>  <relative path>\\n"`` per regular file under the
    folder (symbolic links followed; the relative path uses ``/`` and is encoded with
    ``os.fsencode``), lines sorted by the encoded relative path as bytes. Folders
    themselves, empty folders, permissions and times do not count. The same value is
    given, for names without newline or backslash, by::

        cd FOLDER && find -L . -type f -printf '%P\\0' | LC_ALL=C sort -z \\
            | xargs -0 sha256sum | sha256sum
    """
    root = Path(path)
    manifest = hashlib.sha256()
    for rel, file in _folder_files(root, str(root)):
        manifest.update(_manifest_line(file_sha256(file), rel))
    return manifest.hexdigest()


def _manifest_line(file_digest: str, rel: str) -> bytes:
    return file_digest.encode("ascii") + b"  " + os.fsencode(rel) + b"\n"


def _read_chunks(f: BinaryIO) -> Iterator[bytes]:
    """Chunks of exactly CHUNK bytes (the last one shorter) until end of file."""
    while True:
        chunk = f.read(CHUNK)
        while chunk and len(chunk) < CHUNK:
            more = f.read(CHUNK - len(chunk))
            if not more:
                break
            chunk += more
        if not chunk:
            return
        yield chunk


# ---- the import step -------------------------------------------------------------

def import_dataset(source: str | os.PathLike, dest: Path, *, sha256: str | None, record: Path,
                   expect_top: str | None = None, name: str | None = None,
                   max_expansion: float = DEFAULT_MAX_EXPANSION,
                   max_extracted_gib: float = DEFAULT_MAX_EXTRACTED_GIB) -> dict[str, Any]:
    """Copy or download a dataset, verify its sha256 and extract it into ``dest``.

    Args:
        source: a local archive (zip or tar, plain or gzip/bzip2/xz compressed; the type
            is detected from the content), a local folder (copied, never modified) or an
            ``http://``, ``https://`` or ``file://`` URL of an archive.
        dest: the folder to create (replaced when it exists, only after success).
        sha256: expected digest (64 hex digits), or None to check against / record in
            ``record``. For a folder it is the folder digest of :func:`sha256_folder`.
        record: JSON file ``{source, sha256, kind, size, imported_at}`` written after a
            successful import; when it exists and ``sha256`` is None, the source must
            still have the digest recorded there.
        expect_top: the dataset's top-level folder (e.g. ``"AT-USTC"``). A copy that holds
            it inside one wrapping folder, or holds its content without it, is normalised
            so that ``dest/<expect_top>/`` holds the content.
        name: the dataset's key under ``data:`` in params.yaml, for messages (default:
            the name of the record's folder, e.g. ``atustc`` for data/atustc/source.json).
        max_expansion: an archive may extract to at most this many times its own size
            (at least :data:`EXPANSION_FLOOR` bytes); ``data.max_expansion``.
        max_extracted_gib: and to at most this many GiB; ``data.max_extracted_gib``.

    Returns:
        ``{"source", "kind", "sha256", "bytes", "files", "dest"}``: ``kind`` is ``folder``,
        ``zip``, ``tar``, ``tar.gz``, ``tar.bz2`` or ``tar.xz``; ``bytes`` the size of the
        archive (of all files, for a folder); ``files`` the number of files extracted
        or copied.

    Raises:
        AtreidError: missing source, unknown archive type, checksum mismatch, unsafe or
            corrupt archive, expansion over the limits, failed download, unexpected layout.
    """
    source = os.fspath(source)
    dest = Path(dest)
    record = Path(record)
    name = name or record.parent.name or "<name>"
    expected = _parse_sha256(sha256, name)
    recorded = _read_record(record)
    check = _DigestCheck(expected, recorded, record, name)
    limits = _ExpansionLimits(max_expansion, max_extracted_gib)

    created = _make_dirs(dest.parent)
    remove_stale_temporaries(dest)  # a killed earlier import's .{dest}.*.partial/.download
    try:
        if _URL_RE.match(source):
            summary = _import_url(source, dest, check, expect_top, name, limits)
        else:
            path = Path(source).expanduser()
            if not path.exists():
                raise _missing(source, name)
            _check_not_overlapping(path, dest, source)
            if path.is_dir():
                summary = _import_folder(path, source, dest, check, expect_top, name)
            else:
                summary = _import_archive(path, source, source, dest, check, expect_top, name, limits)
    except BaseException:
        for folder in reversed(created):  # leave no empty parent folder we made
            try:
                folder.rmdir()
            except OSError:
                break
        raise

    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    atomic_write_json(record, {"source": source, "sha256": summary["sha256"], "kind": summary["kind"],
                               "size": summary["bytes"], "imported_at": now})
    return summary


class _DigestCheck:
    """Compares a computed digest with the configured or recorded one."""

    def __init__(self, expected: str | None, recorded: dict | None, record: Path, name: str):
        self.expected, self.recorded, self.record, self.name = expected, recorded, record, name

    def __call__(self, label: str, actual: str, what: str = "sha256") -> None:
        if self.expected is not None:
            if actual != self.expected:
                raise AtreidError(
                    f"{label}: {what} mismatch: expected {self.expected} (data.{self.name}.sha256), "
                    f"got {actual}; check that this is the right, complete copy, or correct "
                    f"data.{self.name}.sha256 in params.yaml")
        elif self.recorded is not None and actual != self.recorded["sha256"]:
            when = self.recorded.get("imported_at", "?")
            raise AtreidError(
                f"{label}: {what} {actual} differs from {self.recorded['sha256']} recorded in "
                f"{self.record} at the first import ({when}): the source changed since; the previous "
                f"copy is kept. Put the recorded copy back and rerun, or accept this one: "
                f"rm {self.record} && snakemake --cores all (or set data.{self.name}.sha256)")


class _ExpansionLimits:
    """How much an archive may extract to (see the module docstring, *Bounded expansion*)."""

    def __init__(self, max_expansion: float, max_extracted_gib: float):
        for key, value, ok, bound in (("max_expansion", max_expansion, lambda v: v >= 1, "at least 1"),
                                      ("max_extracted_gib", max_extracted_gib, lambda v: v > 0, "above 0")):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) \
                    or not ok(value):
                raise AtreidError(f"data.{key}: {value!r} must be a number {bound}; fix it in params.yaml")
        self.max_expansion = float(max_expansion)
        self.max_extracted_gib = float(max_extracted_gib)

    def allowed(self, archive_bytes: int) -> tuple[int, str]:
        """The byte limit for an archive of ``archive_bytes`` and the setting that sets it."""
        by_ratio = max(int(self.max_expansion * archive_bytes), EXPANSION_FLOOR)
        by_size = int(self.max_extracted_gib * GIB)
        if by_ratio <= by_size:
            return by_ratio, f"data.max_expansion (now {self.max_expansion:g} times the archive's size)"
        return by_size, f"data.max_extracted_gib (now {self.max_extracted_gib:g})"


def _size_text(n: int) -> str:
    for unit, scale in (("GiB", GIB), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def _parse_sha256(value: str | None, name: str) -> str | None:
    if value is None:
        return None
    digest = str(value).strip().lower()
    if digest.startswith("sha256:"):
        digest = digest[len("sha256:"):]
    if not _SHA256_RE.match(digest):
        raise AtreidError(f"data.{name}.sha256: {value!r} is not a sha256 (64 hexadecimal digits); "
                          "fix it in params.yaml or set it to null")
    return digest


def _read_record(record: Path) -> dict | None:
    if not record.exists():
        return None
    try:
        data = json.loads(record.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or not _SHA256_RE.match(str(data.get("sha256", ""))):
            raise ValueError("no valid 'sha256' field")
    except (OSError, ValueError) as exc:
        raise AtreidError(f"{record}: not a valid import record ({exc}); delete it to record the "
                          "source again at the next import") from None
    return data


def _missing(source: str, name: str) -> AtreidError:
    return AtreidError(f"{source}: no such file or folder; put your copy there or set "
                       f"data.{name}.source in params.yaml")


def _make_dirs(folder: Path) -> list[Path]:
    """``mkdir -p`` that returns the folders it created, outermost first."""
    missing: list[Path] = []
    current = folder
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    folder.mkdir(parents=True, exist_ok=True)
    return list(reversed(missing))


def check_source_outside(source: str | os.PathLike, folders: Iterable[str | os.PathLike], *,
                         setting: str = "the source") -> None:
    """Refuse a local ``source`` that lies inside one of ``folders`` (or is one of them):
    the folders an import replaces or empties (the destination, its staging folder), so
    that the import would delete the user's copy. URLs and ``synthetic`` are never inside.
    Checked before anything is touched; the paths need not exist yet."""
    source = os.fspath(source)
    if source == "synthetic" or _URL_RE.match(source):
        return
    src = Path(source).expanduser().resolve()
    for folder in folders:
        out = Path(folder).resolve()
        if src == out or out in src.parents:
            raise AtreidError(f"{source}: lies inside {folder}, which the import replaces; move your copy "
                              f"elsewhere and set {setting} to its new place")


def _check_not_overlapping(path: Path, dest: Path, source: str) -> None:
    check_source_outside(source, [dest])
    src, out = path.resolve(), dest.resolve()
    if path.is_dir() and (src == out.parent or src in out.parents):
        raise AtreidError(f"{source}: the destination {dest} lies inside this folder, so it would be "
                          "copied into itself; move your copy elsewhere or change data.dir")


# ---- sources ---------------------------------------------------------------------

def _import_folder(path: Path, source: str, dest: Path, check: _DigestCheck,
                   expect_top: str | None, name: str) -> dict[str, Any]:
    files = _folder_files(path, source)
    if not files:
        raise AtreidError(f"{source}: the folder holds no files; point data.{name}.source at your copy")
    manifest = hashlib.sha256()
    total = 0
    with atomic_output_dir(dest) as tmp:
        try:
            for rel, file in progress(files, total=len(files), desc=f"copy {path.name}", unit="file"):
                target = tmp / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                digest = hashlib.sha256()
                with open(file, "rb") as src, open(target, "xb") as out:
                    for chunk in _read_chunks(src):
                        digest.update(chunk)
                        out.write(chunk)
                        total += len(chunk)
                manifest.update(_manifest_line(digest.hexdigest(), rel))
        except OSError as exc:
            raise AtreidError(f"{source}: copying into {dest} failed ({exc}); check free space and "
                              "permissions") from None
        actual = manifest.hexdigest()
        check(source, actual, "folder digest")
        if expect_top:
            _normalise_top(tmp, expect_top, source, name)
    return {"source": source, "kind": "folder", "sha256": actual, "bytes": total,
            "files": len(files), "dest": str(dest)}


def _folder_files(root: Path, label: str) -> list[tuple[str, Path]]:
    """Regular files under ``root`` as (relative POSIX path, path), sorted by encoded path.

    Symbolic links are followed (a link to a folder that contains it is refused);
    broken links and special files (FIFOs, sockets, devices) are refused.
    """
    found: list[tuple[str, Path]] = []

    def walk(folder: Path, rel: str, ancestors: frozenset[str]) -> None:
        with os.scandir(folder) as entries:
            for entry in entries:
                entry_rel = f"{rel}{entry.name}"
                entry_path = Path(entry.path)
                try:
                    st = entry_path.stat()  # follows links
                except OSError as exc:
                    raise AtreidError(f"{entry_path}: cannot read it ({exc.strerror or exc}) while "
                                      f"importing {label}; fix or remove it") from None
                if stat.S_ISDIR(st.st_mode):
                    real = os.path.realpath(entry_path)
                    if real in ancestors:
                        raise AtreidError(f"{entry_path}: symbolic link loop in {label}; remove the link")
                    walk(entry_path, entry_rel + "/", ancestors | {real})
                elif stat.S_ISREG(st.st_mode):
                    found.append((entry_rel, entry_path))
                else:
                    raise AtreidError(f"{entry_path}: not a regular file or folder (FIFO, socket or "
                                      f"device) in {label}; remove it")

    walk(root, "", frozenset({os.path.realpath(root)}))
    found.sort(key=lambda item: os.fsencode(item[0]))
    return found


def _import_url(url: str, dest: Path, check: _DigestCheck, expect_top: str | None,
                name: str, limits: _ExpansionLimits) -> dict[str, Any]:
    parsed = urllib.parse.urlparse(url)
    scheme = parsed.scheme.lower()
    if scheme not in URL_SCHEMES:
        raise AtreidError(f"{url}: unsupported URL scheme {scheme!r} (use {', '.join(URL_SCHEMES)}); "
                          f"or download it yourself and set data.{name}.source to the file")
    if scheme == "file":
        local = Path(urllib.request.url2pathname(parsed.path))
        if not local.is_file():
            raise _missing(url, name)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".download", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        digest, size = _download(url, fd, name)
        check(url, digest)
        return _import_archive(tmp, url, url, dest, check, expect_top, name, limits, digest=digest)
    finally:
        tmp.unlink(missing_ok=True)


def _download(url: str, fd: int, name: str) -> tuple[str, int]:
    """Stream ``url`` into the open file ``fd``; returns (sha256, size)."""
    fix = f"check the URL and your network, or download it yourself and set data.{name}.source to the file"
    digest = hashlib.sha256()
    size = 0
    with os.fdopen(fd, "wb") as out:
        try:
            response = urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S)
        except urllib.error.HTTPError as exc:
            raise AtreidError(f"{url}: download failed (HTTP {exc.code} {exc.reason}); {fix}") from None
        except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", exc)
            raise AtreidError(f"{url}: download failed ({reason}); {fix}") from None
        with response:
            length_header = response.headers.get("Content-Length")
            length = int(length_header) if length_header and length_header.isdigit() else None
            total = max(1, math.ceil(length / CHUNK)) if length is not None else None
            label = posixpath.basename(urllib.parse.urlparse(url).path) or url
            try:
                for chunk in progress(_read_chunks(response), total=total, desc=f"download {label}",
                                      unit="MiB"):
                    out.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
            except (OSError, http.client.HTTPException) as exc:
                raise AtreidError(f"{url}: download interrupted after {size} bytes ({exc!r}); "
                                  f"{fix}") from None
        if length is not None and size != length:
            raise AtreidError(f"{url}: download interrupted: got {size} of {length} bytes; {fix}")
        out.flush()
        os.fsync(out.fileno())
    return digest.hexdigest(), size


def detect_archive(path: str | os.PathLike) -> str | None:
    """The archive type from the file's content: zip, tar, tar.gz, tar.bz2, tar.xz or None."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(tarfile.BLOCKSIZE)
    if head.startswith(b"\x1f\x8b"):
        return "tar.gz"
    if head.startswith(b"BZh"):
        return "tar.bz2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "tar.xz"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")):
        return "zip"
    if head[257:262] == b"ustar":
        return "tar"
    if not head:
        return None
    if zipfile.is_zipfile(path):  # e.g. a zip with a prefix (self-extracting)
        return "zip"
    try:
        if tarfile.is_tarfile(path):  # old (v7) tar without the ustar magic
            return "tar"
    except _READ_ERRORS:
        pass
    return None


def _import_archive(path: Path, source: str, label: str, dest: Path, check: _DigestCheck,
                    expect_top: str | None, name: str, limits: _ExpansionLimits,
                    digest: str | None = None) -> dict[str, Any]:
    try:
        kind = detect_archive(path)
        if kind is not None and digest is None:
            digest = file_sha256(path, desc=f"sha256 {path.name}")
            check(label, digest)
    except OSError as exc:
        raise AtreidError(f"{label}: cannot read it ({exc.strerror or exc}); check the file and its "
                          "permissions") from None
    if kind is None:
        raise AtreidError(f"{label}: not a supported archive (supported: {SUPPORTED_TYPES}); extract "
                          f"it yourself and set data.{name}.source to the folder")
    assert digest is not None
    size = path.stat().st_size
    with atomic_output_dir(dest) as tmp:
        extractor = _Extractor(tmp, label, name, *limits.allowed(size))
        try:
            if kind == "zip":
                _extract_zip(path, extractor)
            else:
                _extract_tar(path, _TAR_MODES[kind], extractor)
            extractor.finish()
        except OSError as exc:
            raise AtreidError(f"{label}: extracting into {dest} failed ({exc}); check free space and "
                              "permissions") from None
        if extractor.files == 0:
            raise AtreidError(f"{label}: the archive holds no files; check that this is your copy of "
                              f"the dataset (data.{name}.source)")
        if expect_top:
            _normalise_top(tmp, expect_top, label, name)
        _check_links(tmp, label)
    return {"source": source, "kind": kind, "sha256": digest, "bytes": size,
            "files": extractor.files, "dest": str(dest)}


# ---- safe extraction -------------------------------------------------------------

def _unsafe(archive: str, member: str, reason: str) -> AtreidError:
    return AtreidError(f"{archive}: unsafe member {member!r} ({reason}); refusing to extract the "
                       "archive: get a clean copy of the dataset")


def _corrupt(archive: str, member: str | None, exc: BaseException | str) -> AtreidError:
    where = f" at member {member!r}" if member else ""
    return AtreidError(f"{archive}: corrupt or truncated archive{where} ({exc}); copy or download it "
                       "again")


def _split_member_name(archive: str, name: str) -> str | None:
    """The member's normalised relative POSIX path (None for the root entry), or raise."""
    if "\x00" in name:
        raise _unsafe(archive, name, "NUL character in the name")
    if name.startswith(("/", "\\")):
        raise _unsafe(archive, name, "absolute path")
    if _DRIVE_RE.match(name):
        raise _unsafe(archive, name, "drive letter")
    parts = [part for part in re.split(r"[\\/]", name) if part not in ("", ".")]
    if ".." in parts:
        raise _unsafe(archive, name, "'..' path component")
    return "/".join(parts) or None


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


class _Extractor:
    """Writes validated members under ``root``; symbolic links are created last (``finish``)."""

    def __init__(self, root: Path, archive: str, name: str, limit: int = 1 << 62,
                 limit_setting: str = "data.max_expansion"):
        self.root = root
        self.limit, self.limit_setting = limit, limit_setting
        self.declared = 0  # sum of the sizes the archive declares for its members so far
        self.written = 0   # bytes actually written
        self.real_root = os.path.realpath(root)
        self.archive = archive
        self.name = name
        self.kinds: dict[str, str] = {}  # relative path -> "dir" | "file" | "symlink"
        self.pending_links: list[tuple[str, str, str]] = []  # (member, relative path, target)
        self.files = 0

    def _too_large(self, what: str) -> AtreidError:
        return AtreidError(
            f"{self.archive}: {what}, over the limit of {_size_text(self.limit)}; refusing to extract "
            f"it (a decompression bomb, or a genuine copy this large: then raise {self.limit_setting} "
            "in params.yaml)")

    def declare(self, member: str, size: int) -> None:
        """Count a member's declared size before it is written; refuse past the limit."""
        self.declared += max(0, int(size))
        if self.declared > self.limit:
            raise self._too_large(f"its members up to {member!r} declare {_size_text(self.declared)}")

    def path_of(self, member: str) -> str | None:
        return _split_member_name(self.archive, member)

    def _claim(self, member: str, rel: str, kind: str) -> Path:
        """Register ``rel`` (and its parent folders) as ``kind``; refuse type conflicts."""
        parts = rel.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if self.kinds.setdefault(parent, "dir") != "dir":
                raise AtreidError(f"{self.archive}: member {member!r} lies inside {parent!r}, which is "
                                  f"a {self.kinds[parent]}; the archive is damaged: get a clean copy")
        previous = self.kinds.get(rel)
        if previous is not None and previous != kind:
            raise AtreidError(f"{self.archive}: member {member!r} appears as both a {previous} and a "
                              f"{kind}; the archive is damaged: get a clean copy")
        self.kinds[rel] = kind
        return self.root / rel

    def add_dir(self, member: str, rel: str) -> None:
        self._claim(member, rel, "dir").mkdir(parents=True, exist_ok=True)

    def add_file(self, member: str, rel: str, src: BinaryIO) -> None:
        target = self._claim(member, rel, "file")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)  # a repeated member replaces the earlier one (never
                                        # writes into a file hard-linked to it)
        with open(target, "xb") as out:
            while True:
                try:
                    chunk = src.read(CHUNK)
                except _READ_ERRORS as exc:
                    raise _corrupt(self.archive, member, exc) from None
                if not chunk:
                    break
                self.written += len(chunk)
                if self.written > self.limit:
                    raise self._too_large(f"member {member!r} takes the extracted size past "
                                          f"{_size_text(self.written)} (more than declared)")
                out.write(chunk)
        self.files += 1

    def check_hardlink(self, member: str, link: str) -> str:
        """The relative path of a hard link's target, which must be a file extracted earlier."""
        if link.startswith(("/", "\\")) or _DRIVE_RE.match(link) or "\x00" in link:
            raise _unsafe(self.archive, member, f"hard link to absolute path {link!r}")
        parts = [part for part in re.split(r"[\\/]", link) if part not in ("", ".")]
        if ".." in parts:
            raise _unsafe(self.archive, member, f"hard link to {link!r} outside the destination")
        target_rel = "/".join(parts)
        if self.kinds.get(target_rel) != "file":
            raise _unsafe(self.archive, member, f"hard link to {link!r}, which is not a file "
                                                "extracted before it from this archive")
        return target_rel

    def add_hardlink(self, member: str, rel: str, target_rel: str) -> None:
        if target_rel == rel:  # a link to itself: the file is already there
            return
        target = self._claim(member, rel, "file")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)
        try:
            os.link(self.root / target_rel, target)
        except OSError:  # no hard links here: a copy, which counts against the limit
            size = (self.root / target_rel).stat().st_size
            self.declare(member, size)
            self.written += size
            shutil.copyfile(self.root / target_rel, target)
        self.files += 1

    def add_symlink(self, member: str, rel: str, link: str) -> None:
        if not link or "\x00" in link:
            raise _unsafe(self.archive, member, "symbolic link with an empty or invalid target")
        if link.startswith(("/", "\\")) or _DRIVE_RE.match(link):
            raise _unsafe(self.archive, member, f"symbolic link to absolute path {link!r}")
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(rel), link.replace("\\", "/")))
        if resolved == ".." or resolved.startswith("../"):
            raise _unsafe(self.archive, member, f"symbolic link to {link!r} outside the destination")
        self._claim(member, rel, "symlink")
        self.pending_links.append((member, rel, link))

    def finish(self) -> None:
        """Create the symbolic links, each checked against the real file system."""
        for member, rel, link in self.pending_links:
            target = self.root / rel
            if not _within(os.path.realpath(target.parent), self.real_root):
                raise _unsafe(self.archive, member, "its folder resolves outside the destination "
                                                    "through another link")
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_symlink():
                target.unlink()
            os.symlink(link, target)
            if not _within(os.path.realpath(target), self.real_root):
                target.unlink()
                raise _unsafe(self.archive, member, f"symbolic link to {link!r} resolves outside the "
                                                    "destination")


def _extract_zip(path: Path, ex: _Extractor) -> None:
    try:
        zf = zipfile.ZipFile(path)
    except _READ_ERRORS as exc:
        raise _corrupt(ex.archive, None, exc) from None
    with zf:
        infos = zf.infolist()
        for info in infos:  # every declared size, before anything is written
            if not info.is_dir():
                ex.declare(info.filename, info.file_size)
        ex.declared = 0  # counted again below, member by member
        for info in progress(infos, total=len(infos), desc=f"extract {path.name}", unit="file"):
            member = info.filename
            rel = ex.path_of(member)
            mode = info.external_attr >> 16
            kind = stat.S_IFMT(mode)
            if info.flag_bits & 0x1:
                raise AtreidError(f"{ex.archive}: member {member!r} is encrypted; extract the archive "
                                  f"yourself and set data.{ex.name}.source to the folder")
            if info.is_dir() or kind == stat.S_IFDIR:
                if rel is not None:
                    ex.add_dir(member, rel)
                continue
            if rel is None:
                raise _unsafe(ex.archive, member, "empty file name")
            if kind == stat.S_IFLNK:
                if info.file_size > 4096:
                    raise _unsafe(ex.archive, member, "symbolic link with an oversized target")
                try:
                    link = zf.read(info).decode("utf-8")
                except UnicodeDecodeError:
                    raise _unsafe(ex.archive, member, "symbolic link target is not UTF-8") from None
                except _READ_ERRORS as exc:
                    raise _corrupt(ex.archive, member, exc) from None
                ex.add_symlink(member, rel, link)
            elif kind in (0, stat.S_IFREG):
                ex.declare(member, info.file_size)
                try:
                    src = zf.open(info)
                except _READ_ERRORS as exc:
                    raise _corrupt(ex.archive, member, exc) from None
                with src:
                    ex.add_file(member, rel, src)
            else:
                raise _unsafe(ex.archive, member, f"special file (mode {oct(mode)}): device, FIFO or socket")


def _tar_members(tf: tarfile.TarFile, archive: str) -> Iterator[tarfile.TarInfo]:
    last = None
    while True:
        try:
            member = tf.next()
        except _READ_ERRORS as exc:
            raise _corrupt(archive, last, exc) from None
        if member is None:
            return
        last = member.name
        yield member


def _extract_tar(path: Path, mode: str, ex: _Extractor) -> None:
    try:
        tf = tarfile.open(path, mode)
    except _READ_ERRORS as exc:
        raise _corrupt(ex.archive, None, exc) from None
    data_filter = getattr(tarfile, "data_filter", None)
    with tf:
        for member in progress(_tar_members(tf, ex.archive), desc=f"extract {path.name}", unit="file"):
            name = member.name
            rel = ex.path_of(name)
            if member.ischr() or member.isblk() or member.isfifo():
                raise _unsafe(ex.archive, name, "device file or FIFO")
            if not (member.isdir() or member.issym() or member.islnk() or member.isreg()):
                raise _unsafe(ex.archive, name, f"unsupported member type {member.type!r}")
            if rel is None and not member.isdir():
                raise _unsafe(ex.archive, name, "empty file name")
            link_target = None
            if member.issym():
                ex.add_symlink(name, rel, member.linkname)  # checked now, created last
            elif member.islnk():
                link_target = ex.check_hardlink(name, member.linkname)
            if data_filter is not None and rel is not None:
                # Second opinion of Python's own filter (3.11.4+); the checks above already
                # refuse everything it refuses, so behaviour does not depend on the version.
                try:
                    data_filter(member, str(ex.root))
                except tarfile.FilterError as exc:
                    raise _unsafe(ex.archive, name, str(exc)) from None
            if member.isdir():
                if rel is not None:
                    ex.add_dir(name, rel)
            elif link_target is not None:
                ex.add_hardlink(name, rel, link_target)
            elif member.isreg():
                ex.declare(name, member.size)
                try:
                    src = tf.extractfile(member)
                except _READ_ERRORS as exc:
                    raise _corrupt(ex.archive, name, exc) from None
                assert src is not None
                with src:
                    ex.add_file(name, rel, src)
        # tarfile ends its listing silently at a truncated or garbled header: require the
        # end-of-archive block, and read compressed streams to their end (truncation check).
        try:
            tf.fileobj.seek(tf.offset)
            block = tf.fileobj.read(tarfile.BLOCKSIZE)
            if mode != "r:":
                while tf.fileobj.read(CHUNK):
                    pass
        except _READ_ERRORS as exc:
            raise _corrupt(ex.archive, None, exc) from None
        if block != tarfile.NUL * tarfile.BLOCKSIZE:
            raise _corrupt(ex.archive, None, "no end-of-archive marker after the last member")


def _check_links(root: Path, archive: str) -> None:
    """Every symbolic link of the final tree must resolve inside it."""
    real_root = os.path.realpath(root)
    for folder, dirs, files in os.walk(root):
        for entry in dirs + files:
            path = os.path.join(folder, entry)
            if os.path.islink(path) and not _within(os.path.realpath(path), real_root):
                rel = os.path.relpath(path, root).replace(os.sep, "/")
                raise _unsafe(archive, rel, f"symbolic link to {os.readlink(path)!r} resolves outside "
                                            "the destination")


# ---- layout ----------------------------------------------------------------------

def _normalise_top(root: Path, top: str, label: str, name: str) -> None:
    """Make ``root/<top>/`` hold the dataset (see ``import_dataset``'s ``expect_top``)."""
    layout = (f"expected {top}/ at the top of the archive or folder, inside one wrapping folder, "
              f"or its content without it")

    def find(folder: Path) -> Path | None:
        exact = folder / top
        if exact.is_dir():
            return exact
        matches = [p for p in folder.iterdir() if p.is_dir() and p.name.lower() == top.lower()]
        return matches[0] if len(matches) == 1 else None

    if (root / top).exists() and not (root / top).is_dir():
        raise AtreidError(f"{label}: {top} is a file, not a folder; {layout}")
    found = find(root)
    if found is not None:
        if found.name != top:
            os.replace(found, root / top)
        return
    entries = [p for p in root.iterdir() if p.name not in IGNORED_TOP_LEVEL]
    if not entries:
        raise AtreidError(f"{label}: holds no dataset files; {layout}")
    if len(entries) == 1 and entries[0].is_dir() and not entries[0].is_symlink():
        inner = find(entries[0])
        if inner is not None:
            # Hoist the wrapping folder's content one level up.
            wrapper = root / f".{top}.wrapper"
            os.replace(entries[0], wrapper)
            for child in list(wrapper.iterdir()):
                destination = root / (top if child == wrapper / inner.name else child.name)
                if destination.exists() or destination.is_symlink():
                    raise AtreidError(f"{label}: cannot unwrap {entries[0].name}/: {child.name} exists "
                                      f"twice; {layout}")
                os.replace(child, destination)
            wrapper.rmdir()
            return
    deeper = _find_dir(root, top, max_depth=3)
    if deeper is not None:
        raise AtreidError(f"{label}: {top}/ found at {deeper.relative_to(root).as_posix()}/, too deep; "
                          f"{layout}; repack it, or extract it and set data.{name}.source to that folder")
    holder = root / top
    holder.mkdir()
    for entry in entries:
        os.replace(entry, holder / entry.name)


def _find_dir(root: Path, top: str, max_depth: int) -> Path | None:
    """The first folder named ``top`` (any case) at most ``max_depth`` levels below root."""
    level = [root]
    for _ in range(max_depth):
        following = []
        for folder in level:
            with os.scandir(folder) as entries:
                for entry in sorted(entries, key=lambda e: e.name):
                    if entry.is_dir(follow_symlinks=False):
                        if entry.name.lower() == top.lower():
                            return Path(entry.path)
                        following.append(Path(entry.path))
        level = following
    return None


# Beside a dataset's images/ (data/<name>/): the manifest of the copy the prepare step made
# (rules/*.smk declare it); it names the source the copy came from.
PREPARED_NAME = "prepared.json"


def prepared_source(manifest: str | os.PathLike) -> str | None:
    """The source recorded in a data folder's manifest (data/<name>/prepared.json): what
    its images/ were generated or imported from; None when there is no readable one."""
    try:
        source = json.loads(Path(manifest).read_text(encoding="utf-8")).get("source")
    except (OSError, ValueError, AttributeError):
        return None
    return source if isinstance(source, str) else None
