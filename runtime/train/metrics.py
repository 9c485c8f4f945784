"""What a person watches: metrics.jsonl, a rich progress bar, and PNG plots at the end."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .errors import disk_errors

METRICS = "metrics.jsonl"


class MetricsLog:
    """One JSON object per optimizer step (and per evaluation), flushed as written.

    On resume the file is cut back to the checkpoint's step, so the records a killed run wrote
    after its last checkpoint are replaced by the resumed run's, not duplicated.
    """

    def __init__(self, run_dir: Path, resume_step: int | None, enabled: bool):
        self.path = run_dir / METRICS
        self.enabled = enabled
        if not enabled:
            return
        kept = []
        if resume_step is not None and self.path.is_file():
            for line in self.path.read_text().splitlines():
                try:
                    record = json.loads(line)
                except ValueError:
                    break  # a line cut by the kill
                if record.get("step", 0) > resume_step:
                    break
                kept.append(line)
        with disk_errors(self.path, "metrics"):
            self.path.write_text("".join(k + "\n" for k in kept))
            self._file = open(self.path, "a")

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with disk_errors(self.path, "metrics"):
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()

    def close(self) -> None:
        if self.enabled:
            self._file.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def plot(records: list[dict[str, Any]], out: Path, title: str) -> Path:
    """Loss (train and validation), learning rate and batch size against tokens, one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r for r in records if "loss" in r]
    evals = [r for r in records if "val_loss" in r]
    fig, axes = plt.subplots(3, 1, figsize=(7, 8), sharex=True)
    axes[0].plot([r["tokens"] for r in steps], [r["loss"] for r in steps], label="train")
    if evals:
        axes[0].plot([r["tokens"] for r in evals], [r["val_loss"] for r in evals], "o-", label="validation")
    axes[0].set_ylabel("loss (nats/token)")
    axes[0].legend()
    axes[1].plot([r["tokens"] for r in steps], [r["lr"] for r in steps])
    axes[1].set_ylabel("learning rate")
    axes[2].plot([r["tokens"] for r in steps], [r["batch_tokens"] for r in steps])
    axes[2].set_ylabel("batch (tokens)")
    axes[2].set_xlabel("tokens")
    fig.suptitle(title)
    fig.tight_layout()
    tmp = out.with_name(f".{out.name}.tmp.png")
    with disk_errors(out, "plot"):
        fig.savefig(tmp, dpi=100)
        os.replace(tmp, out)
    plt.close(fig)
    return out


class ProgressBar:
    """A rich bar over the token budget with loss, learning rate, tokens/s and time left."""

    def __init__(self, total_tokens: int, done: int, enabled: bool):
        self.enabled = enabled
        if not enabled:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._bar = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("tokens"),
                             TextColumn("{task.fields[stats]}"), TimeRemainingColumn(), transient=False)
        self._task = self._bar.add_task("train", total=total_tokens, completed=done, stats="")
        self._bar.start()

    def update(self, tokens: int, loss: float, lr: float, tokens_per_s: float) -> None:
        if self.enabled:
            self._bar.update(self._task, completed=tokens,
                             stats=f"loss {loss:.3f}  lr {lr:.2e}  {tokens_per_s:,.0f} tok/s")

    def close(self) -> None:
        if self.enabled:
            self._bar.stop()


def plot_comparison(curves: dict[str, list[dict[str, Any]]], out: Path, title: str) -> Path:
    """Validation (points) and training (faint) loss against tokens, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (name, records) in enumerate(curves.items()):
        color = f"C{i}"
        steps = [r for r in records if "loss" in r]
        evals = [r for r in records if "val_loss" in r]
        ax.plot([r["tokens"] for r in steps], [r["loss"] for r in steps], color=color, alpha=0.25, linewidth=0.8)
        ax.plot([r["tokens"] for r in evals], [r["val_loss"] for r in evals], "o-", color=color, label=name)
    ax.set_xlabel("tokens")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    tmp = out.with_name(f".{out.name}.tmp.png")
    with disk_errors(out, "plot"):
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(tmp, dpi=100)
        os.replace(tmp, out)
    plt.close(fig)
    return out
