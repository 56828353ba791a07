"""params.yaml: loading, schema validation with defaults, and variant resolution.

The schema (``atreid/schema/params.schema.yaml``) is the single definition of every
setting. Snakemake (``rules/common.smk``) and the CLI both validate through
:func:`validate_params`, so a typo or a wrong type fails the same way everywhere: one
line naming the key path.
"""

from __future__ import annotations

import copy
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

import yaml

from atreid.constants import RESERVED_VARIANT_NAMES
from atreid.errors import AtreidError

SCHEMA_RESOURCE = "schema/params.schema.yaml"
DEFAULT_TRAIN_ON = "atustc"  # data.train_on's default (atreid.data.labels uses it too)


class _StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (plain YAML keeps the last)."""


def _construct_strict_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # `<<: *anchor` merges defaults that the mapping's own keys may override
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in seen
            seen.add(key)
        except TypeError:  # an unhashable key: the constructor below reports it
            continue
        if duplicate:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_strict_mapping)


def read_yaml(path: str | Path) -> Any:
    """Read a YAML file strictly: a syntax error or a duplicate key is one line naming the
    file, the line and (for a duplicate) the key."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AtreidError(f"{path}: no such params file; run from the project root or pass --params") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise AtreidError(f"{path}: cannot read it ({exc}); fix the file") from None
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or ""
        if problem.startswith("duplicate key"):
            raise AtreidError(f"{path}{where}: {problem}; give each key once") from None
        detail = f": {problem}" if problem else ""
        raise AtreidError(f"{path}{where}: not valid YAML{detail}; fix the syntax") from None


def read_params_file(path: str | Path) -> dict[str, Any]:
    """One params file (params.yaml or a preset) read strictly: it must hold a mapping of
    settings. An empty file is refused as Snakemake refuses it (a truncated file, not
    "no changes"), with the same line for ``atreid check-params`` and the workflow."""
    loaded = read_yaml(path)
    if not isinstance(loaded, dict):
        kinds = {list: "a list", str: "text", int: "a number", float: "a number", bool: "true/false"}
        what = "empty" if loaded is None else f"holds {kinds.get(type(loaded), type(loaded).__name__)}"
        raise AtreidError(f"{path}: {what}; expected a mapping of settings at the top level "
                          "(key: value lines, as in the repository's params.yaml); fix the file")
    return loaded


@lru_cache(maxsize=1)
def load_schema() -> dict[str, Any]:
    """The params JSON schema (YAML-encoded, shipped inside the package)."""
    text = resources.files("atreid").joinpath(SCHEMA_RESOURCE).read_text(encoding="utf-8")
    return yaml.safe_load(text)


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Return ``base`` updated recursively by ``override`` (dicts merge, others replace).

    This is the same rule Snakemake applies to several ``--configfile`` files, so a
    preset (e.g. presets/paper.yaml) means the same thing to Snakemake, DVC and the CLI.
    """
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _key_path(path: Iterable[Any]) -> str:
    parts = [str(p) for p in path]
    return ".".join(parts) if parts else "<top level>"


def _error_message(error: Any) -> str:
    """One line naming the offending key for a jsonschema ValidationError."""
    where = _key_path(error.absolute_path)
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        if error.schema.get("properties"):
            valid = ", ".join(sorted(error.schema["properties"]))
            return (f"unknown key {_key_path([*error.absolute_path, extra[0]])!r}"
                    f" (valid keys here: {valid})")
        return f"invalid entry {_key_path([*error.absolute_path, extra[0]])!r}: {error.message}"
    if error.validator == "required":
        return f"missing key in {where!r}: {error.message}"
    if error.validator == "not" and "x-message" in error.schema:  # a retired key (e.g. seed -> seeds)
        return f"key {where!r} was {error.schema['x-message']}"
    if "x-message" in error.schema:  # the schema's own wording (e.g. what a usable path is)
        return f"invalid value for {where!r}: {error.instance!r} ({error.schema['x-message']})"
    if error.validator in ("type", "enum", "const", "oneOf"):
        expected = error.schema.get("type") or error.schema.get("enum") or error.schema.get("oneOf")
        return f"wrong value for {where!r}: {error.instance!r} (expected {expected})"
    return f"invalid value for {where!r}: {error.message}"


def _fill_defaults(schema: dict[str, Any], instance: Any, root: dict[str, Any]) -> Any:
    """Fill ``default`` values of object properties recursively (after validation)."""
    if "$ref" in schema:
        return _fill_defaults(_resolved_ref(root, schema["$ref"]), instance, root)
    if not isinstance(instance, dict) or schema.get("type") != "object":
        return instance
    for key, sub in schema.get("properties", {}).items():
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if key in instance:
            instance[key] = _fill_defaults(sub, instance[key], root)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for key in instance:
            if key not in schema.get("properties", {}):
                instance[key] = _fill_defaults(extra, instance[key], root)
    return instance


def schema_defaults(*keys: str) -> Any:
    """The schema's defaults of the setting at ``keys`` (e.g. ``"data", "benchmarks",
    "market1501"``; a mapping's entry not in the schema takes its additionalProperties),
    as :func:`validate_params` fills them into an absent mapping: the one statement of a
    default is the schema's."""
    schema = load_schema()
    node: dict[str, Any] = schema
    for key in keys:
        while "$ref" in node:
            node = _resolved_ref(schema, node["$ref"])
        properties = node.get("properties", {})
        node = properties[key] if key in properties else node.get("additionalProperties", {})
    while "$ref" in node:
        node = _resolved_ref(schema, node["$ref"])
    if node.get("type") == "object" or "properties" in node:
        return _fill_defaults({**node, "type": "object"}, {}, schema)
    return copy.deepcopy(node.get("default"))


def _resolved_ref(root: dict[str, Any], ref: str) -> dict[str, Any]:
    target: Any = root
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    return target


def validate_params(params: dict[str, Any], *, source: str = "params.yaml") -> dict[str, Any]:
    """Validate ``params`` against the schema and return a copy with defaults filled in.

    Raises:
        AtreidError: one line naming ``source`` and the offending key.
    """
    # start-up: jsonschema loaded only when this runs
    import jsonschema

    if not isinstance(params, dict):
        raise AtreidError(f"{source}: expected a mapping of settings at the top level")
    if isinstance(params.get("variants"), dict):
        for name in params["variants"]:
            if isinstance(name, str) and name.lower() in RESERVED_VARIANT_NAMES:
                raise AtreidError(f"{source}: variants.{name}: the name {name!r} is reserved (in any letter case:"
                                  f" {RESERVED_VARIANT_NAMES[name.lower()]}); rename the variant")
    schema = load_schema()
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(params), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        # The deepest error is the most specific one (oneOf/anyOf wrap their causes).
        error = max(errors, key=lambda e: len(e.absolute_path))
        raise AtreidError(f"{source}: {_error_message(error)}; fix it in {source}")
    filled = _fill_defaults(schema, copy.deepcopy(params), schema)
    _check_variants(filled, source)
    return filled


def _check_variants(params: dict[str, Any], source: str) -> None:
    for name, variant in params["variants"].items():
        if variant["ncls"] == 1 and variant["moae"]:
            raise AtreidError(
                f"{source}: variants.{name}: moae needs ncls 6 (one CLS token per scenario); "
                "set ncls: 6 or moae: false")


def load_params(*paths: str | Path) -> dict[str, Any]:
    """Load, deep-merge (later files win) and validate one or more params files."""
    if not paths:
        paths = ("params.yaml",)
    merged: dict[str, Any] = {}
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise AtreidError(f"{path}: no such params file; run from the project root or pass --params")
        merged = deep_merge(merged, read_params_file(path))
    return validate_params(merged, source=" + ".join(str(p) for p in paths))


def resolve_variant(params: dict[str, Any], name: str, seed: int) -> dict[str, Any]:
    """The complete, JSON-able settings of one training run of a variant (see docs/architecture.md).

    ``model`` and ``train`` are the params.yaml sections deep-merged with the variant's
    own overrides, and ``seed`` is the run's seed (one of ``params["seeds"]``, given
    explicitly: each seed is a run of its own), so the result is everything that decides
    the trained weights. ``train_on`` names ``data.train_on`` when it is not AT-USTC.
    """
    variants = params["variants"]
    if name not in variants:
        raise AtreidError(f"unknown variant {name!r}; valid variants: {', '.join(sorted(variants))}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise AtreidError(f"variant {name!r}: the seed must be a non-negative integer, not {seed!r}")
    variant = variants[name]
    resolved = {
        "name": name,
        "seed": seed,
        "ncls": variant["ncls"],
        "said": variant["said"],
        "moae": variant["moae"],
        "hdw": variant["hdw"],
        "model": deep_merge(params["model"], variant.get("model", {})),
        "train": deep_merge(params["train"], variant.get("train", {})),
    }
    if "reference_checkpoint" in variant:
        resolved["reference_checkpoint"] = variant["reference_checkpoint"]
    # The training dataset, named only when it is not AT-USTC: the default's settings (so
    # its jobs, model files and metrics files) are what they were before data.train_on.
    train_on = params.get("data", {}).get("train_on", DEFAULT_TRAIN_ON)
    if train_on != DEFAULT_TRAIN_ON and "reference_checkpoint" not in variant:
        resolved["train_on"] = train_on
    return resolved


def typed_command_line_values(overrides: Any) -> Any:
    """Give ``--config`` values the types they would have in params.yaml.

    Snakemake parses a nested ``--config train='{"epochs": 2}'`` with YAML's base
    loader, so every value inside arrives as a string ("2", "true", "null") and the
    schema would refuse it. Each string inside a mapping or list is read again as a
    YAML scalar; a string that is not an int, float, bool or null stays a string.
    """
    if isinstance(overrides, dict):
        return {key: typed_command_line_values(value) for key, value in overrides.items()}
    if isinstance(overrides, list):
        return [typed_command_line_values(value) for value in overrides]
    if isinstance(overrides, str):
        try:
            value = yaml.safe_load(overrides)
        except yaml.YAMLError:
            return overrides
        if value is None or isinstance(value, (bool, int, float)):
            return value
    return overrides
