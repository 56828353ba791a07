"""``eval.rerank`` as params.yaml holds it -> the re-ranking options (no torch here: the
workflow reads this when it parses, and every ``snakemake -n`` would pay torch's import)."""

from __future__ import annotations

from atreid.errors import AtreidError

# eval.rerank: the paper's defaults; the suffix of the re-ranked columns (``Any-Time_R1@rr``).
RERANK_DEFAULTS: dict = {"k1": 20, "k2": 6, "lambda": 0.3}
RERANK_SUFFIX = "@rr"


def rerank_options(setting: object) -> dict | None:
    """``{"k1", "k2", "lambda"}`` of an ``eval.rerank`` setting, or None when re-ranking is off.

    ``setting`` is what params.yaml holds: absent/None or ``false`` (off), ``true`` (on with
    :data:`RERANK_DEFAULTS`) or a mapping ``{enabled, k1, k2, lambda}`` (missing keys take
    the defaults; ``enabled`` defaults to false, as in the schema, so a mapping turns
    re-ranking on only with ``enabled: true``).
    """
    if setting is None or setting is False:
        return None
    if setting is True:
        return dict(RERANK_DEFAULTS)
    if not isinstance(setting, dict):
        raise AtreidError(f"eval.rerank: expected true/false or a mapping {{enabled, k1, k2, lambda}}, got {setting!r}")
    unknown = sorted(set(setting) - {"enabled", *RERANK_DEFAULTS})
    if unknown:
        raise AtreidError(f"eval.rerank: unknown key(s) {unknown}; valid: enabled, k1, k2, lambda")
    if not setting.get("enabled", False):
        return None
    return {key: setting.get(key, default) for key, default in RERANK_DEFAULTS.items()}
