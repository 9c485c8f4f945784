"""`taxonc ablate`: train several specs on the same data, seed, tokenizer, batch and token budget,
then compare their validation losses in a table and one plot.

Tokens are matched, not parameters or compute: each row reports its parameter count and
forward FLOPs per token, so a lower loss bought with more parameters shows as such.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from .training import TrainRequest, run_training


@dataclass(frozen=True)
class AblationRow:
    name: str
    params: int
    flops_per_token: int
    tokens: int
    val_loss: float
    final_loss: float


def run_ablation(specs: list[Path], template: TrainRequest) -> tuple[list[AblationRow], Path]:
    """Train each spec into template.out/<spec stem>; the first run's tokenizer is every run's."""
    from taxonc.runtime.train.metrics import plot_comparison, read_metrics

    from .analysis import count_params, forward_flops_per_token
    from .compile import compile_spec

    rows, curves = [], {}
    tokenizer = template.tokenizer
    for spec in specs:
        out = template.out / spec.stem
        world, recipe, prepared, result = run_training(replace(template, spec=spec, out=out, tokenizer=tokenizer))
        if tokenizer is None:
            tokenizer = out / "tokenizer.model"
        compiled = compile_spec(spec, scale=template.scale, sets=list(template.sets))
        rows.append(AblationRow(compiled.spec.model.name, count_params(compiled.spec).total,
                                int(forward_flops_per_token(compiled.spec).total), result.tokens, result.val_loss,
                                result.final_loss))
        curves[compiled.spec.model.name] = read_metrics(out / "metrics.jsonl")
    plot = plot_comparison(curves, template.out / "ablation.png", f"same data, seed and {rows[0].tokens:,} tokens")
    (template.out / "ablation.json").write_text(json.dumps([r.__dict__ for r in rows], indent=2) + "\n")
    return rows, plot


def markdown_table(rows: list[AblationRow]) -> str:
    lines = ["| spec | params | fwd FLOPs/token | tokens | validation loss | final train loss |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in sorted(rows, key=lambda r: r.val_loss):
        lines.append(f"| {r.name} | {r.params:,} | {r.flops_per_token:,} | {r.tokens:,} | {r.val_loss:.3f} | {r.final_loss:.3f} |")
    return "\n".join(lines) + "\n"
