"""MkDocs hook (mkdocs.yml `hooks:`): the pages built from the repository's own files at
every build, so that they cannot drift from them.

- ``params.md``: the reference of every params.yaml key, from the JSON schema
  ``atreid/schema/params.schema.yaml`` (its types, allowed values, defaults, descriptions).
- ``cli.md``: every ``atreid`` verb's ``--help``, from the CLI's own parser.
- ``benchmarks.md``: ``benchmarks/README.md`` as it is (the measurements and how to rerun them).

It also drops the Sphinx roles of the package's docstrings (``:func:`name```) from the API
page, which mkdocstrings would print as they are.

The schema walk (:func:`schema_entries`, :func:`schema_has_key`) is also what the docs'
tests use to check that every ``--config``/``-S`` key a page shows exists.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterator

import yaml

REPO = Path(__file__).resolve().parents[2]
SCHEMA = REPO / "atreid" / "schema" / "params.schema.yaml"
PARAMS = REPO / "params.yaml"
BENCHMARKS_README = REPO / "benchmarks" / "README.md"
# The placeholder shown for a key the user names (a variant, a benchmark).
NAMED = "<name>"


def load_schema(path: Path = SCHEMA) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def _resolve(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    """``node`` with its ``$ref`` (``#/$defs/...``) followed, and its own keys kept on top."""
    while "$ref" in node:
        target: Any = root
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _object_branch(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any] | None:
    """The object schema inside ``node`` (itself, or its object alternative of a oneOf)."""
    if node.get("type") == "object" or "properties" in node:
        return node
    for alternative in node.get("oneOf", []) + node.get("anyOf", []):
        alternative = _resolve(alternative, root)
        if alternative.get("type") == "object" or "properties" in alternative:
            return alternative
    return None


def _children(node: dict[str, Any], root: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    branch = _object_branch(node, root)
    if branch is None:
        return
    for key, sub in branch.get("properties", {}).items():
        yield key, _resolve(sub, root)
    extra = branch.get("additionalProperties")
    if isinstance(extra, dict):
        yield NAMED, _resolve(extra, root)


def schema_entries(schema: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every key of the schema as (dotted path, its resolved schema), parents first;
    a key the user names (``variants.<name>``) appears as :data:`NAMED`."""
    def walk(prefix: str, node: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
        for key, sub in _children(node, schema):
            path = f"{prefix}.{key}" if prefix else key
            yield path, sub
            yield from walk(path, sub)
    yield from walk("", _resolve(schema, schema))


def schema_has_key(schema: dict[str, Any], dotted: str) -> bool:
    """Whether the params key ``dotted`` (``variants.full.train.epochs``) exists: every part
    is a property of its parent, or a name its parent lets the user choose."""
    node = _resolve(schema, schema)
    for part in dotted.split("."):
        children = dict(_children(node, schema))
        if part in children and "not" not in children[part]:
            node = children[part]
        elif NAMED in children:
            node = children[NAMED]
        else:
            return False
    return True


def params_comments(path: Path = PARAMS) -> dict[str, tuple[str, str]]:
    """For each key written in params.yaml (dotted path): its value as written there (empty
    for a block) and its comment (the comment lines right above it and the one after it)."""
    found: dict[str, tuple[str, str]] = {}
    stack: list[tuple[int, str]] = []
    above: list[str] = []
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            above.append(stripped.lstrip("#").strip())
            continue
        match = re.match(r"^(\s*)([A-Za-z_][\w.-]*):(.*)$", line)
        if not match:
            above = []
            continue
        indent, key, rest = len(match[1]), match[2], match[3]
        value, _, comment = rest.partition(" #")
        while stack and stack[-1][0] >= indent:
            stack.pop()
        dotted = ".".join([name for _, name in stack] + [key])
        found[dotted] = (value.strip(), " ".join(above + [comment.strip()]).strip())
        stack.append((indent, key))
        above = []
    return found


def _kind(node: dict[str, Any]) -> str:
    if "not" in node:
        return "refused"
    if "const" in node:
        return f"`{json.dumps(node['const'])}`"
    if "enum" in node:
        return " \\| ".join(f"`{json.dumps(value)}`" for value in node["enum"])
    if "oneOf" in node:
        return " or ".join(_kind(alternative) for alternative in node["oneOf"])
    kind = node.get("type", "any")
    if isinstance(kind, list):
        kind = " or ".join(kind)
    if kind == "array" and isinstance(node.get("items"), dict):
        kind = f"list of {_kind(node['items'])}"
    bounds = [f"{sign} {node[key]}" for key, sign in (("minimum", "≥"), ("exclusiveMinimum", ">"),
                                                      ("maximum", "≤"), ("exclusiveMaximum", "<")) if key in node]
    return " ".join([str(kind), ", ".join(bounds)]).strip()


def _cell(text: Any) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def render_params_reference(schema: dict[str, Any]) -> str:
    """The params reference page: one table per top-level section."""
    lines = ["# params.yaml reference", "",
             "Generated at every build of this site from `atreid/schema/params.schema.yaml`, the",
             "schema that checks `params.yaml` (and every `--configfile`/`--config`): a key that is",
             "not here is an error that names it. `<name>` stands for a name you choose (a variant,",
             "a benchmark). The default is the schema's (filled in by",
             "`atreid.config.validate_params` when a key is left out); the demo's `params.yaml` column",
             "is the value written there, and the description adds its comment to the schema's.", ""]
    written = params_comments()
    sections: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for path, node in schema_entries(schema):
        sections.setdefault(path.split(".")[0], []).append((path, node))
    for section, entries in sections.items():
        lines += [f"## `{section}`", ""]
        head = entries[0][1]
        if head.get("description"):
            lines += [_cell(head["description"]), ""]
        lines += ["| key | type | default | demo's `params.yaml` | description |", "|---|---|---|---|---|"]
        for path, node in entries:
            default = f"`{json.dumps(node['default'])}`" if "default" in node else ""
            value, comment = written.get(path, ("", ""))
            about = [node.get("description", ""), f"*params.yaml:* {comment}" if comment else ""]
            if "not" in node:
                about = [f"refused: {node.get('x-message', '')}"]
            shown = f"`{value}`" if value and not value.startswith("{") else ""
            lines.append(f"| `{path}` | {_kind(node)} | {_cell(default)} | {_cell(shown)} | "
                         f"{_cell(' '.join(filter(None, about)))} |")
        lines.append("")
    return "\n".join(lines)


def render_cli_reference() -> str:
    """The CLI page: ``atreid --help`` and each verb's ``--help``, as argparse prints them."""
    import argparse

    from atreid.cli import build_parser

    import os

    os.environ["COLUMNS"] = "100"  # argparse wraps help at the terminal's width: the same page everywhere
    parser = build_parser()
    verbs = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    lines = ["# Command line: `atreid <verb>`", "",
             "Generated at every build from `atreid.cli.build_parser()`: each verb's `--help` as the",
             "command prints it. `python -m atreid <verb>` is the same command. Every Snakemake rule",
             "runs one verb.", "", "```text", parser.format_help().rstrip(), "```", ""]
    for name, sub in sorted(verbs.choices.items()):
        lines += [f"## `{name}`", "", "```text", sub.format_help().rstrip(), "```", ""]
    return "\n".join(lines)


def on_files(files, config):  # noqa: ANN001 - MkDocs' hook signature
    from mkdocs.structure.files import File

    files.append(File.generated(config, "params.md", content=render_params_reference(load_schema())))
    files.append(File.generated(config, "cli.md", content=render_cli_reference()))
    files.append(File.generated(config, "benchmarks.md", content=BENCHMARKS_README.read_text()))
    return files


SPHINX_ROLE = re.compile(r":(?:func|meth|class|data|attr|mod|exc|obj):(?=<code>)(<code>)~?")


def on_page_content(html, page, config, files):  # noqa: ANN001 - MkDocs' hook signature
    return SPHINX_ROLE.sub(r"\1", html)
