"""``eval.rerank`` as params.yaml holds it -> the re-ranking options (no torch here: the
workflow reads this when it parses, and every ``snakemake -n`` would pay torch's import)."""

from __future__ import annotations

from functools import lru_cache

from atreid.errors import AtreidError

# The suffix of the re-ranked columns (``Any-Time_R1@rr``).
RERANK_SUFFIX = "@rr"


@lru_cache(maxsize=1)
def rerank_defaults() -> dict:
    """``{k1, k2, lambda}`` as the schema's eval.rerank mapping defaults them (the paper's)."""
    # start-up: yaml loaded only when this runs
    from atreid.config import load_schema

    setting = load_schema()["properties"]["eval"]["properties"]["rerank"]
    mapping = next(branch for branch in setting["oneOf"] if branch.get("type") == "object")
    return {key: sub["default"] for key, sub in mapping["properties"].items() if key != "enabled"}


def rerank_options(setting: object) -> dict | None:
    """``{"k1", "k2", "lambda"}`` of an ``eval.rerank`` setting, or None when re-ranking is off.

    ``setting`` is what params.yaml holds: absent/None or ``false`` (off), ``true`` (on with
    :func:`rerank_defaults`) or a mapping ``{enabled, k1, k2, lambda}`` (missing keys take
    the defaults; ``enabled`` defaults to false, as in the schema, so a mapping turns
    re-ranking on only with ``enabled: true``).
    """
    if setting is None or setting is False:
        return None
    if setting is True:
        return dict(rerank_defaults())
    if not isinstance(setting, dict):
        raise AtreidError(f"eval.rerank: expected true/false or a mapping {{enabled, k1, k2, lambda}}, got {setting!r}")
    unknown = sorted(set(setting) - {"enabled", *rerank_defaults()})
    if unknown:
        raise AtreidError(f"eval.rerank: unknown key(s) {unknown}; valid: enabled, k1, k2, lambda")
    if not setting.get("enabled", False):
        return None
    return {key: setting.get(key, default) for key, default in rerank_defaults().items()}
