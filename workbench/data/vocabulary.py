"""Canonical expression vocabulary and aliases.

The workbench uses the 8 canonical classes of AffectNet-8 / FERPlus, in this order (it is also the
class index order of every probe and the order of the figure palette)::

    neutral, happiness, sadness, surprise, fear, disgust, anger, contempt

Dataset labels are mapped with :func:`canonical_expression`, which accepts common aliases
(``happy`` -> ``happiness``, ``angry`` -> ``anger``, ``AN`` -> ``anger``...) and raises a
:class:`~workbench.errors.ManifestError` with a suggestion for anything unknown.
"""

from __future__ import annotations

import difflib

EXPRESSIONS: tuple[str, ...] = (
    "neutral",
    "happiness",
    "sadness",
    "surprise",
    "fear",
    "disgust",
    "anger",
    "contempt",
)
EXPRESSION_INDEX: dict[str, int] = {name: i for i, name in enumerate(EXPRESSIONS)}

ALIASES: dict[str, str] = {
    # neutral
    "neutral": "neutral", "neu": "neutral", "ne": "neutral", "calm": "neutral", "none": "neutral",
    # happiness
    "happiness": "happiness", "happy": "happiness", "happ": "happiness", "hap": "happiness",
    "ha": "happiness", "joy": "happiness", "smile": "happiness",
    # sadness
    "sadness": "sadness", "sad": "sadness", "sa": "sadness",
    # surprise
    "surprise": "surprise", "surprised": "surprise", "sur": "surprise", "su": "surprise",
    # fear
    "fear": "fear", "fearful": "fear", "afraid": "fear", "scared": "fear", "fe": "fear", "af": "fear",
    # disgust
    "disgust": "disgust", "disgusted": "disgust", "dis": "disgust", "di": "disgust",
    # anger
    "anger": "anger", "angry": "anger", "ang": "anger", "an": "anger", "mad": "anger",
    # contempt
    "contempt": "contempt", "contemptuous": "contempt", "con": "contempt", "co": "contempt",
}


def canonical_expression(label: object) -> str:
    """Map a dataset label (any case, common aliases) to its canonical name.

    Raises ``ManifestError`` with the closest canonical name as a suggestion when unknown.
    """
    from workbench.errors import ManifestError

    key = str(label).strip().lower()
    if key in ALIASES:
        return ALIASES[key]
    guess = difflib.get_close_matches(key, list(ALIASES), n=1, cutoff=0.6)
    hint = f" (did you mean '{ALIASES[guess[0]]}'?)" if guess else ""
    raise ManifestError(
        f"unknown expression label '{label}'{hint}; canonical labels are: {', '.join(EXPRESSIONS)}"
    )


def suggest_expression(label: object) -> str | None:
    """Return the canonical name closest to ``label``, or None."""
    key = str(label).strip().lower()
    if key in ALIASES:
        return ALIASES[key]
    guess = difflib.get_close_matches(key, list(ALIASES), n=1, cutoff=0.6)
    return ALIASES[guess[0]] if guess else None
