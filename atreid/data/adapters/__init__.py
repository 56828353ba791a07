"""Registry of the dataset adapters (one module per dataset): AT-USTC and the
cross-dataset benchmarks.

``get_adapter(name)`` returns the adapter registered under ``name``; an unknown name is
an error listing the valid ones. ``benchmark_names()`` lists the cross-dataset
benchmarks (every adapter but AT-USTC, the training dataset), ``dataset_names()`` every
adapter. Adding a benchmark = one adapter module decorated with
:func:`register_benchmark` (imported below), its protocol entry in
``atreid.eval.cross_dataset`` and one ``data.benchmarks`` entry in params.yaml.
"""

from __future__ import annotations

from typing import TypeVar

from atreid.data.adapters.base import BenchmarkAdapter
from atreid.errors import AtreidError

A = TypeVar("A", bound=type[BenchmarkAdapter])

_REGISTRY: dict[str, type[BenchmarkAdapter]] = {}


def register_benchmark(cls: A) -> A:
    """Class decorator: register an adapter under its ``name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"benchmark {cls.name!r} registered twice ({_REGISTRY[cls.name].__name__}, {cls.__name__})")
    _REGISTRY[cls.name] = cls
    return cls


def benchmark_names() -> list[str]:
    """Registered cross-dataset benchmark names, sorted (AT-USTC is not one)."""
    return sorted(name for name, cls in _REGISTRY.items() if cls.cross_dataset)


def dataset_names() -> list[str]:
    """Every registered adapter: the cross-dataset benchmarks, then the others (atustc)."""
    return [*benchmark_names(), *sorted(set(_REGISTRY) - set(benchmark_names()))]


def get_adapter(name: str) -> BenchmarkAdapter:
    """A fresh adapter for dataset ``name`` (unknown names list the valid ones)."""
    try:
        return _REGISTRY[name]()
    except KeyError:
        raise AtreidError(f"unknown benchmark {name!r}; valid: {', '.join(dataset_names())}") from None


# Importing the modules registers the adapters (kept last: they import this package).
from atreid.data.adapters import (  # noqa: E402,F401
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

__all__: list[str] = ["BenchmarkAdapter", "benchmark_names", "dataset_names", "get_adapter", "register_benchmark"]
