"""Benchmarks: one module per benchmark, one registry (:mod:`.registry`).

A benchmark module (``atreid/data/benchmarks/<name>.py``) holds one
:class:`~atreid.data.benchmarks.base.Benchmark` subclass decorated with
:func:`~atreid.data.benchmarks.registry.register_benchmark`: how its release is parsed,
its published statistics, its evaluation protocols (:mod:`atreid.data.protocols`), the
miniature that stands in for it in the demo and which labels its training split has.
Adding a benchmark = one such module, imported below, and its ``data.benchmarks`` entry
in params.yaml.
"""

from __future__ import annotations

# Importing the modules registers the benchmarks.
from atreid.data.benchmarks import (  # noqa: F401
    atustc,
    cuhk03,
    custom,
    deepchange,
    llcm,
    ltcc,
    market1501,
    msmt17,
    prcc,
    regdb,
    sysu_mm01,
    vc_clothes,
)
from atreid.data.benchmarks.base import Benchmark
from atreid.data.benchmarks.registry import (
    benchmark_names,
    check_benchmark_names,
    check_params_benchmarks,
    get_benchmark,
    register_benchmark,
)

__all__: list[str] = ["Benchmark", "benchmark_names", "check_benchmark_names", "check_params_benchmarks",
                      "get_benchmark", "register_benchmark"]
