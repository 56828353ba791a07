"""The CLI starts without importing torch: ~90 pipeline jobs each pay the start-up, and the
data steps (generate, import, index, sample frames) never need torch."""

import subprocess
import sys

import pytest


def test_building_the_parser_imports_no_torch():
    code = ("import sys, atreid.cli; atreid.cli.build_parser(); "
            "print(sorted(m for m in ('torch', 'timm', 'torchvision') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"



def _has_avx2() -> bool:
    import platform

    try:
        return platform.machine().lower() in ("x86_64", "amd64") and " avx2" in open("/proc/cpuinfo").read()
    except OSError:
        return False


@pytest.mark.slow  # over the fast tier's 5 s (a Snakemake or interpreter start-up)
def test_cli_pins_cpu_kernels_to_avx2_before_torch(monkeypatch):
    if not _has_avx2():
        import pytest

        pytest.skip("the pins apply to x86-64 CPUs with AVX2 only")
    env = {k: v for k, v in __import__("os").environ.items()
           if k not in ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA")}
    code = ("import atreid.cli as c; pinned = c.pin_cpu_kernels(); import torch; "
            "print(pinned['MKL_CBWR'], pinned['ONEDNN_MAX_CPU_ISA'], torch.backends.cpu.get_cpu_capability())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.split() == ["AVX2", "AVX2", "AVX2"]
    # a setting of the user's wins
    env["ATEN_CPU_CAPABILITY"] = "default"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.split()[-1] == "DEFAULT"
    # too late once torch is imported: nothing is claimed
    late = "import torch, atreid.cli as c; print(c.pin_cpu_kernels())"
    env.pop("ATEN_CPU_CAPABILITY")
    assert subprocess.run([sys.executable, "-c", late], capture_output=True, text=True, check=True,
                          env=env).stdout.strip() == "{}"


def test_the_workflow_imports_no_torch_when_it_parses():
    """Every `snakemake -n` parses the Snakefile: an atreid module it imports that pulls in
    torch costs ~1.5 s of every dry run (it once made a no-op `snakemake -n` take 3.4 s)."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    sources = [root / "Snakefile", *sorted((root / "rules").glob("*.smk"))]
    modules = sorted({m for path in sources
                      for m in re.findall(r"^\s*(?:from|import)\s+(atreid[\w.]*)", path.read_text(), re.M)})
    assert "atreid.workflow" in modules and "atreid.config" in modules, modules
    # The plan's functions import some modules when called (eval.rerank_options): call them.
    code = ("import importlib, sys\n"
            f"for name in {modules!r}:\n    importlib.import_module(name)\n"
            "import atreid.workflow as plan\n"
            "from atreid.config import load_params\n"
            "config = load_params('params.yaml')\n"
            "plan.eval_settings(config), plan.train_settings(config, 'full', 0), plan.import_settings(config, 'full')\n"
            "plan.benchmark_sources(config, ['market1501']), plan.training_threads(config, 'full', 2)\n"
            "assert 'atreid.eval.rerank_options' in sys.modules\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=root).stdout
    assert out.strip() == "False", modules
