"""The package code each pipeline step runs, as content fingerprints: code is an input.

A step is one ``atreid`` CLI verb (``atreid train``, ``atreid evaluate``, ...). Its code is
the static import closure of the function the verb calls: the imports of the verb's
module and of the functions of that module it reaches, then every atreid module those
import (module level and inside functions: a function-level import is code that may
run), with the parent packages' ``__init__.py``. Nothing is imported to compute it, so
Snakemake can afford it while it parses the workflow.

Method switches turn modules off: a variant whose ``model.moae`` is false never calls
:mod:`atreid.model.moae` (tests/test_code_deps.py traces a training step and an
evaluation of every variant and checks that each function that ran lies in a module of
the step's code), so editing MoAE reruns the MoAE variants only. :data:`SWITCHED_MODULES`
is that table.

A module's fingerprint hashes its source without comments, blank lines and docstrings:
editing those reruns nothing; any other change (a default value, an operator, an
import) reruns every step whose code holds the module. The Snakemake rules carry one
param per module (``atreid/model/moae.py@<fingerprint>``), so ``snakemake -n`` names
the changed file in its reason ("Params have changed since last execution: ... before:
atreid/model/moae.py@1a2b... now: atreid/model/moae.py@9f8e..."), and the DVC stages
list the same files as deps (``atreid code-deps --check-dvc`` keeps dvc.yaml in sync).
"""

from __future__ import annotations

import ast
import hashlib
import io
import json
import sys
import tokenize
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from atreid.io import atomic_write_text, file_sha256

PACKAGE = "atreid"
PACKAGE_DIR = Path(__file__).resolve().parent
ROOT = PACKAGE_DIR.parent

# module -> (predicate over a variant's resolved settings, the module's definitions it
# gates): a job whose settings make the predicate false never calls those definitions,
# so they are left out of its code (the module's top level, which importing runs, stays
# in). Each entry is checked by tracing every variant's training and evaluation
# (tests/test_code_deps.py).
# ``Class.method`` names a method: the class stays, the method's lines leave the fingerprint.
# MoAE: without ``moae`` the module is the plain FFN (MoAE.__init__, ffn, forward's first
# line run for every variant); only the routing and the experts are the switch's.
SWITCHED: dict[str, tuple[Callable[[Mapping[str, Any]], bool], tuple[str, ...]]] = {
    "atreid.model.moae": (lambda settings: bool(settings.get("moae")),
                          ("_atom_linear", "_GroupedLinear", "_ZeroGradTo", "_routed_linear", "MoAE.gate_probs",
                           "MoAE.gate_choice", "MoAE.gate_weights", "MoAE.routed_experts", "MoAE.experts",
                           "MoAE._routes")),
    "atreid.losses.hdw": (lambda settings: bool(settings.get("hdw")), ("*",)),
    "atreid.losses.said": (lambda settings: bool(settings.get("said")), ("mask_other_outfits",)),
}

# The settings of a step that runs none of the switchable parts (the pretraining builds a
# plain timm ViT), checked by tracing like the table above.
NO_METHOD_SWITCHES: dict[str, bool] = {"moae": False, "hdw": False, "said": False}

# Files other than Python modules that a verb reads from the package.
PACKAGE_DATA: dict[str, tuple[str, ...]] = {
    "table": ("atreid/reference/paper_results.csv", "atreid/reference/paper_cross_dataset.csv"),
}


# ---- module graph ------------------------------------------------------------------
def module_file(module: str) -> Path | None:
    """The source file of an atreid module or package, or None when there is none."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    base = ROOT.joinpath(*parts)
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def _package_of(module: str) -> str:
    file = module_file(module)
    return module if file is not None and file.name == "__init__.py" else module.rpartition(".")[0]


@lru_cache(maxsize=None)
def _parse(module: str) -> ast.Module:
    file = module_file(module)
    return ast.parse(file.read_text(encoding="utf-8"), filename=str(file))


def _is_type_checking(node: ast.AST) -> bool:
    """``if TYPE_CHECKING:`` (its imports never run)."""
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _walk_runtime(node: ast.AST) -> Iterable[ast.AST]:
    """``ast.walk`` without the bodies of ``if TYPE_CHECKING:``."""
    todo = [node]
    while todo:
        current = todo.pop()
        yield current
        todo.extend(child for child in ast.iter_child_nodes(current) if not _is_type_checking(child))


ALL = "*"  # every symbol of a module (``import x``: anything of x may be used)


class _ModuleInfo:
    """What the closure needs of one module: its top-level definitions, the names its
    module-level imports bind, and the module-level code (what importing it runs)."""

    def __init__(self, module: str) -> None:
        self.module = module
        tree = _parse(module)
        self.defs = {node.name: node for node in tree.body
                     if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
        self.top_level = [node for node in tree.body if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]
        self.bindings: dict[str, tuple[str, str]] = {}
        for node in self.top_level:
            for sub in _walk_runtime(node):
                if isinstance(sub, (ast.Import, ast.ImportFrom)):
                    self.bindings.update(_bindings(sub, module))


@lru_cache(maxsize=None)
def _info(module: str) -> _ModuleInfo:
    return _ModuleInfo(module)


def _bindings(node: ast.Import | ast.ImportFrom, module: str) -> dict[str, tuple[str, str]]:
    """{local name: (atreid module, symbol)} that an import statement binds."""
    found: dict[str, tuple[str, str]] = {}
    if isinstance(node, ast.Import):
        for alias in node.names:
            if module_file(alias.name) is not None:
                found[alias.asname or alias.name.split(".")[0]] = (alias.name, ALL)
        return found
    source = _from_source(node, module)
    if module_file(source) is None:
        return found
    for alias in node.names:
        submodule = f"{source}.{alias.name}"
        found[alias.asname or alias.name] = (submodule, ALL) if module_file(submodule) else (source, alias.name)
    return found


def _from_source(node: ast.ImportFrom, module: str) -> str:
    if not node.level:
        return node.module or ""
    base = _package_of(module).split(".")
    base = base[: len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _body_without_functions(nodes: Iterable[ast.AST]) -> Iterable[ast.AST]:
    """The nodes that run when the module is imported: not inside function bodies
    (decorators and default values do run)."""
    todo = list(nodes)
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            todo.extend(node.decorator_list)
            todo.extend(d for d in node.args.defaults + node.args.kw_defaults if d is not None)
            continue
        todo.extend(child for child in ast.iter_child_nodes(node) if not _is_type_checking(child))


def _references(module: str, nodes: Iterable[ast.AST]) -> set[tuple[str, str | None]]:
    """The (module, symbol) pairs that code made of ``nodes`` in ``module`` uses: what it
    imports, the module's definitions it names, and what its module-level imports bound to
    the names it uses (``mod.f`` of an imported module ``mod``: f alone)."""
    info = _info(module)
    nodes = list(nodes)
    local: dict[str, tuple[str, str]] = {}
    for node in nodes:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            local.update(_bindings(node, module))
    names = {**info.bindings, **local}
    found: set[tuple[str, str | None]] = set()
    for target, symbol in local.values():  # importing runs the module's top level
        found.add((target, None))
        if symbol != ALL:
            found.add((target, symbol))
    attribute_of: set[int] = set()
    for node in nodes:
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                and names.get(node.value.id, ("", ""))[1] == ALL:
            found.add((names[node.value.id][0], node.attr))
            attribute_of.add(id(node.value))
    for node in nodes:
        if isinstance(node, ast.Name) and id(node) not in attribute_of:
            if node.id in info.defs:
                found.add((module, node.id))
            elif node.id in names:
                found.add(names[node.id])
    return found


@lru_cache(maxsize=None)
def _node_deps(module: str, symbol: str | None) -> frozenset[tuple[str, str | None]]:
    """What running ``symbol`` of ``module`` (None: importing the module) may run next."""
    info = _info(module)
    deps: set[tuple[str, str | None]] = set()
    parents = _package_parents(module)
    deps.update((parent, None) for parent in parents)
    if symbol is None:
        deps |= _references(module, _body_without_functions(info.top_level))
        # A decorated class is handed to its decorator when the module is imported (a
        # registry: @register_benchmark), and from there to whoever looks it up by name.
        deps.update((module, name) for name, node in info.defs.items()
                    if isinstance(node, ast.ClassDef) and node.decorator_list)
        return frozenset(deps)
    deps.add((module, None))
    if symbol == ALL:
        deps.update((module, name) for name in info.defs)
        return frozenset(deps)
    if symbol in info.defs:
        deps |= _references(module, _walk_runtime(info.defs[symbol]))
    elif symbol in info.bindings:  # a name the module re-exports: follow it to its definition
        deps.add(info.bindings[symbol])
    return frozenset(deps)


Node = tuple[str, "str | None"]  # (module, symbol): None is the module's top level, ALL all of it


def reached(module: str, function: str, switched_off: Iterable[Node] = ()) -> set[Node]:
    """The (module, symbol) pairs that running ``module.function`` may execute: followed
    symbol by symbol (``from x import f`` reaches f and x's top level, not x's other
    functions). ``switched_off`` pairs are left out, and nothing is followed from them."""
    off = set(switched_off)
    if function not in _info(module).defs:
        raise KeyError(f"{module} has no function {function}")
    seen: set[Node] = set()
    todo: list[Node] = [(module, function), (PACKAGE, None)]
    while todo:
        node = todo.pop()
        if node in seen or node in off:
            continue
        if node[1] == ALL and any(name == node[0] for name, _ in off):  # all but what is off
            todo.extend((node[0], name) for name in [None, *_info(node[0]).defs])
            continue
        seen.add(node)
        todo.extend(_node_deps(*node) - seen)
    return seen


def closure(module: str, function: str, switched_off: Iterable[Node] = ()) -> list[str]:
    """The atreid modules :func:`reached` touches, sorted."""
    return sorted({name for name, _ in reached(module, function, switched_off)})


def _package_parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:n]) for n in range(1, len(parts))]


# ---- fingerprints ------------------------------------------------------------------
def _docstring_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                    and isinstance(first.value.value, str)):
                lines.update(range(first.lineno, first.end_lineno + 1))
    return lines


def _lines_without_comments(text: str) -> tuple[str, ...]:
    """``text``'s lines (1-based: index 0 is empty) with comments (cut at their tokenize
    position: a '#' inside a string is no comment), docstrings and trailing spaces removed,
    so that line numbers still match the AST."""
    drop = _docstring_lines(ast.parse(text))
    lines = text.splitlines()
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type == tokenize.COMMENT:
            row, col = token.start
            lines[row - 1] = lines[row - 1][:col]
    return ("", *("" if number in drop else line.rstrip() for number, line in enumerate(lines, start=1)))


def normalized_source(text: str) -> str:
    """``text`` without comments, docstrings, trailing spaces and blank lines: what a
    fingerprint hashes (so editing those reruns nothing)."""
    return "\n".join(line for line in _lines_without_comments(text) if line.strip()) + "\n"


@lru_cache(maxsize=None)
def _normalized_lines(path: str, size: int, mtime_ns: int) -> tuple[str, ...]:
    return _lines_without_comments((ROOT / path).read_text(encoding="utf-8"))


def _lines(path: str) -> tuple[str, ...]:
    stat = (ROOT / path).stat()
    return _normalized_lines(path, stat.st_size, stat.st_mtime_ns)


def symbol_ranges(module: str, symbols: Iterable[str | None], excluded: Iterable[str] = ()) -> list[tuple[int, int]]:
    """The (first, last) source lines of ``symbols`` of ``module`` (None: the top level
    outside function and class definitions; ALL: the whole file), without the lines of
    the ``excluded`` methods (``Class.method``)."""
    info = _info(module)
    tree = _parse(module)
    lines: set[int] = set()
    for symbol in set(symbols):
        if symbol == ALL:
            lines.update(range(1, len(_lines(relative_file(module)))))
        elif symbol is None:
            for node in tree.body:
                if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    lines.update(range(node.lineno, node.end_lineno + 1))
        elif symbol in info.defs:
            lines.update(range(*_span(info.defs[symbol])))
    for name in excluded:
        owner, _, method = name.partition(".")
        if owner in info.defs:
            for node in info.defs[owner].body:
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == method:
                    lines.difference_update(range(*_span(node)))
    ranges: list[tuple[int, int]] = []
    for line in sorted(lines):
        if ranges and ranges[-1][1] == line - 1:
            ranges[-1] = (ranges[-1][0], line)
        else:
            ranges.append((line, line))
    return ranges


def _span(node: ast.AST) -> tuple[int, int]:
    """range() arguments covering a definition with its decorators."""
    first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])
    return first, node.end_lineno + 1


def fingerprint(path: str, ranges: Iterable[tuple[int, int]] | None = None) -> str:
    """The fingerprint of a package file (a path relative to the repository root), or of
    the given line ranges of a Python file: comments, docstrings and blank lines do not count."""
    file = ROOT / path
    if file.suffix != ".py":
        return file_sha256(file)[:16]
    lines = _lines(path)
    if ranges is None:
        ranges = [(1, len(lines) - 1)]
    kept = [lines[number] for first, last in ranges for number in range(first, last + 1) if lines[number].strip()]
    return hashlib.sha256("\n".join(kept).encode("utf-8")).hexdigest()[:16]


def relative_file(module: str) -> str:
    return module_file(module).relative_to(ROOT).as_posix()


# ---- steps -------------------------------------------------------------------------
@lru_cache(maxsize=None)
def verbs() -> dict[str, tuple[str, str]]:
    """{verb: (module, function)} of every ``atreid`` verb, read from the command modules'
    source (each ``add_parser("<verb>", ...)`` is followed by ``set_defaults(func=<function>)``),
    without importing them."""
    found: dict[str, tuple[str, str]] = {}
    for file in sorted((PACKAGE_DIR / "commands").glob("*.py")):
        module = f"{PACKAGE}.commands.{file.stem}"
        verb = None
        for node in _walk_in_order(_parse(module)):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                if node.func.attr == "add_parser" and node.args and isinstance(node.args[0], ast.Constant):
                    verb = node.args[0].value
                elif node.func.attr == "set_defaults" and verb is not None:
                    for keyword in node.keywords:
                        if keyword.arg == "func" and isinstance(keyword.value, ast.Name):
                            found[verb] = (module, keyword.value.id)
    return found


def _walk_in_order(node: ast.AST) -> Iterable[ast.AST]:
    """Every node under ``node``, depth first in source order."""
    yield node
    for child in ast.iter_child_nodes(node):
        yield from _walk_in_order(child)


def verb_entry(verb: str) -> tuple[str, str]:
    """(module, function) that ``atreid <verb>`` calls."""
    if verb not in verbs():
        raise KeyError(f"atreid has no verb {verb!r}")
    return verbs()[verb]


def switched_off(settings: Mapping[str, Any] | None) -> list[Node]:
    """The (module, symbol) pairs that a variant's resolved settings turn off (none without settings)."""
    if settings is None:
        return []
    off: list[Node] = []
    for module, (used, symbols) in SWITCHED.items():
        if not used(settings):
            names = list(_info(module).defs) if ALL in symbols else list(symbols)
            off.extend((module, name) for name in names)
    return off


def step_nodes(verb: str, settings: Mapping[str, Any] | None = None) -> frozenset[Node]:
    """What ``atreid <verb>`` may execute (for a variant's ``settings``), the CLI's entry included."""
    return _step_nodes(verb, tuple(sorted(switched_off(settings), key=str)))


@lru_cache(maxsize=None)
def _step_nodes(verb: str, off: tuple[Node, ...]) -> frozenset[Node]:
    module, function = verb_entry(verb)
    # cli.main runs every verb; build_parser imports every command module to register it
    # (their top levels only: what registering runs).
    nodes = reached(module, function, off) | reached("atreid.cli", "main", off)
    return frozenset(nodes)


def step_fingerprints(verb: str, settings: Mapping[str, Any] | None = None) -> dict[str, str]:
    """{file: fingerprint of the parts of it that ``atreid <verb>`` may execute}, with the
    package data files the verb reads."""
    return dict(_step_fingerprints(verb, tuple(sorted(switched_off(settings), key=str))))


def step_ranges(verb: str, settings: Mapping[str, Any] | None = None) -> dict[str, list[tuple[int, int]]]:
    """{module: the (first, last) lines of it that ``atreid <verb>`` may execute}."""
    return dict(_step_ranges(verb, tuple(sorted(switched_off(settings), key=str))))


@lru_cache(maxsize=None)
def _step_ranges(verb: str, off: tuple[Node, ...]) -> tuple[tuple[str, tuple[tuple[int, int], ...]], ...]:
    by_module: dict[str, set[str | None]] = {}
    for module, symbol in _step_nodes(verb, off):
        by_module.setdefault(module, set()).add(symbol)
    ranges = []
    for module, symbols in sorted(by_module.items()):
        methods = [symbol for m, symbol in off if m == module and symbol and "." in symbol]
        ranges.append((module, tuple(symbol_ranges(module, symbols, methods))))
    return tuple(ranges)


@lru_cache(maxsize=None)
def _step_fingerprints(verb: str, off: tuple[Node, ...]) -> tuple[tuple[str, str], ...]:
    key = f"{verb} {off!r}"
    cached = _saved_fingerprints().get(key)
    if cached is not None:
        return tuple((path, value) for path, value in cached)
    prints = {relative_file(module): fingerprint(relative_file(module), ranges)
              for module, ranges in _step_ranges(verb, off)}
    prints.update({path: fingerprint(path) for path in PACKAGE_DATA.get(verb, ())})
    result = tuple(sorted(prints.items()))
    _save_fingerprints(key, result)
    return result


# ---- the fingerprints kept on disk -------------------------------------------------
# Tracing the steps' code takes about 1.5 s of CPU (tokenizing and walking every module),
# paid by every Snakemake parse: `snakemake -n`, each DVC stage, each cluster job. The
# result depends on the package's files only, so the workflow keeps it in a folder
# (`use_fingerprint_cache`), one JSON file named by a digest of every file of the package
# and the Python version (an edit, a switch of branch, another interpreter: another file).
FINGERPRINT_FILE = "code-fingerprints-{}.json"
_CACHE: dict[str, Any] = {"folder": None, "entries": None, "file": None}


def use_fingerprint_cache(folder: str | Path | None) -> None:
    """Read and keep the step fingerprints in ``folder`` (None: compute them every time)."""
    _CACHE.update(folder=None if folder is None else Path(folder), entries=None, file=None)
    _step_fingerprints.cache_clear()
    _combined_fingerprints.cache_clear()


def package_digest() -> str:
    """A digest of every file of the package (path and bytes) and of the Python version."""
    digest = hashlib.sha256(repr(tuple(sys.version_info[:2])).encode())
    for file in sorted(PACKAGE_DIR.rglob("*")):
        if file.is_file() and "__pycache__" not in file.parts:
            digest.update(file.relative_to(PACKAGE_DIR).as_posix().encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()[:24]


def _cache_file() -> Path | None:
    # The digest reads every file of the package: once per process (or per cache setting).
    if _CACHE["folder"] is not None and _CACHE.get("file") is None:
        _CACHE["file"] = _CACHE["folder"] / FINGERPRINT_FILE.format(package_digest())
    return _CACHE.get("file")


def _saved_fingerprints() -> dict[str, list[list[str]]]:
    if _CACHE["entries"] is None:
        entries: dict[str, list[list[str]]] = {}
        file = _cache_file()
        if file is not None:
            try:
                loaded = json.loads(file.read_text(encoding="utf-8"))
                if isinstance(loaded, dict):
                    entries = loaded
            except (OSError, ValueError):
                pass  # none yet, or unreadable: computed again and rewritten
        _CACHE["entries"] = entries
    return _CACHE["entries"]


def _save_fingerprints(key: str, result: tuple[tuple[str, str], ...]) -> None:
    file = _cache_file()
    entries = _saved_fingerprints()
    entries[key] = [list(pair) for pair in result]
    if file is None:
        return
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        for old in file.parent.glob(FINGERPRINT_FILE.format("*")):
            if old != file:
                old.unlink(missing_ok=True)  # an earlier state of the package's files
        atomic_write_text(file, json.dumps(entries, sort_keys=True))
    except OSError:
        pass  # a read-only folder: the fingerprints are computed again next time


@lru_cache(maxsize=None)
def _combined_fingerprints(verbs: tuple[str, ...], off: tuple[Node, ...]) -> dict[str, str]:
    prints: dict[str, str] = {}
    for verb in verbs:
        for path, value in _step_fingerprints(verb, off):
            prints[path] = value if path not in prints else f"{prints[path]}+{value}"
    return prints


def step_files(verb: str, settings: Mapping[str, Any] | None = None) -> list[str]:
    """The package files ``atreid <verb>`` may execute (for a variant's ``settings``), sorted."""
    return list(step_fingerprints(verb, settings))


def param_name(path: str) -> str:
    """A Snakemake param name for a package file: ``code_atreid_model_moae_py``."""
    return "code_" + "".join(ch if ch.isalnum() else "_" for ch in path)


def snakemake_params(verbs: Iterable[str], settings_of: Callable[[Any], Mapping[str, Any] | None] | None = None,
                     all_settings: Iterable[Mapping[str, Any]] = ()) -> dict[str, Callable[[Any], str]]:
    """One Snakemake param per package file that the rule's verbs may run: the value is
    ``<file>@<fingerprint>`` (of the parts the job may run; ``unused`` when none), so a
    job reruns when, and only when, code it runs changed, and Snakemake's reason names
    the file.

    ``settings_of(wildcards)`` gives the job's variant settings (None: no switches);
    ``all_settings`` lists every variant's, so that the param names cover them all."""
    verbs = list(verbs)
    names: set[str] = set()
    for verb in verbs:
        names.update(step_files(verb))
        for settings in all_settings:
            names.update(step_files(verb, settings))

    def prints_of(wildcards: Any) -> dict[str, str]:
        settings = settings_of(wildcards) if settings_of else None
        return _combined_fingerprints(tuple(verbs), tuple(sorted(switched_off(settings), key=str)))

    def value_of(path: str) -> Callable[[Any], str]:
        return lambda wildcards: f"{path}@{prints_of(wildcards).get(path, 'unused')}"

    return {param_name(path): value_of(path) for path in sorted(names)}


# ---- the DVC stages' code deps --------------------------------------------------------
def rule_verbs(rules_dir: Path | str = ROOT / "rules") -> dict[str, list[str]]:
    """{rule: the atreid verbs its ``code_params(...)`` names}, read from rules/*.smk."""
    found: dict[str, list[str]] = {}
    for file in sorted(Path(rules_dir).glob("*.smk")):
        rule = None
        for line in file.read_text(encoding="utf-8").splitlines():
            stripped = line.strip()
            if line.startswith("rule ") and stripped.endswith(":"):
                rule = stripped[len("rule "):-1]
            elif rule and stripped.startswith("**code_params("):
                call = ast.parse(stripped.rstrip(",")[2:]).body[0].value
                found[rule] = [arg.value for arg in call.args]
    return found


def stage_rules(cmd: str) -> list[str]:
    """The rules a DVC stage's command allows (``--allowed-rules a b c`` ends the command)."""
    words = cmd.split()
    return words[words.index("--allowed-rules") + 1:] if "--allowed-rules" in words else []


def stage_code_files(cmd: str, variants: Iterable[Mapping[str, Any]], rules_dir: Path | str = ROOT / "rules") -> list[str]:
    """The package files a DVC stage's Snakemake jobs may run, over every variant."""
    by_rule = rule_verbs(rules_dir)
    files: set[str] = set()
    for rule in stage_rules(cmd):
        for verb in by_rule.get(rule, []):
            for settings in [None, *variants]:
                files.update(step_files(verb, settings))
    return sorted(files)
