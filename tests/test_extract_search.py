"""`atreid extract` (features as parquet, equal to the evaluation's) and `atreid search`
(ranked retrievals as an HTML page, checked in headless Chromium); bad input is one line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

pytest.importorskip("pyarrow")

from atreid.cli import main  # noqa: E402
from atreid.config import read_yaml, resolve_variant, validate_params  # noqa: E402
from atreid.constants import SCENARIOS  # noqa: E402

from tests.conftest import build_tiny_atustc  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
IMAGE_SIZE = [64, 32]


def save_model(path: Path, seed: int = 0) -> Path:
    """A tiny random trained-model file as training writes it (models/full/seed0/model.pt)."""
    from atreid.engine.checkpoint import model_from_settings, save_trained_model

    settings = resolve_variant(validate_params(read_yaml(REPO / "params.yaml")), "full", 0)
    settings["model"].update({"arch": "vit_tiny_uniat", "image_size": IMAGE_SIZE, "pretrained": "none"})
    labels = {"persons": [1, 2, 3], "outfits": [[1, 1], [2, 1], [3, 1]], "outfit_to_person": [0, 1, 2]}
    torch.manual_seed(seed)
    model = model_from_settings(settings, 3, 3)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # non-trivial BN statistics, as a trained model has
        for bn in model.bottleneck:
            bn.running_mean.copy_(0.1 * torch.randn(bn.num_features, generator=gen))
            bn.running_var.copy_(0.5 + torch.rand(bn.num_features, generator=gen))
    save_trained_model(path, model=model, settings=settings, labels=labels, epoch=1)
    return path


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    return save_model(tmp_path_factory.mktemp("extract") / "models" / "full" / "seed0" / "model.pt")


def write_image(path: Path, seed: int, size: tuple[int, int] = (64, 32), grey: bool = False) -> Path:
    """A random colour (or grey) JPEG of ``size`` (height, width)."""
    array = np.random.default_rng(seed).integers(0, 256, size=(*size, 3), dtype=np.uint8)
    if grey:
        array[...] = array[..., :1]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, quality=90)
    return path


@pytest.fixture
def folder(tmp_path) -> Path:
    """Six images: three at the model's size, three of other sizes (one in a subfolder, one grey)."""
    root = tmp_path / "images"
    for i in range(3):
        write_image(root / f"a{i}.jpg", i)
    write_image(root / "b_big.jpg", 10, size=(150, 70))
    write_image(root / "sub" / "c_small.png", 11, size=(20, 12))
    write_image(root / "sub" / "d_grey.jpg", 12, grey=True)
    return root


def cli(*args: object) -> int:
    return main([str(a) for a in args])


def one_line_error(capsys, *args: object) -> str:
    assert cli(*args) == 2
    err = capsys.readouterr().err.strip()
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


def evaluation_features(model_file: Path, root: Path, paths: list[str], flip: bool = False) -> torch.Tensor:
    """What the evaluation extracts for these images (atreid.eval.features.cached_features)."""
    from atreid.engine.checkpoint import load_trained_model
    from atreid.eval.features import cached_features

    model, _ = load_trained_model(model_file)
    return cached_features(model, model_file, root, paths, cache_dir=None, image_size=IMAGE_SIZE, batch_size=128,
                           flip=flip, device="cpu")


def head_matrix(frame: pd.DataFrame, head: str) -> np.ndarray:
    return np.stack([np.asarray(v, dtype=np.float32) for v in frame[head]])


# ---- atreid extract ------------------------------------------------------------------
@pytest.mark.parametrize("flip", [False, True])
def test_extract_folder_equals_the_evaluation_features(model_file, folder, tmp_path, capsys, flip):
    from atreid.data.benchmarks.files import list_files

    out = tmp_path / "out" / "features.parquet"
    assert cli("extract", "--model", model_file, "--folder", folder, "--out", out, "--device", "cpu",
               *(["--flip"] if flip else [])) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["images"] == 6 and report["resized"] == 2 and report["heads"] == list(SCENARIOS)
    assert out.is_file() and not list(out.parent.glob(".*.tmp"))

    frame = pd.read_parquet(out)
    rel = list_files(folder, folder)
    assert list(frame.columns) == ["path", "person", "camera", "modality", "clothes", "split", *SCENARIOS]
    assert frame["path"].tolist() == [str(folder / p) for p in rel]
    assert frame[["person", "camera", "modality", "clothes", "split"]].isna().all().all()  # a folder has no labels
    expected = evaluation_features(model_file, folder, rel, flip=flip)
    for i, head in enumerate(SCENARIOS):
        got = head_matrix(frame, head)
        assert got.shape == (6, 192)
        np.testing.assert_allclose(got, expected[:, i].numpy(), rtol=0, atol=1e-6)


def test_extract_heads_and_metadata(model_file, folder, tmp_path, capsys):
    import pyarrow.parquet as pq

    from atreid.io import file_sha256

    listing = tmp_path / "list.txt"
    paths = [str(folder / "a2.jpg"), str(folder / "sub" / "d_grey.jpg")]
    listing.write_text("# two images\n" + "\n".join(paths) + "\n\n")
    out = tmp_path / "two.parquet"
    assert cli("extract", "--model", model_file, "--images", listing, "--heads", "ad-st,DT-LT", "--out", out,
               "--device", "cpu") == 0
    frame = pd.read_parquet(out)
    assert list(frame.columns)[-2:] == ["DT-LT", "AD-ST"] and frame["path"].tolist() == paths
    metadata = json.loads(pq.read_schema(out).metadata[b"atreid"])
    assert metadata["heads"] == ["DT-LT", "AD-ST"] and metadata["image_size"] == IMAGE_SIZE
    assert metadata["model_sha256"] == file_sha256(model_file) and metadata["dim"] == 192
    expected = evaluation_features(model_file, Path("."), paths)
    np.testing.assert_allclose(head_matrix(frame, "AD-ST"), expected[:, 4].numpy(), rtol=0, atol=1e-6)


def test_extract_atustc_split_has_the_index_labels(model_file, tmp_path, capsys):
    from atreid.data.benchmarks import get_benchmark
    from atreid.io import atomic_write_csv

    data = tmp_path / "data"
    root = build_tiny_atustc(data / "atustc" / "images") / "AT-USTC"
    index, _, _ = get_benchmark("atustc").build_index(root)
    atomic_write_csv(data / "atustc" / "index.csv", index)
    out = tmp_path / "gallery.parquet"
    assert cli("extract", "--model", model_file, "--benchmark", "atustc", "--split", "gallery", "--data-dir", data,
               "--out", out, "--device", "cpu") == 0
    frame = pd.read_parquet(out)
    gallery = index[index["flag"] >= 6].reset_index(drop=True)
    assert frame["path"].tolist() == [str(root / p) for p in gallery["path"]]
    assert (frame["split"] == "gallery").all()
    for column in ("person", "camera", "modality", "clothes"):
        assert frame[column].tolist() == gallery[column].tolist()
    expected = evaluation_features(model_file, root, gallery["path"].tolist())
    np.testing.assert_allclose(head_matrix(frame, "NT-LT"), expected[:, 3].numpy(), rtol=0, atol=1e-6)
    err = one_line_error(capsys, "extract", "--model", model_file, "--benchmark", "atustc", "--split", "junk",
                         "--data-dir", data, "--out", out)
    assert "index.csv" in err and "valid splits: train, val, query, gallery" in err


def test_extract_bad_input_is_one_line(model_file, folder, tmp_path, capsys, monkeypatch):
    out = tmp_path / "f.parquet"
    err = one_line_error(capsys, "extract", "--model", tmp_path / "nope.pt", "--folder", folder, "--out", out)
    assert "nope.pt: model file not found" in err and "models/<variant>/seed<seed>/model.pt" in err
    err = one_line_error(capsys, "extract", "--model", folder / "a0.jpg", "--folder", folder, "--out", out)
    assert "a0.jpg: not an atreid model file" in err
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    err = one_line_error(capsys, "extract", "--model", tmp_path / "other.pt", "--folder", folder, "--out", out)
    assert "other.pt: not an atreid model file" in err
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    err = one_line_error(capsys, "extract", "--model", model_file, "--folder", tmp_path / "empty", "--out", out)
    assert "empty: no images (.bmp, .jpeg, .jpg, .png)" in err
    err = one_line_error(capsys, "extract", "--model", model_file, "--folder", folder, "--heads", "DT-ST,XX-LT",
                         "--out", out)
    assert "unknown head 'XX-LT'" in err and "AD-LT" in err
    (folder / "sub" / "broken.jpg").write_bytes(b"this is not a JPEG")
    err = one_line_error(capsys, "extract", "--model", model_file, "--folder", folder, "--out", out,
                         "--device", "cpu")
    assert "broken.jpg: cannot read image" in err and "remove it or replace it" in err
    listing = tmp_path / "list.txt"
    listing.write_text(f"{folder / 'a0.jpg'}\n{folder / 'gone.jpg'}\n")
    err = one_line_error(capsys, "extract", "--model", model_file, "--images", listing, "--out", out)
    assert "list.txt:2:" in err and "gone.jpg not found" in err
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    err = one_line_error(capsys, "extract", "--model", model_file, "--folder", folder, "--out", out)
    assert "pip install pyarrow" in err
    assert not out.exists()


# ---- atreid search -------------------------------------------------------------------
@pytest.fixture
def gallery(tmp_path) -> tuple[Path, Path, Path]:
    """(gallery folder, colour query, grey query); the gallery holds a copy of the colour query."""
    root = tmp_path / "gallery"
    for i in range(6):
        write_image(root / f"g{i}.jpg", 100 + i, size=(64 + 8 * i, 32))
    query = write_image(tmp_path / "queries" / "q.jpg", 7)
    shutil.copy(query, root / "z_copy_of_q.jpg")
    grey = write_image(tmp_path / "queries" / "grey.jpg", 8, grey=True)
    return root, query, grey


def ranked(report: dict, query: int) -> list[tuple[str, float]]:
    return [(r["path"], r["distance"]) for r in report["queries"][query]["results"]]


def test_search_ranks_a_copy_of_the_query_first(model_file, gallery, tmp_path, capsys):
    root, query, grey = gallery
    out = tmp_path / "search"
    assert cli("search", "--model", model_file, "--query", query, grey, "--gallery-folder", root, "--top-k", 4,
               "--out", out, "--device", "cpu") == 0
    report = json.loads((out / "search.json").read_text())
    first = ranked(report, 0)
    assert len(first) == 4 and first[0][0] == str(root / "z_copy_of_q.jpg") and abs(first[0][1]) < 1e-5
    distances = [d for _, d in first]
    assert distances == sorted(distances) and distances[1] > distances[0]
    # colour query, colour gallery -> daytime head; grey (IR) query -> cross-modality head; ST as clothes unknown
    assert [q["head"] for q in report["queries"]] == ["DT-ST", "AD-ST"]
    assert "both RGB" in report["queries"][0]["reason"] and "clothes unknown" in report["queries"][0]["reason"]
    assert report["queries"][1]["modality"] == "ir" and "cross-modality" in report["queries"][1]["reason"]
    page = (out / "index.html").read_text()
    assert page.count("data-rank=") == 8 and "data:image/jpeg;base64," in page
    assert (out / "search.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # a stated scenario is used as stated
    assert cli("search", "--model", model_file, "--query", query, "--gallery-folder", root, "--scenario", "nt-lt",
               "--out", out, "--device", "cpu") == 0
    report = json.loads((out / "search.json").read_text())
    assert report["queries"][0]["head"] == "NT-LT" and "stated with --scenario NT-LT" in report["queries"][0]["reason"]


def test_search_on_a_feature_table_ranks_as_on_the_folder(model_file, gallery, tmp_path, capsys):
    root, query, _ = gallery
    table = tmp_path / "gallery.parquet"
    assert cli("extract", "--model", model_file, "--folder", root, "--out", table, "--device", "cpu") == 0
    assert cli("search", "--model", model_file, "--query", query, "--gallery-folder", root, "--out",
               tmp_path / "a", "--device", "cpu") == 0
    assert cli("search", "--model", model_file, "--query", query, "--gallery-features", table, "--out",
               tmp_path / "b", "--device", "cpu") == 0
    a, b = (json.loads((tmp_path / d / "search.json").read_text()) for d in ("a", "b"))
    assert [p for p, _ in ranked(a, 0)] == [p for p, _ in ranked(b, 0)] and len(ranked(a, 0)) == 7
    np.testing.assert_allclose([d for _, d in ranked(a, 0)], [d for _, d in ranked(b, 0)], atol=1e-6)
    assert b["queries"][0]["head"] == "DT-ST"
    capsys.readouterr()

    other = save_model(tmp_path / "other" / "model.pt", seed=3)
    err = one_line_error(capsys, "search", "--model", other, "--query", query, "--gallery-features", table,
                         "--out", tmp_path / "c", "--device", "cpu")
    assert "gallery.parquet: features of another model file" in err and "re-extract" in err
    partial = tmp_path / "partial.parquet"
    assert cli("extract", "--model", model_file, "--folder", root, "--heads", "AD-LT", "--out", partial,
               "--device", "cpu") == 0
    err = one_line_error(capsys, "search", "--model", model_file, "--query", query, "--gallery-features", partial,
                         "--out", tmp_path / "c", "--device", "cpu")
    assert "partial.parquet: has no DT-ST features" in err and "--heads all" in err
    err = one_line_error(capsys, "search", "--model", tmp_path / "nope.pt", "--query", query, "--gallery-folder",
                         root, "--out", tmp_path / "c")
    assert "nope.pt: model file not found" in err
    (tmp_path / "empty").mkdir()
    err = one_line_error(capsys, "search", "--model", model_file, "--query", query, "--gallery-folder",
                         tmp_path / "empty", "--out", tmp_path / "c")
    assert "empty: no images" in err
    assert not (tmp_path / "c").exists()


# ---- the page in a browser -----------------------------------------------------------
def chromium() -> str:
    """The Chromium binary; installed with apt-get when missing (as root only), else skip."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("no Chromium on this machine, and apt-get is not usable here (not root or no apt): "
                    "install chromium to run this test")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], env=env, capture_output=True, timeout=600,
                       check=True)
    except (subprocess.SubprocessError, OSError) as exc:
        pytest.skip(f"Chromium is missing and `apt-get install -y chromium` failed ({type(exc).__name__}); "
                    "install chromium to run this test")
    found = shutil.which("chromium")
    if found is None:
        pytest.skip("`apt-get install -y chromium` installed no chromium binary")
    return found


class PageReader(HTMLParser):
    """Per query section: head name, query image alt text, results (rank, distance, image alt)."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[dict] = []
        self._in_head = False
        self.body: dict[str, str] = {}

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        classes = (attrs.get("class") or "").split()
        if tag == "body":
            self.body = attrs
        elif tag == "section" and "query" in classes:
            self.sections.append({"head": "", "query": None, "results": []})
        elif tag == "b" and "head-name" in classes:
            self._in_head = True
        elif tag == "li" and "result" in classes:
            self.sections[-1]["results"].append({"rank": int(attrs["data-rank"]),
                                                 "distance": float(attrs["data-distance"]), "alt": None})
        elif tag == "img" and self.sections:
            section = self.sections[-1]
            if section["query"] is None:
                section["query"] = attrs.get("alt")
            elif section["results"] and section["results"][-1]["alt"] is None:
                section["results"][-1]["alt"] = attrs.get("alt")

    def handle_endtag(self, tag):
        if tag == "b":
            self._in_head = False

    def handle_data(self, data):
        if self._in_head:
            self.sections[-1]["head"] += data


@pytest.mark.slow
def test_search_page_in_headless_chromium(model_file, gallery, tmp_path, capsys):
    browser = chromium()
    root, query, grey = gallery
    out = tmp_path / "page"
    assert cli("search", "--model", model_file, "--query", query, grey, "--gallery-folder", root, "--top-k", 5,
               "--out", out, "--device", "cpu") == 0
    command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--user-data-dir=" + str(tmp_path / "profile"), "--dump-dom", (out / "index.html").as_uri()]
    try:
        dom = subprocess.run(command, capture_output=True, text=True, timeout=90, check=True).stdout
    except subprocess.CalledProcessError as exc:
        pytest.fail(f"chromium failed: {exc.stderr[-2000:]}")
    reader = PageReader()
    reader.feed(dom)
    assert len(reader.sections) == 2
    first, second = reader.sections
    assert first["head"] == "DT-ST" and second["head"] == "AD-ST"
    assert first["query"] == f"query {query}" and second["query"] == f"query {grey}"
    for section in reader.sections:
        results = section["results"]
        assert [r["rank"] for r in results] == [1, 2, 3, 4, 5]
        distances = [r["distance"] for r in results]
        assert distances == sorted(distances)
    assert first["results"][0]["alt"] == f"rank 1: {root / 'z_copy_of_q.jpg'}"
    assert first["results"][0]["distance"] < 1e-5
    assert "auto: query rgb" in dom and "clothes unknown" in dom
    # every embedded thumbnail decoded in the browser (the page's own check after loading)
    assert reader.body.get("data-images-shown") == "12/12"
    shot = tmp_path / "page.png"
    subprocess.run([*command[:-2], f"--screenshot={shot}", "--window-size=1200,900", command[-1]],
                   capture_output=True, timeout=90, check=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_search_queries_from_a_benchmark_one_per_person_rgb_and_ir(model_file, tmp_path, capsys):
    from atreid.data.benchmarks import get_benchmark
    from atreid.io import atomic_write_csv
    from atreid.report.search import benchmark_queries

    data = tmp_path / "data"
    root = build_tiny_atustc(data / "atustc" / "images") / "AT-USTC"
    index, _, _ = get_benchmark("atustc").build_index(root)
    atomic_write_csv(data / "atustc" / "index.csv", index)
    queries = index[index["flag"].between(2, 5)]
    picked = benchmark_queries("atustc", 2, data)
    assert picked == benchmark_queries("atustc", 2, data)  # deterministic
    rows = [queries[queries["path"] == str(Path(p).relative_to(root))].iloc[0] for p in picked]
    persons = sorted(queries["person"].unique())
    assert [r["person"] for r in rows] == persons[:2]
    for row, wanted in zip(rows, ("rgb", "ir")):
        has = set(queries[queries["person"] == row["person"]]["modality"])
        assert row["modality"] == (wanted if wanted in has else row["modality"])
    out = tmp_path / "page"
    assert cli("search", "--model", model_file, "--query-from", "atustc", "--queries", "2", "--benchmark", "atustc",
               "--data-dir", data, "--top-k", "3", "--out", out, "--device", "cpu") == 0
    report = json.loads((out / "search.json").read_text())
    assert [q["path"] for q in report["queries"]] == picked
    err = one_line_error(capsys, "search", "--model", model_file, "--query-from", "atustc", "--queries", "0",
                         "--benchmark", "atustc", "--data-dir", data, "--out", out)
    assert "--queries" in err
