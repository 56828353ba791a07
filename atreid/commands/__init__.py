"""CLI subcommands: each module defines ``register(subparsers)``."""

from __future__ import annotations

import argparse
import json


def json_object_arg(text: str) -> dict:
    """argparse type of the settings flags: a JSON object."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return value
