"""The CLI starts without importing torch: ~90 pipeline jobs each pay the start-up, and the
data steps (generate, import, index, sample frames) never need torch."""

import subprocess
import sys


def test_building_the_parser_imports_no_torch():
    code = ("import sys, atreid.cli; atreid.cli.build_parser(); "
            "print(sorted(m for m in ('torch', 'timm', 'torchvision') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"

