"""Code is an input: the package code each step runs (atreid/code_deps.py).

- fingerprints ignore comments, docstrings and blank lines, and see every other edit;
- a step's code follows what it may call, symbol by symbol: training does not hold the
  evaluation's metrics, and a variant without MoAE/HDW does not hold their code;
- the closure is complete: every function that really runs in a traced pipeline (data
  preparation, training and evaluation of each variant) lies in the step's code;
- dvc.yaml's code deps are what `atreid code-deps --dvc` writes.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from atreid import code_deps
from atreid.cli import main
from atreid.config import load_params, resolve_variant
from tests.conftest import REPO, settings_file

PARAMS = load_params(REPO / "params.yaml")
VARIANTS = {name: resolve_variant(PARAMS, name, 0) for name in ("full", "baseline", "ncls1")}


# ---- fingerprints -------------------------------------------------------------------------
SOURCE = '''"""Module docstring."""
import math


def area(r):
    """Docstring."""
    # a comment
    return math.pi * r * r  # trailing comment


def unused():
    return 1
'''


def test_comments_docstrings_and_blank_lines_do_not_count():
    base = code_deps.normalized_source(SOURCE)
    edited = SOURCE.replace("# a comment", "# another comment\n\n\n").replace('"""Docstring."""', '"""New."""')
    assert code_deps.normalized_source(edited) == base
    assert "#" not in base and "Docstring" not in base and "\n\n" not in base
    assert code_deps.normalized_source(SOURCE.replace("r * r", "r ** 2")) != base
    assert code_deps.normalized_source(SOURCE.replace("'#'", "'#'")) == base
    hashed = SOURCE.replace("return 1", "return '# not a comment'")
    assert "'# not a comment'" in code_deps.normalized_source(hashed)


STEPS = [("train", v) for v in VARIANTS] + [("evaluate", v) for v in VARIANTS] + [("prepare-atustc", None)]


def fingerprints_in_copy(tmp_path: Path, edits: dict[str, tuple[str, str]]) -> dict[str, dict[str, str]]:
    """{"<verb> <variant>": fingerprints} of :data:`STEPS` in a copy of the package with
    ``edits`` applied ({file: (old, new)}), computed by a fresh interpreter that imports the copy."""
    import shutil

    copy = tmp_path / f"copy{len(list(tmp_path.glob('copy*')))}"
    shutil.copytree(REPO / "atreid", copy / "atreid", ignore=shutil.ignore_patterns("__pycache__"))
    for name, (old, new) in edits.items():
        file = copy / name
        text = file.read_text()
        assert old in text, (name, old)
        file.write_text(text.replace(old, new, 1))
    steps = [(verb, VARIANTS[variant] if variant else None, f"{verb} {variant}") for verb, variant in STEPS]
    code = ("import json, sys; from atreid import code_deps; steps = json.loads(sys.stdin.read()); "
            "print(json.dumps({key: code_deps.step_fingerprints(verb, settings) for verb, settings, key in steps}))")
    result = subprocess.run([sys.executable, "-c", code], cwd=copy, capture_output=True, text=True,
                            input=json.dumps(steps), env=dict(os.environ, PYTHONPATH=str(copy)), check=True)
    prints = json.loads(result.stdout)
    assert all(Path(copy, path).exists() for step in prints.values() for path in step)
    return prints


def changed(before: dict, after: dict, step: str) -> set[str]:
    before, after = before[step], after[step]
    return {path for path in set(before) | set(after) if before.get(path) != after.get(path)}


# An edit of MoAE's routing (what only moae: true runs).
MOAE_EDIT = {"atreid/model/moae.py": ("        probs = self.gate_probs(cls).detach()\n",
                                      "        probs = self.gate_probs(cls).detach() * 1\n")}
METRICS_FILE = "atreid/eval/metrics.py"


@pytest.fixture(scope="module")
def unedited(tmp_path_factory) -> dict:
    return fingerprints_in_copy(tmp_path_factory.mktemp("unedited"), {})


def test_an_edit_of_moae_reaches_the_moae_variants_only(tmp_path, unedited):
    edited = fingerprints_in_copy(tmp_path, MOAE_EDIT)
    for variant, expected in (("full", {"atreid/model/moae.py"}), ("baseline", set()), ("ncls1", set())):
        assert changed(unedited, edited, f"train {variant}") == expected, variant
        assert changed(unedited, edited, f"evaluate {variant}") == expected, variant


def test_metric_code_is_the_evaluation_s_not_the_training_s(tmp_path, unedited):
    # chance_levels: a metric function that only the evaluation calls.
    edited = fingerprints_in_copy(tmp_path, {METRICS_FILE: ("    return r / n, ", "    r = r + 0\n    return r / n, ")})
    for variant in VARIANTS:
        assert METRICS_FILE not in code_deps.step_files("train", VARIANTS[variant])
        assert changed(unedited, edited, f"train {variant}") == set()
        assert changed(unedited, edited, f"evaluate {variant}") == {METRICS_FILE}
    # The data steps hold metrics.py's RemovalRule (protocol definitions), not its metric functions.
    assert changed(unedited, edited, "prepare-atustc None") == set()


def test_a_comment_changes_no_fingerprint(tmp_path, unedited):
    edited = fingerprints_in_copy(tmp_path, {"atreid/model/moae.py": ("class MoAE(nn.Module):\n",
                                                                       "class MoAE(nn.Module):  # a note\n"),
                                             METRICS_FILE: ("\n\n", "\n\n# a note\n\n")})
    assert all(changed(unedited, edited, step) == set() for step in unedited)


def test_switched_symbols_exist():
    for module, (_, symbols) in code_deps.SWITCHED.items():
        info = code_deps._info(module)
        for symbol in symbols:
            owner, _, method = symbol.partition(".")
            assert symbol == code_deps.ALL or owner in info.defs, (module, symbol)
            if method:
                assert method in {node.name for node in info.defs[owner].body if isinstance(node, ast.FunctionDef)}


def test_unknown_verb_is_one_line(capsys):
    assert main(["code-deps", "no-such-verb"]) == 2
    assert capsys.readouterr().err.strip() == "error: atreid has no verb 'no-such-verb'"


def test_snakemake_params_name_the_file():
    params = code_deps.snakemake_params(["train"], settings_of=lambda wildcards: VARIANTS[wildcards],
                                        all_settings=VARIANTS.values())
    moae = params[code_deps.param_name("atreid/model/moae.py")]
    assert moae("full").startswith("atreid/model/moae.py@") and moae("full") != moae("baseline")
    assert moae("baseline") == moae("ncls1")


# ---- dvc.yaml ---------------------------------------------------------------------------------
def test_dvc_yaml_code_deps_are_in_sync(tmp_path):
    from atreid.commands.code_deps import dvc_code_deps

    assert dvc_code_deps(REPO / "dvc.yaml", REPO / "params.yaml", write=False) == []
    stale = tmp_path / "dvc.yaml"
    stale.write_text((REPO / "dvc.yaml").read_text().replace("      - atreid/model/moae.py\n", "", 1))
    [line] = [d for d in dvc_code_deps(stale, REPO / "params.yaml", write=False) if "moae" in d]
    assert line.startswith("stage ") and "missing atreid/model/moae.py" in line
    dvc_code_deps(stale, REPO / "params.yaml", write=True)
    assert dvc_code_deps(stale, REPO / "params.yaml", write=False) == []


# ---- completeness: every function that runs lies in the step's code ---------------------------
class Tracer:
    """Records the atreid functions that run (file, first line, name), in every thread;
    not what the CLI's argument registration runs (every verb's ``register``, called by
    cli.build_parser whatever the verb: it only declares flags)."""

    def __init__(self) -> None:
        self.calls: set[tuple[str, int, str]] = set()
        self.package = str(code_deps.PACKAGE_DIR) + os.sep
        self.commands = str(code_deps.PACKAGE_DIR / "commands") + os.sep
        self.registering = 0  # Python frames open inside a register()

    def __call__(self, frame, event, arg):
        if event == "call":
            code = frame.f_code
            if self.registering or (code.co_name == "register" and code.co_filename.startswith(self.commands)):
                self.registering += 1
            elif code.co_filename.startswith(self.package):
                self.calls.add((code.co_filename, code.co_firstlineno, code.co_name))
        elif event == "return" and self.registering:
            self.registering -= 1
        return None

    def __enter__(self):
        sys.setprofile(self)
        threading.setprofile(self)
        return self

    def __exit__(self, *exc):
        sys.setprofile(None)
        threading.setprofile(None)


def _class_lines(module: str) -> set[int]:
    return {node.lineno for node in ast.walk(code_deps._parse(module)) if isinstance(node, ast.ClassDef)}


def unaccounted(calls: set[tuple[str, int, str]], verb: str, settings: dict | None) -> list[str]:
    """The traced functions that lie outside ``verb``'s code. Not counted: module and class
    bodies (what importing runs) and the argument registration of every verb (cli.build_parser)."""
    ranges = code_deps.step_ranges(verb, settings)
    outside = []
    for file, line, name in sorted(calls):
        rel = Path(file).relative_to(code_deps.ROOT).with_suffix("")
        module = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        if name == "<module>" or line in _class_lines(module):
            continue
        if not any(first <= line <= last for first, last in ranges.get(module, [])):
            outside.append(f"{module}:{line} {name}")
    return outside


def traced(*argv: object) -> set[tuple[str, int, str]]:
    with Tracer() as tracer:
        assert main([str(a) for a in argv]) in (0, None)
    return tracer.calls


TINY_SYNTHETIC = {"seed": 0, "train_persons": 6, "test_persons": 4, "outfits": [2, 2], "dates": 2,
                  "train_cameras_per_outfit": 4, "train_frames_per_clip": 4, "val_fraction": 0.2,
                  "image_height": 64, "image_width": 32, "jpeg_quality": 90}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> dict:
    """The demo's steps, in-process and traced, on a tiny synthetic AT-USTC and Market-1501."""
    root = tmp_path_factory.mktemp("traced")
    data = root / "data"
    calls: dict[str, set] = {}
    atustc = data / "atustc"
    calls["prepare-atustc"] = traced(
        "prepare-atustc", "--source", json.dumps({"source": "synthetic", "sha256": None}),
        "--synthetic", json.dumps(TINY_SYNTHETIC), "--out", atustc / "images", "--manifest", atustc / "prepared.json",
        "--record", atustc / "source.json", "--threads", 1)
    calls["install-images"] = traced("install-images", "--manifest", atustc / "prepared.json",
                                     "--out", atustc / "images")
    calls["index-atustc"] = traced("index-atustc", "--images", atustc / "images", "--expected", "synthetic",
                                   "--workers", 1,
                                   "--index", atustc / "index.csv", "--report", atustc / "verification.json",
                                   "--report-txt", atustc / "verification.txt")
    calls["sample-frames"] = traced("sample-frames", "--index", atustc / "index.csv", "--frames-per-clip", 2,
                                    "--out", atustc / "train_sampled.csv", "--labels", atustc / "labels.json")
    market = data / "market1501"
    synthetic = {key: TINY_SYNTHETIC[key] for key in ("seed", "image_height", "image_width", "jpeg_quality")}
    calls["prepare-benchmark"] = traced(
        "prepare-benchmark", "--benchmark", "market1501", "--source", json.dumps({"source": "synthetic", "sha256": None}),
        "--synthetic", json.dumps(synthetic), "--out", market / "images", "--manifest", market / "prepared.json",
        "--record", market / "source.json")
    traced("install-images", "--manifest", market / "prepared.json", "--out", market / "images",
           "--rule", "prepare_benchmark")
    calls["index-benchmark"] = traced("index-benchmark", "--benchmark", "market1501", "--images", market / "images",
                                      "--expected", "synthetic", "--workers", 1, "--index", market / "index.csv",
                                      "--report", market / "verification.json",
                                      "--report-txt", market / "verification.txt")
    pretrain = {"arch": PARAMS["model"]["arch"], "image_size": [64, 32],
                "pretrain": {**PARAMS["pretrain"], "persons": 6, "outfits": 2, "cameras": 4, "views": 2,
                             "iterations": 2, "batch_size": 8, "threads": 1}}
    calls["pretrain-backbone"] = traced("pretrain-backbone", "--settings", settings_file(root / "pretrain.json", pretrain),
                                        "--out", root / "backbone.pth", "--history", root / "pretrain.csv")
    for variant, settings in VARIANTS.items():
        settings = json.loads(json.dumps(settings))
        settings["model"].update({"image_size": [64, 32], "pretrained": "none"})
        settings["train"].update({"epochs": 1, "iters_per_epoch": 2, "batch_p": 4, "batch_k": 4, "num_workers": 0})
        model = root / "models" / variant / "model.pt"
        calls[f"train {variant}"] = traced(
            "train", "--settings", settings_file(root / f"train-{variant}.json", settings), "--index", atustc / "train_sampled.csv",
            "--labels", atustc / "labels.json", "--images", atustc / "images" / "AT-USTC", "--out", model,
            "--history", model.with_name("history.csv"), "--checkpoint-dir", root / "checkpoints" / variant,
            "--threads", 1)
        calls[f"evaluate {variant}"] = traced(
            "evaluate", "--model", model, "--benchmark", "atustc", "--benchmark", "market1501", "--data-dir", data,
            "--settings", settings_file(root / "evaluate.json",
                                      {"batch_size": 32, "flip": False, "chunk_size": 64, "device": "cpu"}),
            "--out-dir", root / "results" / variant, "--threads", 1)
    if os.environ.get("ATREID_TRACE_DUMP"):  # for a look at what ran: {step: [[file, line, name], ...]}
        Path(os.environ["ATREID_TRACE_DUMP"]).write_text(json.dumps({k: sorted(v) for k, v in calls.items()}))
    return {"root": root, "calls": calls}


@pytest.mark.slow
@pytest.mark.parametrize("step", ["prepare-atustc", "install-images", "index-atustc", "sample-frames",
                                  "prepare-benchmark", "index-benchmark", "pretrain-backbone", "train full",
                                  "train baseline",
                                  "train ncls1", "evaluate full", "evaluate baseline", "evaluate ncls1"])
def test_every_function_that_runs_is_in_the_step_s_code(pipeline, step):
    verb, _, variant = step.partition(" ")
    calls = pipeline["calls"][step]
    module, function = code_deps.verb_entry(verb)
    assert any(name == function and file.endswith(code_deps.relative_file(module)) for file, _, name in calls), step
    settings = code_deps.NO_METHOD_SWITCHES if verb == "pretrain-backbone" else VARIANTS.get(variant)
    outside = unaccounted(calls, verb, settings)
    assert outside == [], "\n".join(outside)


@pytest.mark.slow
def test_switched_off_code_does_not_run(pipeline):
    """What SWITCHED leaves out of a variant's code really does not run for it, and does run
    for the variant that switches it on (the table is neither stale nor vacuous)."""
    for variant, settings in VARIANTS.items():
        off = set(code_deps.switched_off(settings))
        for verb in ("train", "evaluate"):
            ran = {(Path(f).relative_to(code_deps.ROOT).with_suffix("").as_posix().replace("/", "."), name)
                   for f, _, name in pipeline["calls"][f"{verb} {variant}"]}
            assert not {(m, n) for m, n in ran if (m, n) in off}, (variant, verb)
    ran_full = {name for f, _, name in pipeline["calls"]["train full"] if f.endswith("moae.py")}
    assert "forward" in ran_full
    ran_full_losses = {name for f, _, name in pipeline["calls"]["train full"] if f.endswith(("hdw.py", "said.py"))}
    assert {"hdw_loss", "mask_other_outfits"} <= ran_full_losses


def test_fingerprints_are_kept_on_disk_per_state_of_the_package(tmp_path, monkeypatch):
    from atreid import code_deps

    cache = tmp_path / "cache"
    code_deps.use_fingerprint_cache(cache)
    try:
        first = code_deps.step_fingerprints("table")
        saved = list(cache.glob("code-fingerprints-*.json"))
        assert [file.name for file in saved] == [f"code-fingerprints-{code_deps.package_digest()}.json"]
        # A new process (the cache cleared) reads them back without tracing anything.
        code_deps.use_fingerprint_cache(cache)
        with monkeypatch.context() as patch:
            patch.setattr(code_deps, "_step_ranges", lambda *args: pytest.fail("traced again"))
            assert code_deps.step_fingerprints("table") == first
        # Another state of the package's files: traced again, the earlier file removed.
        with monkeypatch.context() as patch:
            patch.setattr(code_deps, "package_digest", lambda: "0" * 24)
            code_deps.use_fingerprint_cache(cache)
            assert code_deps.step_fingerprints("table") == first
            assert [file.name for file in cache.iterdir()] == [f"code-fingerprints-{'0' * 24}.json"]
            # An unreadable file is traced again and rewritten.
            (cache / f"code-fingerprints-{'0' * 24}.json").write_text("{not json")
            code_deps.use_fingerprint_cache(cache)
            assert code_deps.step_fingerprints("table") == first
            assert json.loads((cache / f"code-fingerprints-{'0' * 24}.json").read_text())
    finally:
        code_deps.use_fingerprint_cache(None)


def test_the_package_digest_follows_the_files_bytes_not_their_bytecode(tmp_path, monkeypatch):
    from atreid import code_deps

    package = tmp_path / "atreid"
    (package / "__pycache__").mkdir(parents=True)
    (package / "a.py").write_text("x = 1\n")
    monkeypatch.setattr(code_deps, "PACKAGE_DIR", package)
    before = code_deps.package_digest()
    (package / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"bytecode")
    assert code_deps.package_digest() == before
    (package / "a.py").write_text("x = 2\n")
    assert code_deps.package_digest() != before
