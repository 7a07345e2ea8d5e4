"""``python -m benchmarks.gpu.summary --out DIR [--wall S]``: write DIR/summary.md from the parts' JSON.

One page: where and when it ran, one line per part (status, seconds of its budget, message), the
goals next to their figures, and the main figures of each part.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.gpu.common import PARTS

# the figures each part's section shows (besides its goals), by prefix
SHOWN = {
    "a_optimizer_step": ("parameters_M", "copy_bandwidth_GBps", "adam_fused_ms", "adam_fused_floor_ms"),
    "b_study_throughput": ("bare_s_", "lyaptune_s_", "population_s_"),
    "c_khat": ("khat_s", "k_hat", "hvps"),
    "d_paper003": ("study_wall_s", "report_s", "runs", "k_hat", "alpha"),
    "e_device_checks": ("checks_total", "checks_agreeing"),
}


def _fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, int | float):
        return f"{v:.4g}"
    return str(v)


def render(parts: dict[str, dict[str, Any] | None], wall_s: float | None) -> str:
    """The summary's Markdown for the parts' JSON (None where a part left no JSON)."""
    first = next((p for p in parts.values() if p), {}) or {}
    lines = [
        "# lyaptune GPU suite: summary",
        "",
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; commit {first.get('commit')}; "
        f"torch {first.get('torch')}",
        f"- device: {first.get('device_name')}; toy: {first.get('toy')}"
        + (f"; suite wall time {wall_s:.0f} s" if wall_s is not None else ""),
        "",
        "| part | status | wall s / budget s | message |",
        "| --- | --- | ---: | --- |",
    ]
    for name, title in PARTS.items():
        p = parts.get(name)
        if p is None:
            lines.append(f"| {title} | missing | | no JSON written |")
            continue
        msg = str(p.get("message") or "").replace("|", "/").replace("\n", " ")[:160]
        lines.append(
            f"| {title} | {p['status']} | {_fmt(p.get('wall_s'))} / {_fmt(p.get('budget_s'))} | {msg} |"
        )
    lines += [
        "",
        "## Goals",
        "",
        "| part | figure | value | goal | met |",
        "| --- | --- | ---: | --- | --- |",
    ]
    for name, title in PARTS.items():
        for g in (parts.get(name) or {}).get("goals", []):
            met = "yes" if g["met"] else "**no**"
            lines.append(f"| {title[:2]} | {g['figure']} | {_fmt(g['value'])} | {g['goal']} | {met} |")
    lines += ["", "## Figures", ""]
    for name, title in PARTS.items():
        p = parts.get(name) or {}
        figs = p.get("figures", {})
        shown = [f"{k} {_fmt(v)}" for k, v in figs.items() if k.startswith(SHOWN[name])]
        notes = "; ".join(p.get("notes", []))
        lines.append(
            f"- **{title}**: " + ("; ".join(shown) or "no figures") + (f" ({notes})" if notes else "")
        )
    arms = ((parts.get("d_paper003") or {}).get("details") or {}).get("arms") or []
    if arms:
        lines += [
            "",
            "## papers/003 arms (medians over runs)",
            "",
            "| arm | phase | runs done | final grad norm | train loss | test acc | collapsed |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for a in arms:
            lines.append(
                f"| {a['arm']} | {a['phase']} | {a['completed']}/{a['runs']} | "
                f"{_fmt(a['final_grad_norm'])} | {_fmt(a['final_train_loss'])} | "
                f"{_fmt(a['final_test_acc'])} | {a['collapsed']} |"
            )
    if first.get("toy"):
        lines += ["", "Toy sizes: the figures show that every code path runs, not how the goals fare."]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--wall", type=float, default=None, help="the suite's wall seconds")
    args = ap.parse_args(argv)
    parts: dict[str, dict[str, Any] | None] = {}
    for name in PARTS:
        try:
            parts[name] = json.loads((Path(args.out) / f"{name}.json").read_text())
        except (OSError, ValueError):
            parts[name] = None
    text = render(parts, args.wall)
    (Path(args.out) / "summary.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
