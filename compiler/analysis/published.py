"""The rule docs/spec-reference.md states for `published.deviation`: a computed count that misses its published
figure by more than 2% needs the reason written down. Checked here, not in the spec layer, because it needs
the parameter count."""

from __future__ import annotations

from ..errors import Problem
from ..spec.load import ResolvedSpec
from . import TOLERANCE
from .params import count_params


def published_problems(resolved: ResolvedSpec) -> list[Problem]:
    """One problem per published count (total, active) that the computed count misses by more than 2%
    while `published.deviation` is empty."""
    spec = resolved.spec
    if resolved.abstract or spec.published.deviation:
        return []
    counts = count_params(spec)
    problems = []
    for key, published, computed in (("published.params", spec.published.params, counts.total),
                                     ("published.active_params", spec.published.active_params, counts.active)):
        if published is None:
            continue
        miss = (computed - published) / published
        if abs(miss) > TOLERANCE:
            problems.append(resolved.problem(
                key, f"the dimensions give {computed:,} parameters, {miss:+.1%} off the published {published:,.0f}; "
                f"more than {TOLERANCE:.0%} needs published.deviation saying why",
                hint="fix the dimensions or the count, or write published.deviation"))
    return problems
