"""``summary.png``: val/auroc per epoch for every run (left) and the runs ranked by their score (right)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

from faceattr.atomic import write_bytes
from faceattr.run_record import Status

if TYPE_CHECKING:  # only the type: summary.py imports this module to draw its plot
    from faceattr.sweep.summary import Summary

MAX_COLORED = 9  # more runs than this: the best ones in colour (tab10 without its grey), the others thin and grey
LABEL_CHARS = 64


def _compact(overrides: list[str]) -> list[str]:
    """``optimizer.lr=0.001`` -> ``lr=0.001`` when the last key parts stay distinct (plot labels are narrow)."""
    keys = [o.partition("=")[0] for o in overrides]
    last = [k.rsplit(".", 1)[-1] for k in keys]
    if len(set(last)) < len(last):
        return overrides
    return [f"{short}={o.partition('=')[2]}" if "=" in o else o for short, o in zip(last, overrides)]


def _label(summary: Summary, index: int) -> str:
    run = summary.runs[index]
    what = " ".join(_compact(summary.varying_overrides(run, short=True))) or (run.backbone or "")
    name = f"job {run.name}" if run.name.isdigit() else run.name
    text = f"{name} · {what}" if what and what != run.name else name
    return text if len(text) <= LABEL_CHARS else text[: LABEL_CHARS - 1] + "…"


def plot_summary(summary: Summary, path: Path) -> None:
    """Draw the comparison plot of ``summary`` into ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    runs = summary.runs
    n = len(runs)
    height = min(4.0 + 0.32 * max(n - 6, 0), 16.0)
    fig, (curves, bars) = plt.subplots(1, 2, figsize=(15, height), gridspec_kw={"width_ratios": [1.0, 1.1]})
    palette = [c for i, c in enumerate(plt.get_cmap("tab10").colors) if i != 7]  # 7 is grey: kept for the others
    colors = {}
    colored = 0
    for index, run in enumerate(runs):
        if run.status is Status.COMPLETED and colored < MAX_COLORED:
            colors[index] = palette[colored % len(palette)]
            colored += 1

    # Left: val/auroc per epoch.
    drawn = 0
    for index in reversed(range(n)):  # the best run drawn last, on top
        run = runs[index]
        if not run.curve:
            continue
        epochs, values = zip(*run.curve)
        color = colors.get(index, "0.75")
        curves.plot(
            epochs,
            values,
            marker="o",
            markersize=4 if index in colors else 2,
            linewidth=1.8 if index in colors else 0.8,
            color=color,
            zorder=3 if index in colors else 2,
            label=_label(summary, index) if index in colors else None,
        )
        drawn += 1
    curves.set_title("val/auroc per epoch")
    curves.set_xlabel("epoch")
    curves.set_ylabel("val/auroc (macro over attributes)")
    curves.grid(True, alpha=0.3)
    if drawn:
        from matplotlib.ticker import MaxNLocator

        last_epoch = max(run.curve[-1][0] for run in runs if run.curve)
        curves.set_xlim(0.5, last_epoch + 0.5)
        curves.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        handles, labels = curves.get_legend_handles_labels()
        curves.legend(
            handles[::-1],
            labels[::-1],
            fontsize=8,
            loc="best",
            framealpha=0.85,
            title=None
            if colored == sum(r.status is Status.COMPLETED for r in runs)
            else f"best {colored} (grey: the others)",
            title_fontsize=8,
        )
    else:
        curves.text(0.5, 0.5, "no val/auroc events found", ha="center", va="center", transform=curves.transAxes)

    # Right: a ranked dot plot (dots, not bars: AUROCs share no zero worth drawing bars from).
    scores = [run.score(summary.metric) if run.status is Status.COMPLETED else None for run in runs]
    tests = [run.test.get("test/auroc") for run in runs]
    values = [v for v in scores + tests if v is not None]
    if values:
        lo, hi = min(values), max(values)
        spread = max(hi - lo, 0.02)
        left, right = lo - 0.30 * spread, hi + 0.30 * spread
    else:
        left, right = 0.0, 1.0
    positions = list(range(n))[::-1]  # rank 1 at the top
    has_test = any(t is not None for t in tests)
    for index, (run, y) in enumerate(zip(runs, positions)):
        score, test = scores[index], tests[index]
        bars.axhline(y, color="0.88", linewidth=0.8, zorder=1)
        if score is not None:
            color = colors.get(index, "0.6")
            bars.plot(score, y, marker="o", markersize=9, color=color, zorder=4)
            bars.annotate(
                f"{score:.4f}",
                (score, y),
                xytext=(0, 7),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=8,
                zorder=5,
            )
            if test is not None:
                bars.plot([score, test], [y, y], color=color, linewidth=1.2, alpha=0.6, zorder=3)
        else:
            reason = run.status if run.status is not Status.COMPLETED else f"no {summary.metric}"
            text = (reason + (f": {run.error}" if run.error else ""))[:72]
            bars.text(
                left + 0.01 * (right - left),
                y,
                text,
                va="center",
                ha="left",
                fontsize=8,
                zorder=4,
                color="#b22222" if run.status is Status.FAILED else "0.35",
                bbox={"facecolor": "white", "edgecolor": "none", "pad": 1.0},
            )
        if test is not None:
            bars.plot(test, y, marker="D", markersize=6, color="black", markerfacecolor="white", zorder=5)
    chance = left < 0.5 < right and summary.metric.endswith("auroc")
    if chance:
        bars.axvline(0.5, color="0.5", linestyle="--", linewidth=0.9, zorder=2)
        bars.text(0.5, n - 0.35, " chance", color="0.4", fontsize=8, va="top", ha="left")
    bars.set_yticks(positions)
    bars.set_yticklabels([_label(summary, i) for i in range(n)], fontsize=8)
    bars.set_xlim(left, right)
    bars.set_ylim(-0.7, n - 0.3)
    bars.grid(True, axis="x", alpha=0.3, zorder=0)
    direction = "higher" if summary.mode == "max" else "lower"
    bars.set_title(f"ranked by best {summary.metric} ({direction} is better)")
    bars.set_xlabel(summary.metric if not has_test else f"best {summary.metric} (dots) and test/auroc (diamonds)")
    fig.suptitle(f"{summary.title}  ({n} runs)", fontsize=11)
    fig.tight_layout()
    image = io.BytesIO()
    fig.savefig(image, format="png", dpi=110)
    plt.close(fig)
    write_bytes(path, image.getbuffer())
