"""The one registry of benchmarks: name -> the class of its module.

A benchmark module decorates its class with :func:`register_benchmark`; everything
keyed by a benchmark's name (parsing, published counts, protocols, its miniature, its
training labels) is an attribute of that class, so this registry is the only table of
names. :func:`check_benchmark_names` is the one validation of names a user gives
(``eval.benchmarks``, ``data.benchmarks``, ``data.train_on``, a command's ``--benchmark``).

This module imports no benchmark module (``atreid.data.benchmarks`` imports them all),
so a benchmark module may import it at its top without a cycle.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, TypeVar

from atreid.data.benchmarks.base import Benchmark
from atreid.errors import AtreidError

B = TypeVar("B", bound=type[Benchmark])

_REGISTRY: dict[str, type[Benchmark]] = {}


def register_benchmark(cls: B) -> B:
    """Class decorator: register a benchmark under its ``name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    protocols = getattr(cls, "protocols", None)
    if protocols is None or protocols.benchmark != cls.name:
        raise ValueError(f"{cls.__name__} declares no protocols of its own (protocols = BenchmarkProtocols("
                         f"{cls.name!r}, ...), see atreid.data.protocols)")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"benchmark {cls.name!r} registered twice ({_REGISTRY[cls.name].__name__}, {cls.__name__})")
    _REGISTRY[cls.name] = cls
    return cls


def benchmark_names() -> list[str]:
    """Every registered benchmark, sorted."""
    return sorted(_REGISTRY)


def unknown_benchmark(name: str) -> AtreidError:
    """The error for a name no module registers, listing the valid ones."""
    return AtreidError(f"unknown benchmark {name!r}; valid: {', '.join(benchmark_names())}")


def get_benchmark(name: str) -> Benchmark:
    """A fresh instance of benchmark ``name`` (unknown names list the valid ones)."""
    try:
        return _REGISTRY[name]()
    except KeyError:
        raise unknown_benchmark(name) from None


def check_benchmark_names(names: Iterable[str], where: str) -> None:
    """Raise naming ``where`` (e.g. ``params.yaml: eval.benchmarks``) and the valid names
    unless every name is registered."""
    unknown = sorted(set(names) - set(_REGISTRY))
    if unknown:
        raise AtreidError(f"{where}: unknown benchmark {unknown[0]!r}; valid: {', '.join(benchmark_names())}")


def check_params_benchmarks(params: Mapping[str, Any], source: str) -> None:
    """The benchmark names a validated params mapping (:func:`atreid.config.validate_params`)
    uses must be registered: ``eval.benchmarks``, the keys of ``data.benchmarks`` and
    ``data.train_on``. The workflow and ``atreid check-params`` run this check before any job
    (the schema cannot list the names: the registry is the one list)."""
    names = {"eval.benchmarks": params["eval"]["benchmarks"], "data.benchmarks": params["data"]["benchmarks"],
             "data.train_on": [params["data"]["train_on"]]}
    for key, listed in names.items():
        check_benchmark_names(listed, f"{source}: {key}")
