"""atreid.io: modes under the umask, stale temporaries, full disks (issue 15, items 2, 3, 6)."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import subprocess
import uuid
from pathlib import Path

import pytest

from atreid import io as aio
from atreid.errors import AtreidError


@contextlib.contextmanager
def umask(value: int):
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@contextlib.contextmanager
def small_filesystem(where: Path, size: str = "256k"):
    """A size-limited tmpfs mounted at ``where`` (root only); skips the test where not allowed."""
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root")
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc}")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], capture_output=True, timeout=30)


# ---- item 6: modes follow the umask ------------------------------------------------------
@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_atomic_files_follow_the_umask(tmp_path, mask):
    with umask(mask):
        aio.atomic_write_text(tmp_path / "a.txt", "x")
        aio.atomic_write_json(tmp_path / "sub" / "b.json", {"a": 1})
        aio.atomic_torch_save(tmp_path / "c.pt", {"a": 1})
    for name in ("a.txt", "sub/b.json", "c.pt"):
        assert mode(tmp_path / name) == 0o666 & ~mask, name
    assert mode(tmp_path / "sub") == 0o777 & ~mask


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_atomic_output_dir_follows_the_umask(tmp_path, mask):
    with umask(mask):
        with aio.atomic_output_dir(tmp_path / "images") as tmp:
            assert mode(tmp) == 0o777 & ~mask
            (tmp / "inner").mkdir()
            (tmp / "inner" / "f.jpg").write_bytes(b"1")
    assert mode(tmp_path / "images") == 0o777 & ~mask
    assert mode(tmp_path / "images" / "inner") == 0o777 & ~mask
    assert mode(tmp_path / "images" / "inner" / "f.jpg") == 0o666 & ~mask


def test_rewrite_takes_the_umask_not_the_old_mode(tmp_path):
    target = tmp_path / "a.txt"
    with umask(0o077):
        aio.atomic_write_text(target, "old")
    with umask(0o022):
        aio.atomic_write_text(target, "new")
    assert mode(target) == 0o644 and target.read_text() == "new"


# ---- item 3: stale temporaries ---------------------------------------------------------
def test_remove_stale_temporaries_removes_only_the_targets_own(tmp_path):
    target = tmp_path / "last.pt"
    own_file = tmp_path / ".last.pt.ab_c12z9.tmp"
    own_dir = tmp_path / ".last.pt.0123abcd.partial"
    own_download = tmp_path / ".last.pt.zzzzzzzz.download"
    own_file.write_bytes(b"partial")
    (own_dir / "deep").mkdir(parents=True)
    (own_dir / "deep" / "x").write_bytes(b"1")
    own_download.write_bytes(b"d")
    keep = [tmp_path / "last.pt", tmp_path / "previous.pt",
            tmp_path / ".previous.pt.abcdefgh.tmp",       # another target's
            tmp_path / ".last.pt.abc.tmp",                # not our random part
            tmp_path / ".last.pt.ABCDEFGH.tmp",           # not our alphabet
            tmp_path / ".last.pt.abcdefgh.tmp.keep",      # not our suffix
            tmp_path / ".x.last.pt.abcdefgh.tmp",         # another target
            tmp_path / "last.pt.abcdefgh.tmp"]            # not hidden: a user's file
    for path in keep:
        path.write_bytes(b"keep")
    outside = tmp_path / "other"
    outside.mkdir()
    (outside / ".last.pt.abcdefgh.tmp").write_bytes(b"other folder")

    removed = aio.remove_stale_temporaries(target)

    assert sorted(removed) == sorted([own_file, own_dir, own_download])
    assert not own_file.exists() and not own_dir.exists() and not own_download.exists()
    assert all(path.exists() for path in keep)
    assert (outside / ".last.pt.abcdefgh.tmp").exists()
    assert aio.remove_stale_temporaries(target) == []
    assert aio.remove_stale_temporaries(tmp_path / "missing" / "x") == []


def test_remove_stale_temporaries_suffixes_and_links(tmp_path):
    target = tmp_path / "images"
    victim = tmp_path / "victim"
    (victim / "keep").mkdir(parents=True)
    link = tmp_path / ".images.abcdefgh.partial"
    link.symlink_to(victim, target_is_directory=True)
    tmp_file = tmp_path / ".images.abcdefgh.tmp"
    tmp_file.write_bytes(b"")
    assert aio.remove_stale_temporaries(target, suffixes=(".partial",)) == [link]
    assert not link.is_symlink() and (victim / "keep").is_dir()  # the link goes, not what it points at
    assert tmp_file.exists()


def test_temporary_names_match_the_stale_pattern(tmp_path):
    target = tmp_path / "model.pt"
    made = [aio._temp_sibling(target), aio.temp_dir_sibling(target)]
    assert sorted(aio.stale_temporaries(target)) == sorted(made)


# ---- item 2: full disks --------------------------------------------------------------------
def test_enospc_gives_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    target = tmp_path / "model.pt"
    target.write_bytes(b"previous")
    real_fsync = os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(aio.os, "fsync", full)
    with pytest.raises(AtreidError) as info:
        aio.atomic_torch_save(target, {"a": 1})
    monkeypatch.setattr(aio.os, "fsync", real_fsync)
    message = str(info.value)
    assert "\n" not in message and str(target) in message
    assert "No space left on device" in message and "free space" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]
    assert target.read_bytes() == b"previous"


@pytest.mark.parametrize("fails", ["fill", "before_replace"])
def test_atomic_write_stream_failure_leaves_the_target(tmp_path, fails):
    """An error while streaming (or in the hook run once the file is complete) leaves the
    old target and no temporary; the hook runs only after the content is complete."""
    target = tmp_path / "last.pt"
    target.write_bytes(b"old")
    seen = []

    def fill(f):
        f.write(b"new")
        if fails == "fill":
            raise ValueError("cannot pickle")

    def before_replace():
        seen.append(sorted(p.name for p in tmp_path.iterdir()))
        if fails == "before_replace":
            raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))

    with pytest.raises(ValueError if fails == "fill" else AtreidError):
        aio.atomic_write_stream(target, fill, before_replace=before_replace)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"] and target.read_bytes() == b"old"
    if fails == "fill":
        assert seen == []
    else:  # the complete temporary sits beside the untouched target when the hook runs
        (listing,) = seen
        assert len(listing) == 2 and listing[0].startswith(".last.pt.") and listing[1] == "last.pt"
    aio.atomic_write_stream(target, lambda f: f.write(b"new"))
    assert target.read_bytes() == b"new"


def test_permission_error_is_one_line(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(tmp_path))

    monkeypatch.setattr(aio.os, "open", refuse)
    with pytest.raises(AtreidError, match="make .* writable"):
        aio.atomic_write_text(tmp_path / "a.txt", "x")
    assert list(tmp_path.iterdir()) == []


def test_real_full_filesystem(tmp_path):
    with small_filesystem(tmp_path / f"small-{uuid.uuid4().hex[:6]}") as disk:
        target = disk / "model.pt"
        aio.atomic_write_bytes(target, b"ok")
        with pytest.raises(AtreidError) as info:
            aio.atomic_write_bytes(target, b"\0" * (1 << 20))
        assert str(target) in str(info.value) and "No space left on device" in str(info.value)
        assert sorted(p.name for p in disk.iterdir()) == ["model.pt"]
        assert target.read_bytes() == b"ok"


@pytest.mark.parametrize("mask", [0o022, 0o077])
@pytest.mark.parametrize("kind", ["zip", "folder"])
def test_imported_dataset_follows_the_umask(tmp_path, mask, kind):
    """The whole import (atreid.data.archive through atomic_output_dir): folders 0777 and
    files 0666 less the umask, the record file too; nothing left beside the copy."""
    import zipfile

    from atreid.data.archive import import_dataset

    files = {"AT-USTC/p001-d01-c01/cam01-f0-0000.jpg": b"rgb", "AT-USTC/p002-d02-c01/cam09-f0-0001.jpg": b"ir"}
    if kind == "zip":
        source = tmp_path / "src" / "copy.zip"
        source.parent.mkdir()
        with zipfile.ZipFile(source, "w") as zf:
            for name, content in files.items():
                zf.writestr(name, content)
    else:
        source = tmp_path / "src"
        for name, content in files.items():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            (source / name).write_bytes(content)
        source = source / "AT-USTC"
    dest, record = tmp_path / "data" / "ds" / "images", tmp_path / "data" / "ds" / "source.json"
    with umask(mask):
        import_dataset(str(source), dest, sha256=None, record=record, expect_top="AT-USTC")
    folders = [dest, *(p for p in dest.rglob("*") if p.is_dir())]
    regular = [record, *(p for p in dest.rglob("*") if p.is_file())]
    assert len(regular) == 3 and len(folders) >= 4
    assert {str(p): mode(p) for p in folders} == {str(p): 0o777 & ~mask for p in folders}
    assert {str(p): mode(p) for p in regular} == {str(p): 0o666 & ~mask for p in regular}
    assert sorted(p.name for p in dest.parent.iterdir()) == ["images", "source.json"]


def test_atomic_output_dir_full_disk_keeps_the_old_copy(tmp_path):
    dest = tmp_path / "images"
    with aio.atomic_output_dir(dest) as tmp:
        (tmp / "old.jpg").write_bytes(b"old")
    with pytest.raises(AtreidError) as info:
        with aio.atomic_output_dir(dest) as tmp:
            (tmp / "new.jpg").write_bytes(b"new")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert str(dest) in str(info.value) and "free space" in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images"]
    assert [p.name for p in dest.iterdir()] == ["old.jpg"]
    with aio.atomic_output_dir(dest) as tmp:  # replaced: the old copy goes once the new one is in place
        (tmp / "new.jpg").write_bytes(b"new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images"]
    assert [p.name for p in dest.iterdir()] == ["new.jpg"]


def test_atomic_output_dir_real_full_filesystem(tmp_path):
    with small_filesystem(tmp_path / f"small-{uuid.uuid4().hex[:6]}", size="64k") as disk:
        dest = disk / "images"
        with pytest.raises(AtreidError, match="No space left on device"):
            with aio.atomic_output_dir(dest) as tmp:
                (tmp / "big.jpg").write_bytes(b"\0" * (1 << 20))
        assert list(disk.iterdir()) == []


def test_swap_killed_between_the_renames_restores_the_old_copy(tmp_path):
    """A kill after the old copy was moved aside and before the new one moved in: the next
    atomic_output_dir (and the stale-leftover cleanup before it) must not lose the old copy."""
    target = tmp_path / "images"
    aside = tmp_path / ".images.abcdefgh.previous"
    aside.mkdir()
    (aside / "a.jpg").write_bytes(b"old")
    # The import's own cleanup removes leftovers, never the moved-aside complete copy.
    aio.remove_stale_temporaries(target)
    assert aside.is_dir()
    with pytest.raises(RuntimeError):
        with aio.atomic_output_dir(target):
            raise RuntimeError("the next import is refused")
    assert (target / "a.jpg").read_bytes() == b"old" and not aside.exists()


def test_swap_killed_after_the_renames_drops_the_stale_aside_copy(tmp_path):
    target = tmp_path / "images"
    target.mkdir()
    (target / "a.jpg").write_bytes(b"new")
    aside = tmp_path / ".images.abcdefgh.previous"
    aside.mkdir()
    (aside / "a.jpg").write_bytes(b"old")
    aio.recover_interrupted_swap(target)
    assert (target / "a.jpg").read_bytes() == b"new" and not aside.exists()


def test_full_disk_inside_torch_save_is_one_line(tmp_path, monkeypatch):
    """torch.save streaming into the temporary file wraps the file's ENOSPC in a RuntimeError:
    still the one-line full-disk error, nothing left, the old file kept."""
    import torch

    target = tmp_path / "last.pt"
    target.write_bytes(b"old")
    calls = {"n": 0}

    class FullAfterTwoWrites:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            calls["n"] += 1
            if calls["n"] > 2:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return self.f.write(data)

    with pytest.raises(AtreidError) as info:
        aio.atomic_write_stream(target, lambda f: torch.save({"w": torch.ones(1000)}, FullAfterTwoWrites(f)))
    assert "\n" not in str(info.value) and "No space left on device" in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"] and target.read_bytes() == b"old"
    with pytest.raises(ValueError, match="not a disk error"):  # other errors pass through as they are
        aio.atomic_write_stream(target, lambda f: (_ for _ in ()).throw(ValueError("not a disk error")))


def test_atomic_write_with_a_path_writer_follows_the_umask(tmp_path: Path) -> None:
    """Writers that take a file name (an ONNX program's save) go through atreid.io too."""
    out = tmp_path / "sub" / "model.onnx"
    old = os.umask(0o022)
    try:
        aio.atomic_write_with(out, lambda tmp: Path(tmp).write_bytes(b"onnx"))
    finally:
        os.umask(old)
    assert out.read_bytes() == b"onnx" and stat.S_IMODE(out.stat().st_mode) == 0o644

    def fails(tmp: Path) -> None:
        Path(tmp).write_bytes(b"half")
        raise RuntimeError("exporter failed")

    with pytest.raises(RuntimeError):
        aio.atomic_write_with(out, fails)
    assert out.read_bytes() == b"onnx" and sorted(p.name for p in out.parent.iterdir()) == ["model.onnx"]
