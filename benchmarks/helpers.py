"""Small helpers every benchmark part shares: run records (evaluation and training histories, the recorded command
line, JSON-safe values), statistics over seeds and step times, and the report's Markdown and figure formatting."""

from __future__ import annotations

import functools
import json
import math
import shlex
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def brown_head(path: Path, lines: int = 6000) -> Path:
    """`path` holding the first `lines` lines of the shared brown.txt (the benchmarks' training text), written once."""
    if not path.exists():
        from homodistil_hf.testing import shared_data_dir

        with open(shared_data_dir() / "corpus" / "brown.txt") as f:
            path.write_text("".join(line for _, line in zip(range(lines), f)))
    return path


# --- run records ------------------------------------------------------------------------------------------------------
def eval_history(log_history: list[dict]) -> list[dict]:
    """Evaluation entries merged by step: eval_loss, eval_loss_hidden, eval_loss_attn (the teacher-student
    discrepancy on held-out text)."""
    by_step: dict[int, dict] = {}
    for h in log_history:
        keys = [k for k in h if k.startswith("eval_loss")]
        if keys:
            by_step.setdefault(h["step"], {"step": h["step"]}).update({k: h[k] for k in keys})
    return [by_step[s] for s in sorted(by_step)]


def train_history(log_history: list[dict]) -> list[dict]:
    keep = ("loss", "loss_hidden", "loss_attn", "sparsity", "width_hidden", "width_heads", "width_ffn")
    return [{"step": h["step"], **{k: h[k] for k in keep if k in h}} for h in log_history if "loss" in h]


def command_line(script: str, argv: list[str], script_path: bool = False) -> str:
    """The shell command, with machine-specific paths shortened to names the README explains."""
    parts = ["python", short(script) if script_path else script, *map(short, argv)]
    return " ".join(shlex.quote(p) if not p.startswith("$") else p for p in parts)


@functools.cache
def _substitutions() -> tuple[tuple[str, str], ...]:
    from homodistil_hf.testing import minilm_path

    teacher = minilm_path(required=False)
    return (*(((str(teacher), "$MINILM"),) if teacher is not None else ()),
            (str(HERE / "_work"), "benchmarks/_work"), (str(HERE), "benchmarks"),
            (str(ROOT.parent / "shared" / "data"), "$DATA"))


def short(value) -> str:
    """`value` as text with this machine's paths replaced by `$MINILM`, `$DATA`, `benchmarks/...`."""
    text = str(value)
    for old, new in _substitutions():
        text = text.replace(old, new)
    return text


def clean(obj):
    """JSON-safe: NaN/inf to None, tuples to lists, numpy/torch scalars to floats."""
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [clean(v) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, int | str | bool) or obj is None:
        return obj
    try:
        return clean(float(obj))
    except (TypeError, ValueError):
        return str(obj)


def write_json(path: Path, data) -> None:
    """`clean(data)` as indented JSON, written atomically (a temporary file, then renamed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(clean(data), indent=1, sort_keys=False) + "\n")
    tmp.replace(path)


# --- statistics -------------------------------------------------------------------------------------------------------
def mean_sd(vals: list[float]) -> tuple[float | None, float]:
    """Mean (None without values) and sample sd (0 for one value) over seeds."""
    return (statistics.fmean(vals) if vals else None), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def ratio_stats(pairs: list[tuple[float, float]]) -> dict:
    """Ratios of (variant, reference) step times measured side by side."""
    if not pairs:
        return {}
    mine, ref = [p[0] for p in pairs], [p[1] for p in pairs]
    paired = [x / r for x, r in pairs]
    return {"mean_s": statistics.fmean(mine), "reference_mean_s": statistics.fmean(ref),
            "median_s": statistics.median(mine), "reference_median_s": statistics.median(ref),
            "ratio_of_means": statistics.fmean(mine) / statistics.fmean(ref),
            "ratio_of_medians": statistics.median(mine) / statistics.median(ref),
            "median_paired_ratio": statistics.median(paired),
            "paired_ratio_iqr": _iqr(paired)}


def _iqr(values: list[float]) -> list[float]:
    if len(values) < 4:
        return [min(values), max(values)]
    q = statistics.quantiles(values, n=4)
    return [q[0], q[2]]


def phase(k: int, start: int, end: int) -> str:
    """Phase of the k-th step (0-based optimizer step index, as the pruning callback sees it)."""
    if k < start:
        return "before"
    return "during" if k <= end else "after"


def phase_stats(pairs: list[tuple[float, float]], start: int, end: int) -> dict:
    """`ratio_stats` of the paired step times of each phase (step 0, the warm-up, left out)."""
    out = {}
    for name in ("before", "during", "after"):
        sel = [pair for k, pair in enumerate(pairs) if k > 0 and phase(k, start, end) == name]
        if sel:
            out[name] = {"steps": len(sel), **ratio_stats(sel)}
    return out


# --- report formatting ------------------------------------------------------------------------------------------------
def fmt(x, digits=3, pct=False):
    """A number for a report table: `–` for None, yes / **no** for booleans, thousands separators for ints."""
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "**no**"
    if isinstance(x, int):
        return f"{x:,}"
    return f"{100 * x:.1f}" if pct else f"{x:.{digits}f}"


def table(header: list[str], rows: list[list]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def pyplot():
    """matplotlib.pyplot on the Agg backend, or None (with a note) when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[bench]'): no plots", file=sys.stderr)
        return None
    return plt


def save_figure(fig, fig_dir: Path, name: str) -> dict[str, str]:
    """Write `fig` to `fig_dir/<name>.png` and close it; {name: path relative to the README}."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(fig_dir / f"{name}.png", dpi=90)
    plt.close(fig)
    return {name: f"figures/{name}.png"}
