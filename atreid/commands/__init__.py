"""CLI subcommands: each module defines ``register(subparsers)``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from atreid.errors import AtreidError

SETTINGS_HELP = "a JSON file of the step's resolved settings (the workflow writes one per job under settings/)"


def json_object_arg(text: str) -> dict:
    """argparse type of the settings flags: a JSON object."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return value


def read_settings(path: str | Path) -> dict:
    """The JSON object in ``path``, the file of a ``--settings`` flag: every step takes its
    settings from a file, so a command copied from a log reruns by hand."""
    path = Path(path)
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AtreidError(f"{path}: no such settings file; pass the file the workflow wrote (settings/...), or "
                          "write the settings as a JSON object there") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise AtreidError(f"{path}: cannot read the settings file ({exc})") from None
    except json.JSONDecodeError as exc:
        raise AtreidError(f"{path}: not valid JSON ({exc}); write the settings as a JSON object") from None
    if not isinstance(value, dict):
        raise AtreidError(f"{path}: expected a JSON object of settings, got {type(value).__name__}")
    return value
