"""The single command-line interface: ``python -m atreid <step> ...`` / ``atreid <step>``.

Every pipeline step (Snakemake rules, DVC stages) is one subcommand. Subcommands live in
``atreid/commands/<name>.py`` and each defines ``register(subparsers)``, so a step's
argument parsing sits next to nothing else and the rules stay free of logic.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import pkgutil
import platform
import sys
from typing import Sequence

import atreid.commands
from atreid import __version__
from atreid.errors import AtreidError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="atreid", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"atreid {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="<step>", required=True)
    for module_info in sorted(pkgutil.iter_modules(atreid.commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"atreid.commands.{module_info.name}")
        if hasattr(module, "register"):
            module.register(subparsers)
    return parser


# CPU kernels pinned to AVX2 (torch's vectorised operators, MKL's BLAS, oneDNN's
# convolutions). Their AVX-512 versions round differently, so without this a demo run on
# an AVX-512 machine drifts from one on an AVX2 machine; pinned, a CPU job with the same
# thread count gives the same weights and metrics on any x86-64 machine with AVX2. An
# explicit setting in the environment wins. (Measured: benchmarks/README.md.)
CPU_KERNEL_PINS = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def pin_cpu_kernels() -> dict[str, str]:
    """Set :data:`CPU_KERNEL_PINS` (unless already set) on x86-64 CPUs with AVX2, before
    torch is imported; returns what is in effect."""
    if "torch" in sys.modules or platform.machine().lower() not in ("x86_64", "amd64"):
        return {}
    try:
        with open("/proc/cpuinfo") as f:
            has_avx2 = " avx2" in f.read()
    except OSError:
        return {}
    if not has_avx2:
        return {}
    for key, value in CPU_KERNEL_PINS.items():
        os.environ.setdefault(key, value)
    return {key: os.environ[key] for key in CPU_KERNEL_PINS}


def main(argv: Sequence[str] | None = None) -> int:
    pin_cpu_kernels()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except AtreidError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        # Disk full, quota, read-only or forbidden folder outside the atomic writers
        # (which already say it in one line): still one line, not a traceback.
        if exc.errno not in _DISK_ERRORS:
            raise
        print(f"error: {_os_error_line(exc)}", file=sys.stderr)
        return 2
    return int(result or 0)


_DISK_ERRORS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EROFS, errno.EACCES, errno.EPERM,
                errno.EIO}


def _os_error_line(exc: OSError) -> str:
    where = exc.filename if exc.filename is not None else "a file"
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        fix = "free space on that disk (or point the output elsewhere) and rerun"
    elif exc.errno == errno.EIO:
        fix = "check the disk and rerun"
    else:
        fix = "make it writable (or point the output elsewhere) and rerun"
    return f"{where}: {exc.strerror or exc}; {fix}"
