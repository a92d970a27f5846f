"""Showing the records: a terminal table, a JSON file, a bar chart.

Rates: convolutions and training steps in GFLOP/s (``gflops``), pooling in
GB/s (``gbps``, bytes an ideal kernel moves); ``peak_fraction`` divides by
the FP32 peak for the former and the memory bandwidth for the latter
(``peak_metric`` says which). ``speedup`` is the reference's median time
over ours: above 1, ours is faster.
"""

from __future__ import annotations

import json
import os
import tempfile

SHORT_OP = {
    "conv2d_forward": "fwd", "conv2d_backward_data": "bwd-data", "conv2d_backward_filter": "bwd-filter",
    "max_pool2d_forward": "max fwd", "max_pool2d_backward": "max bwd",
    "avg_pool2d_forward": "avg fwd", "avg_pool2d_backward": "avg bwd", "train_step": "train step",
}


def _rate(record: dict) -> str:
    if record["family"] == "pool":
        return f"{record['gbps']:.1f} GB/s"
    return f"{record['gflops']:.1f} GFLOP/s"


def _ms(seconds) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.3f}"


def _pct(fraction) -> str:
    return "-" if fraction is None else f"{100 * fraction:.1f}%"


def format_columns(rows, right=frozenset(), rule: bool = False) -> str:
    """``rows`` of strings as aligned columns (those in ``right`` right-aligned), two spaces
    apart; ``rule`` underlines the first row."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
        if rule and n == 0:
            lines.append("-" * len(lines[0]))
    return "\n".join(lines)


def format_table(records: list[dict]) -> str:
    """One row per record: case, op, our kernel and time, rate, % of peak, reference time, speedup."""
    head = ("case", "op", "backend", "kernel", "ms", "rate", "%peak", "ref ms", "ref %peak", "ref kernel",
            "speedup")
    rows = [head]
    for r in records:
        extra = f" ({r['images_per_s']:.0f} img/s)" if r["family"] == "train" else ""
        rows.append((r["case"], SHORT_OP.get(r["op"], r["op"]), r["backend"], r["algorithm"],
                     _ms(r["median_s"]), _rate(r) + extra, _pct(r["peak_fraction"]),
                     _ms(r["reference_median_s"]), _pct(r["reference_peak_fraction"]),
                     r["reference_algorithm"] or "-",
                     "-" if r["speedup"] is None else f"{r['speedup']:.2f}x"))
    return format_columns([tuple(map(str, row)) for row in rows], right={4, 5, 6, 7, 8, 10}, rule=True)


def format_header(meta: dict) -> str:
    """The lines above the table: machine, peak and its assumptions, reference, settings."""
    lines = []
    for b in meta["backends"]:
        peak = b["peak"]
        lines.append(f"{b['backend']}: {peak['device']}")
        lines.append(f"  peak {peak['flops'] / 1e9:.1f} GFLOP/s FP32 = {peak['flops_note']}")
        lines.append(f"  memory {peak['bandwidth'] / 1e9:.1f} GB/s ({peak['bandwidth_note']})")
        lines.append(f"  reference: {b['reference'] or 'none'}")
    s = meta["settings"]
    lines.append(f"threads: {meta['threads']}")
    lines.append(f"{s['rounds']} rounds x {s['repeats']} samples per side, alternating ours/reference; "
                 f"medians; speedup = reference time / ours")
    return "\n".join(lines)


def write_json(path, meta: dict, records: list[dict]) -> None:
    """``{"meta": ..., "records": [...]}`` written to a temporary file and renamed over ``path``."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".bench-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump({"meta": meta, "records": records}, f, indent=1)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def plot(path, records: list[dict], title: str = "gpucnn bench") -> None:
    """Bar chart: per case and op, % of peak of ours and the reference (left), speedup (right)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['case']} {SHORT_OP.get(r['op'], r['op'])} [{r['backend']}]" for r in records]
    ours = [100 * r["peak_fraction"] for r in records]
    theirs = [100 * (r["reference_peak_fraction"] or 0) for r in records]
    speedup = [r["speedup"] or 0 for r in records]
    y = list(range(len(records)))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 0.28 * len(records) + 1.6), sharey=True)
    ax1.barh([v - 0.2 for v in y], ours, height=0.4, label="gpucnn")
    ax1.barh([v + 0.2 for v in y], theirs, height=0.4, label=records[0]["reference"] or "reference")
    ax1.set_xlabel("% of peak (conv, train: FP32 FLOP/s; pool: memory bandwidth)")
    ax1.set_yticks(y, labels, fontsize=7)
    ax1.invert_yaxis()
    ax1.legend(fontsize=7, loc="lower right")
    colors = ["tab:green" if s >= 1 else "tab:red" for s in speedup]
    ax2.barh(y, speedup, color=colors)
    ax2.axvline(1.0, color="black", linewidth=0.8)
    ax2.set_xlabel("speedup (reference time / ours; >1: ours faster)")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _times(x) -> str:
    return "-" if x is None else f"{x:.2f}x"


def format_markdown(records: list[dict]) -> str:
    """The records as a Markdown table: medians, and the speedup of the minima beside that of the medians.

    On a machine shared with other work the minimum is the time least disturbed by it.
    """
    lines = ["| case | op | shape | our kernel | ms | rate | % peak | ref ms | ref % peak | speedup | speedup of minima |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in records:
        rate = _rate(r) + (f" ({r['images_per_s']:.0f} img/s)" if r["family"] == "train" else "")
        best = _times(None if r["reference_min_s"] is None else r["reference_min_s"] / r["min_s"])
        lines.append(f"| {r['case']} | {SHORT_OP.get(r['op'], r['op'])} | {r['shape']} | {r['algorithm']} "
                     f"| {_ms(r['median_s'])} | {rate} | {_pct(r['peak_fraction'])} "
                     f"| {_ms(r['reference_median_s'])} | {_pct(r['reference_peak_fraction'])} "
                     f"| {_times(r['speedup'])} | {best} |")
    return "\n".join(lines)
