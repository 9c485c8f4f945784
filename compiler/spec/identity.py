"""Which values say *which model* a spec is, and the rule that keeps `extends` from copying them silently.

`extends` is for architecture and recipe. A spec that extends another *model spec* (any base that is not a
recipe, `abstract = true`) describes a different model: its own name, and so its own title, paper,
organisation, release date, published figures and training tokens. That holds for size variants too
(LLaMA 7B and 13B saw 1.0T tokens, 33B and 65B 1.4T; each size has its own count), not only for
post-training derivatives. So for every identity field its base resolves to a value, the spec either writes
its own or names the field in `inherits`, saying that the base's value is also true of this model:

    extends = "gpt3"
    inherits = ["model.paper", "model.organization", "model.released", "training.tokens"]

Recipes carry no identity, so a spec that extends only recipes needs no `inherits`.
`published` is one unit: a spec that writes a [published] table replaces its model base's table whole, so
a new count never keeps the base's source or deviation note.
"""

from __future__ import annotations

from typing import Any

from .kinds import suggest_choice

INHERITS_KEY = "inherits"

# Dotted keys (or whole tables) that identify a model rather than describe its architecture.
IDENTITY_FIELDS = ("model.title", "model.paper", "model.organization", "model.released", "published", "training.tokens")

# Tables a child replaces whole instead of merging into its model base's.
REPLACED_TABLES = ("published",)

# (dotted key, message, allowed values, hint)
IdentityProblem = tuple[str, str, tuple[str, ...], str]


def _covers(field: str, leaves: dict[str, Any]) -> list[str]:
    """The leaves that hold `field` (the key itself or anything inside the table it names), set to a value."""
    return [leaf for leaf, value in leaves.items()
            if (leaf == field or leaf.startswith(field + ".")) and value not in ("", None, [], {})]


def read_inherits(value: Any) -> tuple[list[str], list[IdentityProblem]]:
    """The names in an `inherits` value, and the problems with it (wrong type, unknown names)."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return [], [(INHERITS_KEY, "must be a list of identity fields", IDENTITY_FIELDS, "")]
    problems: list[IdentityProblem] = []
    for name in value:
        if name not in IDENTITY_FIELDS:
            close = suggest_choice(name, IDENTITY_FIELDS)
            problems.append((INHERITS_KEY, f"{name!r} is not an identity field", IDENTITY_FIELDS,
                             f"did you mean {close!r}?" if close else ""))
    return [v for v in value if v in IDENTITY_FIELDS], problems


def check_identity(own: dict[str, Any], inherits: list[str], model_bases: list[tuple[str, dict[str, Any]]],
                   inherits_written: bool) -> list[IdentityProblem]:
    """Problems with what a spec inherits from the model specs it extends.

    `own`: the spec's own leaves; `model_bases`: (file, resolved leaves) of each non-recipe base.
    """
    problems: list[IdentityProblem] = []
    if not model_bases:
        if inherits_written:
            problems.append((INHERITS_KEY, "only a spec that extends a model spec (not only recipes) inherits identity", (), "remove it"))
        return problems
    for field in IDENTITY_FIELDS:
        written = bool(_covers(field, own))
        if field in inherits:
            if written:
                problems.append((INHERITS_KEY, f"{field!r} is both written here and listed as inherited", (), "keep one"))
            continue
        if written:
            continue
        sources = [file for file, leaves in model_bases if _covers(field, leaves)]
        if sources:
            problems.append((field, f"not written, and {sources[0]} is another model", (),
                             f"write this model's own, or list {field!r} in inherits if the base's value holds for it too"))
    return problems
