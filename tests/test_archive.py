"""Import of a user's copy: archives, folders, URLs, sha256 checks and safe extraction."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import stat
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest

from atreid.data import archive
from atreid.data.archive import detect_archive, import_dataset, sha256_folder
from atreid.io import file_sha256 as sha256_file
from atreid.errors import AtreidError

TOP = "AT-USTC"
FILES = {
    "AT-USTC/p001-d01-c01/cam01-f0-0000.jpg": b"rgb frame 0",
    "AT-USTC/p001-d01-c01/cam09-f0-0000.jpg": b"ir frame 0" * 100,
    "AT-USTC/p002-d02-c01/cam02-f6-0001.jpg": os.urandom(5000),
}


# ---- helpers -------------------------------------------------------------------

def make_zip(path: Path, files: dict[str, bytes], symlinks: dict[str, str] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return path


def make_tar(path: Path, files: dict[str, bytes], mode: str = "w", *,
             links: list[tuple[str, bytes, str]] = (), extra: list[tarfile.TarInfo] = ()) -> Path:
    """``links``: (name, type, target) with type tarfile.SYMTYPE or LNKTYPE, written after files."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, mode, format=tarfile.GNU_FORMAT) as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, kind, target in links:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = target
            tf.addfile(info)
        for info in extra:
            tf.addfile(info, io.BytesIO(b"x" * info.size) if info.size else None)
    return path


def snapshot(root: Path) -> dict[str, object]:
    """Every entry under root (links not followed): file bytes, link targets, folders."""
    state: dict[str, object] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder, name)
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                state[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                state[rel] = "dir"
            else:
                state[rel] = path.read_bytes()
    return state


def tree(root: Path) -> dict[str, bytes]:
    """Regular files under root (relative path -> bytes)."""
    return {k: v for k, v in snapshot(root).items() if isinstance(v, bytes)}


@pytest.fixture
def layout(tmp_path: Path):
    """src/ for the user's copies, data/ds/{images,source.json} (absent at first), and an
    outside/ folder with a secret file that unsafe archives aim at."""
    (tmp_path / "src").mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.txt").write_bytes(b"do not touch")
    dest = tmp_path / "data" / "ds" / "images"
    record = tmp_path / "data" / "ds" / "source.json"
    return tmp_path, dest, record


def run_import(source, dest, record, sha256=None, expect_top=TOP):
    return import_dataset(str(source), dest, sha256=sha256, record=record, expect_top=expect_top)


def assert_refused(tmp_path: Path, source: Path, dest: Path, record: Path, *needles: str) -> str:
    """The import fails with an AtreidError naming ``needles`` and changes nothing at all."""
    before = snapshot(tmp_path)
    with pytest.raises(AtreidError) as excinfo:
        run_import(source, dest, record)
    message = str(excinfo.value)
    for needle in needles:
        assert needle in message, message
    assert "\n" not in message
    assert snapshot(tmp_path) == before  # nothing outside, no partial dest, no temp, no record
    return message


# ---- round trips ---------------------------------------------------------------

@pytest.mark.parametrize("kind, suffix, mode", [
    ("zip", ".zip", None),
    ("tar", ".tar", "w"),
    ("tar.gz", ".tar.gz", "w:gz"),
    ("tar.gz", ".tgz", "w:gz"),
    ("tar.bz2", ".tar.bz2", "w:bz2"),
    ("tar.xz", ".tar.xz", "w:xz"),
])
def test_archive_round_trip(layout, kind, suffix, mode):
    tmp_path, dest, record = layout
    source = tmp_path / "src" / f"copy{suffix}"
    make_zip(source, FILES) if mode is None else make_tar(source, FILES, mode)
    summary = run_import(source, dest, record)
    assert tree(dest) == FILES
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    assert summary == {"source": str(source), "kind": kind, "sha256": digest,
                       "bytes": source.stat().st_size, "files": len(FILES), "dest": str(dest)}
    saved = json.loads(record.read_text())
    assert saved["sha256"] == digest and saved["kind"] == kind and saved["source"] == str(source)
    assert saved["size"] == source.stat().st_size and saved["imported_at"]
    # no temporary leftovers beside dest
    assert sorted(p.name for p in dest.parent.iterdir()) == ["images", "source.json"]


def test_type_detected_by_content_not_extension(layout):
    tmp_path, dest, record = layout
    source = make_tar(tmp_path / "src" / "misnamed.zip", FILES, "w:gz")
    assert detect_archive(source) == "tar.gz"
    assert run_import(source, dest, record)["kind"] == "tar.gz"
    assert tree(dest) == FILES


def test_unknown_type_names_file_and_supported_types(layout):
    tmp_path, dest, record = layout
    source = tmp_path / "src" / "copy.zip"
    source.write_text("this is not an archive\n")
    message = assert_refused(tmp_path, source, dest, record, str(source), "not a supported archive")
    assert ".zip" in message and ".tar.gz" in message and ".tar.xz" in message


def test_missing_source_message(layout):
    tmp_path, dest, record = layout
    source = tmp_path / "src" / "AT-USTC.zip"
    message = assert_refused(tmp_path, source, dest, record)
    assert message == (f"{source}: no such file or folder; put your copy there or set "
                       "data.ds.source in params.yaml")


def test_internal_links_are_kept(layout):
    tmp_path, dest, record = layout
    tar = make_tar(tmp_path / "src" / "links.tar", FILES, links=[
        ("AT-USTC/latest.jpg", tarfile.SYMTYPE, "p001-d01-c01/cam01-f0-0000.jpg"),
        ("AT-USTC/p002-d02-c01/up", tarfile.SYMTYPE, "../p001-d01-c01"),
        ("AT-USTC/copy.jpg", tarfile.LNKTYPE, "AT-USTC/p001-d01-c01/cam09-f0-0000.jpg"),
    ])
    run_import(tar, dest, record)
    top = dest / TOP
    assert os.readlink(top / "latest.jpg") == "p001-d01-c01/cam01-f0-0000.jpg"
    assert (top / "latest.jpg").read_bytes() == FILES["AT-USTC/p001-d01-c01/cam01-f0-0000.jpg"]
    assert (top / "p002-d02-c01" / "up" / "cam01-f0-0000.jpg").is_file()
    assert (top / "copy.jpg").read_bytes() == FILES["AT-USTC/p001-d01-c01/cam09-f0-0000.jpg"]

    zdest = tmp_path / "zdata" / "images"
    zsource = make_zip(tmp_path / "src" / "links.zip", FILES,
                       symlinks={"AT-USTC/latest.jpg": "p001-d01-c01/cam01-f0-0000.jpg"})
    run_import(zsource, zdest, tmp_path / "zdata" / "source.json")
    assert os.readlink(zdest / TOP / "latest.jpg") == "p001-d01-c01/cam01-f0-0000.jpg"


# ---- folders -------------------------------------------------------------------

def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def manifest_digest(root: Path) -> str:
    """The documented folder digest, computed independently."""
    rels = sorted((p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()),
                  key=lambda r: r.encode())
    text = "".join(f"{hashlib.sha256((root / r).read_bytes()).hexdigest()}  {r}\n" for r in rels)
    return hashlib.sha256(text.encode()).hexdigest()


def test_folder_import_copies_and_never_modifies_source(layout):
    tmp_path, dest, record = layout
    src = write_tree(tmp_path / "src" / "copy", FILES)
    (src / "empty-folder").mkdir()
    stats_before = {p: p.stat().st_mtime_ns for p in src.rglob("*")}
    content_before = snapshot(src)
    summary = run_import(src, dest, record)
    assert tree(dest) == FILES
    assert snapshot(src) == content_before
    assert {p: p.stat().st_mtime_ns for p in src.rglob("*")} == stats_before
    digest = manifest_digest(src)
    assert summary["kind"] == "folder" and summary["sha256"] == digest == sha256_folder(src)
    assert summary["files"] == len(FILES) and summary["bytes"] == sum(map(len, FILES.values()))
    assert json.loads(record.read_text())["sha256"] == digest


def test_folder_digest_definition(tmp_path):
    root = write_tree(tmp_path, {"b/x.jpg": b"1", "a.jpg": b"22", "a/z.jpg": b""})
    (root / "empty").mkdir()  # folders do not count
    lines = [f"{hashlib.sha256(b'22').hexdigest()}  a.jpg\n",  # "a.jpg" < "a/z.jpg" as bytes
             f"{hashlib.sha256(b'').hexdigest()}  a/z.jpg\n",
             f"{hashlib.sha256(b'1').hexdigest()}  b/x.jpg\n"]
    expected = hashlib.sha256("".join(lines).encode()).hexdigest()
    assert sha256_folder(root) == expected == manifest_digest(root)
    (root / "b" / "x.jpg").write_bytes(b"2")
    assert sha256_folder(root) != expected


def test_folder_pointing_at_top_folder_is_normalised(layout):
    tmp_path, dest, record = layout
    src = write_tree(tmp_path / "src" / "copy", FILES)
    run_import(src / TOP, dest, record)
    assert tree(dest) == FILES


def test_changed_folder_is_refused(layout):
    tmp_path, dest, record = layout
    src = write_tree(tmp_path / "src" / "copy", FILES)
    run_import(src, dest, record)
    (src / "AT-USTC" / "p001-d01-c01" / "cam01-f0-0000.jpg").write_bytes(b"edited")
    assert_refused(tmp_path, src, dest, record, str(src), "changed since", str(record))


# ---- URLs ----------------------------------------------------------------------

class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class _Truncating(_Quiet):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "100000")
        self.end_headers()
        self.wfile.write(b"PK\x03\x04" + b"\0" * 996)
        self.wfile.flush()
        self.close_connection = True


def serve(directory: Path, handler=_Quiet):
    def factory(*args, **kwargs):
        return handler(*args, directory=str(directory), **kwargs)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), factory)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def test_url_import_over_http(layout):
    tmp_path, dest, record = layout
    source = make_tar(tmp_path / "src" / "copy.tar.gz", FILES, "w:gz")
    server, base = serve(tmp_path / "src")
    try:
        summary = run_import(f"{base}/copy.tar.gz", dest, record)
        assert tree(dest) == FILES
        assert summary["sha256"] == sha256_file(source) and summary["kind"] == "tar.gz"
        assert json.loads(record.read_text())["source"] == f"{base}/copy.tar.gz"
        assert sorted(p.name for p in dest.parent.iterdir()) == ["images", "source.json"]
        # a second import checks the recorded digest
        (tmp_path / "src" / "copy.tar.gz").write_bytes(make_zip(tmp_path / "other.zip", FILES).read_bytes())
        (tmp_path / "other.zip").unlink()
        assert_refused(tmp_path, f"{base}/copy.tar.gz", dest, record, "changed since")
        # HTTP errors
        assert_refused(tmp_path, f"{base}/nothing.zip", dest, record, "404", "download failed")
    finally:
        server.shutdown()
        server.server_close()


def test_interrupted_download_leaves_nothing(layout):
    tmp_path, dest, record = layout
    server, base = serve(tmp_path / "src", _Truncating)
    try:
        assert_refused(tmp_path, f"{base}/copy.zip", dest, record, "download interrupted")
    finally:
        server.shutdown()
        server.server_close()


def test_file_url_import(layout):
    tmp_path, dest, record = layout
    source = make_zip(tmp_path / "src" / "copy.zip", FILES)
    run_import(source.as_uri(), dest, record)
    assert tree(dest) == FILES
    missing = (tmp_path / "src" / "gone.zip").as_uri()
    message = assert_refused(tmp_path, missing, dest, record, "no such file or folder")
    assert message.startswith(missing)


# ---- checksums -----------------------------------------------------------------

def test_given_checksum_accepted_and_mismatch_refused(layout):
    tmp_path, dest, record = layout
    source = make_zip(tmp_path / "src" / "copy.zip", FILES)
    digest = sha256_file(source)
    assert digest == hashlib.sha256(source.read_bytes()).hexdigest()
    wrong = "0" * 64
    before = snapshot(tmp_path)
    with pytest.raises(AtreidError) as excinfo:
        run_import(source, dest, record, sha256=wrong)
    message = str(excinfo.value)
    assert str(source) in message and wrong in message and digest in message
    assert "data.ds.sha256" in message
    assert snapshot(tmp_path) == before and not record.exists() and not dest.parent.exists()
    run_import(source, dest, record, sha256=digest.upper())
    assert tree(dest) == FILES and json.loads(record.read_text())["sha256"] == digest


def test_malformed_checksum_setting(layout):
    tmp_path, dest, record = layout
    source = make_zip(tmp_path / "src" / "copy.zip", FILES)
    with pytest.raises(AtreidError, match="data.ds.sha256"):
        run_import(source, dest, record, sha256="abc")


def test_checksum_recorded_then_changed_source_refused(layout):
    tmp_path, dest, record = layout
    source = make_zip(tmp_path / "src" / "copy.zip", FILES)
    first = run_import(source, dest, record)
    saved = json.loads(record.read_text())
    assert saved["sha256"] == first["sha256"] == sha256_file(source)
    assert set(saved) == {"source", "sha256", "kind", "size", "imported_at"}
    run_import(source, dest, record)  # unchanged: accepted again
    make_zip(source, {**FILES, "AT-USTC/extra.jpg": b"new"})
    # refused; the earlier import and its record stay as they were
    assert_refused(tmp_path, source, dest, record, str(source), "changed since",
                   first["sha256"], str(record), "data.ds.sha256")
    assert tree(dest) == FILES
    # an explicit digest accepts the new copy and updates the record
    run_import(source, dest, record, sha256=sha256_file(source))
    assert "AT-USTC/extra.jpg" in tree(dest)
    assert json.loads(record.read_text())["sha256"] == sha256_file(source)


def test_broken_record_is_an_error(layout):
    tmp_path, dest, record = layout
    source = make_zip(tmp_path / "src" / "copy.zip", FILES)
    record.parent.mkdir(parents=True)
    record.write_text("{not json")
    with pytest.raises(AtreidError, match="not a valid import record"):
        run_import(source, dest, record)


# ---- unsafe archives -----------------------------------------------------------

UNSAFE_NAMES = [
    ("/abs/evil.txt", "absolute path"),
    ("../evil.txt", "'..'"),
    ("AT-USTC/../../evil.txt", "'..'"),
    ("C:/evil.txt", "drive letter"),
    ("..\\evil.txt", "'..'"),
]


@pytest.mark.parametrize("name, reason", UNSAFE_NAMES)
@pytest.mark.parametrize("fmt", ["zip", "tar", "tar.gz"])
def test_unsafe_member_paths_refused(layout, fmt, name, reason):
    tmp_path, dest, record = layout
    files = {**FILES, name: b"pwned"}
    if fmt == "zip":
        source = make_zip(tmp_path / "src" / "evil.zip", files)
        assert name in zipfile.ZipFile(source).namelist()
    else:
        source = make_tar(tmp_path / "src" / f"evil.{fmt}", files, "w" if fmt == "tar" else "w:gz")
        assert name in tarfile.open(source).getnames()
    assert_refused(tmp_path, source, dest, record, str(source), repr(name), reason)


@pytest.mark.parametrize("fmt", ["tar", "zip"])
def test_escaping_symlink_refused(layout, fmt):
    tmp_path, dest, record = layout
    # classic attack: a link to a folder outside, then a member written through it
    if fmt == "tar":
        source = tmp_path / "src" / "evil.tar"
        with tarfile.open(source, "w") as tf:
            link = tarfile.TarInfo("AT-USTC/evil")
            link.type, link.linkname = tarfile.SYMTYPE, "../../../outside"
            tf.addfile(link)
            data = tarfile.TarInfo("AT-USTC/evil/pwned.txt")
            data.size = 5
            tf.addfile(data, io.BytesIO(b"pwned"))
    else:
        source = make_zip(tmp_path / "src" / "evil.zip", FILES, symlinks={"AT-USTC/evil": "../../../outside"})
    assert_refused(tmp_path, source, dest, record, str(source), "'AT-USTC/evil'", "outside the destination")


@pytest.mark.parametrize("fmt", ["tar", "zip"])
def test_absolute_symlink_refused(layout, fmt):
    tmp_path, dest, record = layout
    target = str(tmp_path / "outside")
    if fmt == "tar":
        source = make_tar(tmp_path / "src" / "evil.tar", FILES,
                          links=[("AT-USTC/evil", tarfile.SYMTYPE, target)])
    else:
        source = make_zip(tmp_path / "src" / "evil.zip", FILES, symlinks={"AT-USTC/evil": target})
    assert_refused(tmp_path, source, dest, record, "'AT-USTC/evil'", "absolute path")


def test_symlink_chain_resolving_outside_refused(layout):
    tmp_path, dest, record = layout
    # Each link text stays inside when read on its own; resolved on disk, b escapes.
    source = make_tar(tmp_path / "src" / "chain.tar", FILES, links=[
        ("AT-USTC/a", tarfile.SYMTYPE, "."),
        ("AT-USTC/b", tarfile.SYMTYPE, "a/../.."),
    ])
    assert_refused(tmp_path, source, dest, record, "'AT-USTC/b'", "resolves outside")


def test_symlink_made_escaping_by_a_later_link_refused(layout):
    tmp_path, dest, record = layout
    # A is fine when created (B does not exist yet); B -> "." then makes A escape.
    source = make_tar(tmp_path / "src" / "order.tar", FILES, links=[
        ("AT-USTC/A", tarfile.SYMTYPE, "B/../.."),
        ("AT-USTC/B", tarfile.SYMTYPE, "."),
    ])
    assert_refused(tmp_path, source, dest, record, "AT-USTC/A", "resolves outside")


def test_escaping_hard_link_refused(layout):
    tmp_path, dest, record = layout
    # classic attack: a hard link to a file outside, then a member overwriting it
    for i, target in enumerate(["../../../outside/secret.txt", str(tmp_path / "outside" / "secret.txt")]):
        source = tmp_path / "src" / f"evil{i}.tar"
        with tarfile.open(source, "w") as tf:
            link = tarfile.TarInfo("AT-USTC/h.jpg")
            link.type, link.linkname = tarfile.LNKTYPE, target
            tf.addfile(link)
            data = tarfile.TarInfo("AT-USTC/h.jpg")
            data.size = 5
            tf.addfile(data, io.BytesIO(b"pwned"))
        assert_refused(tmp_path, source, dest, record, str(source), "'AT-USTC/h.jpg'", "hard link")
    assert (tmp_path / "outside" / "secret.txt").read_bytes() == b"do not touch"


def test_hard_link_to_unknown_member_refused(layout):
    tmp_path, dest, record = layout
    source = make_tar(tmp_path / "src" / "evil.tar", FILES,
                      links=[("AT-USTC/h.jpg", tarfile.LNKTYPE, "AT-USTC/not-there.jpg")])
    assert_refused(tmp_path, source, dest, record, "'AT-USTC/h.jpg'", "not a file extracted before it")


@pytest.mark.parametrize("kind", [tarfile.FIFOTYPE, tarfile.CHRTYPE, tarfile.BLKTYPE])
def test_tar_special_files_refused(layout, kind):
    tmp_path, dest, record = layout
    info = tarfile.TarInfo("AT-USTC/special")
    info.type = kind
    source = make_tar(tmp_path / "src" / "special.tar", FILES, extra=[info])
    assert_refused(tmp_path, source, dest, record, "'AT-USTC/special'", "device file or FIFO")


def test_zip_special_file_refused(layout):
    tmp_path, dest, record = layout
    source = tmp_path / "src" / "special.zip"
    make_zip(source, FILES)
    with zipfile.ZipFile(source, "a") as zf:
        info = zipfile.ZipInfo("AT-USTC/fifo")
        info.create_system = 3
        info.external_attr = (stat.S_IFIFO | 0o644) << 16
        zf.writestr(info, b"")
    assert_refused(tmp_path, source, dest, record, "'AT-USTC/fifo'", "special file")


# ---- corrupt archives and interruptions ----------------------------------------

@pytest.mark.parametrize("fmt", ["zip", "tar", "tar.gz", "tar.xz"])
def test_truncated_archive_leaves_nothing(layout, fmt):
    tmp_path, dest, record = layout
    full = tmp_path / "full"
    if fmt == "zip":
        make_zip(full, FILES)
    else:
        make_tar(full, FILES, {"tar": "w", "tar.gz": "w:gz", "tar.xz": "w:xz"}[fmt])
    data = full.read_bytes()
    full.unlink()
    source = tmp_path / "src" / f"cut.{fmt}"
    source.write_bytes(data[: len(data) * 2 // 3])
    assert_refused(tmp_path, source, dest, record, str(source), "corrupt or truncated")


def test_tar_cut_at_a_member_boundary_detected(layout):
    tmp_path, dest, record = layout
    full = make_tar(tmp_path / "full.tar", FILES)
    data = full.read_bytes()
    full.unlink()
    size = len(FILES["AT-USTC/p001-d01-c01/cam01-f0-0000.jpg"])
    boundary = 512 + (size + 511) // 512 * 512  # header + padded data of the first member
    source = tmp_path / "src" / "cut.tar"
    source.write_bytes(data[:boundary])  # tarfile alone would list one member silently
    assert_refused(tmp_path, source, dest, record, "no end-of-archive marker")


@pytest.mark.parametrize("mode, fmt", [("w:gz", "tar.gz"), ("w:bz2", "tar.bz2"), ("w:xz", "tar.xz")])
def test_compressed_tar_cut_in_its_trailer_detected(layout, mode, fmt):
    tmp_path, dest, record = layout
    full = make_tar(tmp_path / "full", FILES, mode)
    data = full.read_bytes()
    full.unlink()
    source = tmp_path / "src" / f"cut.{fmt}"
    source.write_bytes(data[:-4])  # every member is complete; only the stream's end is missing
    assert_refused(tmp_path, source, dest, record, "corrupt or truncated")


def test_member_inside_a_link_refused(layout):
    tmp_path, dest, record = layout
    source = tmp_path / "src" / "through.tar"
    with tarfile.open(source, "w") as tf:
        link = tarfile.TarInfo("AT-USTC/alias")
        link.type, link.linkname = tarfile.SYMTYPE, "p001-d01-c01"
        tf.addfile(link)
        data = tarfile.TarInfo("AT-USTC/alias/x.jpg")
        data.size = 5
        tf.addfile(data, io.BytesIO(b"12345"))
    assert_refused(tmp_path, source, dest, record, "'AT-USTC/alias/x.jpg'", "symlink")


def test_corrupt_member_data_in_zip(layout):
    tmp_path, dest, record = layout
    source = tmp_path / "src" / "bad.zip"
    with zipfile.ZipFile(source, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("AT-USTC/a.jpg", b"A" * 1000)
    data = bytearray(source.read_bytes())
    data[data.index(b"A" * 1000) + 10] = ord("B")  # CRC no longer matches
    source.write_bytes(bytes(data))
    assert_refused(tmp_path, source, dest, record, "corrupt or truncated", "'AT-USTC/a.jpg'")


def test_keyboard_interrupt_during_extraction_leaves_nothing(layout, monkeypatch):
    tmp_path, dest, record = layout
    source = make_zip(tmp_path / "src" / "copy.zip", FILES)
    original = archive._Extractor.add_file
    calls = []

    def interrupted(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(archive._Extractor, "add_file", interrupted)
    before = snapshot(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        run_import(source, dest, record)
    assert snapshot(tmp_path) == before


def test_failed_reimport_keeps_previous_dest(layout):
    tmp_path, dest, record = layout
    run_import(make_zip(tmp_path / "src" / "good.zip", FILES), dest, record)
    bad = make_zip(tmp_path / "src" / "bad.zip", {**FILES, "../evil.txt": b"x"})
    with pytest.raises(AtreidError, match="unsafe member"):
        import_dataset(str(bad), dest, sha256=sha256_file(bad), record=record, expect_top=TOP)
    assert tree(dest) == FILES


def test_source_inside_dest_refused(layout):
    tmp_path, dest, record = layout
    source = make_zip(dest / "copy.zip", FILES)
    with pytest.raises(AtreidError, match="replaces"):
        run_import(source, dest, record)
    assert source.is_file()


# ---- layout normalisation -------------------------------------------------------

def test_wrapping_folder_is_unwrapped(layout):
    tmp_path, dest, record = layout
    wrapped = {f"release-v1/{k}": v for k, v in FILES.items()}
    wrapped["release-v1/README.txt"] = b"readme"
    wrapped["__MACOSX/._junk"] = b"junk"
    run_import(make_zip(tmp_path / "src" / "wrapped.zip", wrapped), dest, record)
    files = tree(dest)
    assert {k: v for k, v in files.items() if k.startswith("AT-USTC/")} == FILES
    assert files["README.txt"] == b"readme"


def test_content_without_top_folder_is_wrapped(layout):
    tmp_path, dest, record = layout
    bare = {k.removeprefix("AT-USTC/"): v for k, v in FILES.items()}
    run_import(make_tar(tmp_path / "src" / "bare.tar", bare), dest, record)
    assert tree(dest) == FILES


def test_top_folder_in_other_case_is_renamed(layout):
    tmp_path, dest, record = layout
    lower = {k.replace("AT-USTC/", "at-ustc/"): v for k, v in FILES.items()}
    run_import(make_zip(tmp_path / "src" / "lower.zip", lower), dest, record)
    assert tree(dest) == FILES


def test_top_folder_too_deep_is_an_error(layout):
    tmp_path, dest, record = layout
    deep = {f"a/b/{k}": v for k, v in FILES.items()}
    source = make_zip(tmp_path / "src" / "deep.zip", deep)
    assert_refused(tmp_path, source, dest, record, str(source), "a/b/AT-USTC/", "expected AT-USTC/")


def test_empty_archive_is_an_error(layout):
    tmp_path, dest, record = layout
    source = make_zip(tmp_path / "src" / "empty.zip", {"AT-USTC/": b""})
    assert_refused(tmp_path, source, dest, record, str(source), "holds no files")


def test_no_expect_top_extracts_as_is(layout):
    tmp_path, dest, record = layout
    bare = {k.removeprefix("AT-USTC/"): v for k, v in FILES.items()}
    run_import(make_zip(tmp_path / "src" / "bare.zip", bare), dest, record, expect_top=None)
    assert tree(dest) == bare


def test_top_name_taken_by_a_file_is_an_error(layout):
    tmp_path, dest, record = layout
    source = make_zip(tmp_path / "src" / "odd.zip", {"AT-USTC": b"not a folder", "x.jpg": b"1"})
    assert_refused(tmp_path, source, dest, record, str(source), "AT-USTC is a file")


# ---- expansion limits (issue 15, item 7) ------------------------------------------

BOMB = {"AT-USTC/zeros.bin": bytes(40 << 20), "AT-USTC/p001-d01-c01/cam01-f0-0000.jpg": b"rgb"}


def make_bomb(source: Path, fmt: str) -> Path:
    """:data:`BOMB` packed as a zip or a tar.gz (both compress it about 1000x)."""
    if fmt == "zip":
        make_zip(source, BOMB)
    else:
        make_tar(source, BOMB, "w:gz")
    return source


@pytest.mark.parametrize("fmt", ["zip", "tar.gz"])
def test_highly_compressible_archive_refused(layout, fmt):
    """40 MiB of zeros packs into ~40 KiB: far beyond 100x, refused with nothing left."""
    tmp_path, dest, record = layout
    source = make_bomb(tmp_path / "src" / f"bomb.{fmt}", fmt)
    assert source.stat().st_size < 200 << 10
    message = assert_refused(tmp_path, source, dest, record, str(source), "data.max_expansion",
                             "over the limit of 16.0 MiB")
    assert "params.yaml" in message


def test_raised_expansion_limit_accepts_the_archive(layout):
    tmp_path, dest, record = layout
    source = make_zip(tmp_path / "src" / "bomb.zip", BOMB)
    import_dataset(str(source), dest, sha256=None, record=record, expect_top=TOP, max_expansion=5000)
    assert (dest / "AT-USTC" / "zeros.bin").stat().st_size == 40 << 20


def test_extracted_size_cap_refused(layout):
    tmp_path, dest, record = layout
    source = make_tar(tmp_path / "src" / "copy.tar", {"AT-USTC/a.jpg": os.urandom(2 << 20)})
    before = snapshot(tmp_path)
    with pytest.raises(AtreidError, match=r"data\.max_extracted_gib \(now 0\.001\)") as excinfo:
        import_dataset(str(source), dest, sha256=None, record=record, expect_top=TOP, max_extracted_gib=0.001)
    assert "\n" not in str(excinfo.value)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("fmt", ["zip", "tar.gz"])
def test_declared_sizes_that_lie_are_caught_by_counting(layout, fmt, monkeypatch):
    """A member that declares 1 byte but holds 40 MiB: the bytes written are counted."""
    tmp_path, dest, record = layout
    source = make_bomb(tmp_path / "src" / f"liar.{fmt}", fmt)
    original = archive._Extractor.declare
    monkeypatch.setattr(archive._Extractor, "declare", lambda self, member, size: original(self, member, 1))
    message = assert_refused(tmp_path, source, dest, record, "more than declared", "data.max_expansion")
    assert "zeros.bin" in message


def test_bad_expansion_setting(layout):
    tmp_path, dest, record = layout
    source = make_zip(tmp_path / "src" / "copy.zip", FILES)
    with pytest.raises(AtreidError, match=r"data\.max_expansion: 0\.5 must be a number at least 1"):
        import_dataset(str(source), dest, sha256=None, record=record, max_expansion=0.5)


# ---- leftovers of a killed import (issue 15, item 3) -------------------------------

def test_stale_partial_of_a_killed_import_is_removed(layout):
    tmp_path, dest, record = layout
    dest.parent.mkdir(parents=True)
    stale = dest.parent / ".images.k1ll3d00.partial"
    (stale / "AT-USTC").mkdir(parents=True)
    (stale / "AT-USTC" / "half.jpg").write_bytes(b"x" * 1000)
    stale_download = dest.parent / ".images.k1ll3d01.download"
    stale_download.write_bytes(b"half a download")
    others = [dest.parent / ".index.csv.k1ll3d00.partial", dest.parent / "images.partial",
              dest.parent / ".images.keep.partial"]  # not this step's pattern: kept
    for other in others:
        other.mkdir()
    run_import(make_zip(tmp_path / "src" / "copy.zip", FILES), dest, record)
    assert tree(dest) == FILES
    assert not stale.exists() and not stale_download.exists()
    assert all(other.is_dir() for other in others)


KILL_SCRIPT = """
import sys, time
from pathlib import Path
from atreid.data import archive
original = archive._Extractor.add_file
def slow(self, *args, **kwargs):
    original(self, *args, **kwargs)
    if self.files == 2:
        print("extracting", flush=True)
        time.sleep(60)
archive._Extractor.add_file = slow
archive.import_dataset(sys.argv[1], Path(sys.argv[2]), sha256=None, record=Path(sys.argv[3]), expect_top="AT-USTC")
"""


def test_killed_extraction_leftovers_removed_by_the_next_run(layout):
    import signal
    import subprocess
    import sys

    tmp_path, dest, record = layout
    source = make_zip(tmp_path / "src" / "copy.zip", FILES)
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(source), str(dest), str(record)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "ATREID_QUIET": "1"})
    try:
        assert proc.stdout.readline().strip() == "extracting"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    leftovers = [p for p in dest.parent.iterdir() if p.name.endswith(".partial")]
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".images."), leftovers
    assert not dest.exists() and not record.exists()
    run_import(source, dest, record)
    assert tree(dest) == FILES
    assert sorted(p.name for p in dest.parent.iterdir()) == ["images", "source.json"]


def test_cli_passes_the_expansion_limits(layout, capsys):
    from atreid.cli import main

    tmp_path, dest, record = layout
    source = make_tar(tmp_path / "src" / "bomb.tar.gz", BOMB, "w:gz")
    common = ["prepare-atustc", "--source", json.dumps({"source": str(source), "sha256": None}),
              "--synthetic", "{}", "--out", str(dest), "--record", str(record)]
    assert main(common) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: {source}: ") and "data.max_expansion" in err[-1]
    assert not dest.exists()
    assert main(common + ["--max-expansion", "2000"]) == 0
    assert (dest / "AT-USTC" / "zeros.bin").stat().st_size == 40 << 20
    assert main(common + ["--max-extracted-gib", "0.01"]) == 2
    assert "data.max_extracted_gib (now 0.01)" in capsys.readouterr().err
    assert (dest / "AT-USTC" / "zeros.bin").stat().st_size == 40 << 20  # kept
