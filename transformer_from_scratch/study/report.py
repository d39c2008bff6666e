"""A study's report: per variant, the best learning rate and the loss over seeds, compared with
the baseline; as a table, JSON, Markdown and pictures."""

import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transformer_from_scratch.study.plan import Plan
from transformer_from_scratch.study.stats import paired_t_test, summarise


def _by_variant(records: Sequence[dict[str, Any]]) -> dict[str, dict[float, list[dict[str, Any]]]]:
    grouped: dict[str, dict[float, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for record in records:
        grouped[record["variant"]][float(record["lr"])].append(record)
    for runs in grouped.values():
        for seeds in runs.values():
            seeds.sort(key=lambda r: r["seed"])
    return grouped


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def summary(
    plan: Plan, records: Sequence[dict[str, Any]], states: dict[str, str]
) -> dict[str, Any]:
    """Everything the report shows, as plain data (what ``report.json`` holds)."""
    grouped = _by_variant(records)
    best = {name: min(runs, key=lambda lr: summarise([r["val_loss"] for r in runs[lr]]).mean)
            for name, runs in grouped.items()}  # fmt: skip
    base_runs = grouped.get(plan.baseline, {}).get(best.get(plan.baseline, -1.0), [])
    rows = []
    for variant in plan.variants:
        if variant.name not in grouped:
            rows.append({"variant": variant.name, "trials": 0})
            continue
        runs = grouped[variant.name][best[variant.name]]
        losses = [r["val_loss"] for r in runs]
        swept = sorted(grouped[variant.name])
        at_edge = len(swept) > 1 and best[variant.name] in (swept[0], swept[-1])
        row: dict[str, Any] = {
            "variant": variant.name, "best_lr": best[variant.name], "seeds": len(runs),
            "best_lr_at_edge": at_edge,
            "val_loss": _summary_dict(losses),
            "lr_sweep": {str(lr): _summary_dict([r["val_loss"] for r in seeds])
                         for lr, seeds in sorted(grouped[variant.name].items())},
            "tokens_per_s": _mean([r["tokens_per_s"] for r in runs]),
            "peak_mib": _mean([(r["peak_bytes"] or 0) / 2**20 for r in runs]),
            "parameters": runs[0]["parameters"], "flops_per_token": runs[0]["flops_per_token"],
            "steps": runs[0]["steps"],
        }  # fmt: skip
        if plan.extrapolate:
            longer = [r["extrapolation"] for r in runs if "extrapolation" in r]
            row["extrapolation"] = {
                "context": longer[0]["context"] if longer else None,
                "val_loss": _mean([x["val_loss"] for x in longer]),
                "why": next((x["why"] for x in longer if x.get("why")), None),
            }
        row["vs_baseline"] = _compare(runs, base_runs, variant.name == plan.baseline)
        rows.append(row)
    counts = {s: list(states.values()).count(s) for s in ("done", "running", "left")}
    return {"study": plan.name, "baseline": plan.baseline, "budget": list(plan.budget),
            "seeds": list(plan.seeds), "progress": counts, "rows": rows}  # fmt: skip


def _summary_dict(values: Sequence[float]) -> dict[str, Any]:
    s = summarise(values)
    return {"mean": s.mean, "ci95": None if s.n < 2 else s.half_width, "n": s.n,
            "values": list(values)}  # fmt: skip


def _compare(runs: list[dict[str, Any]], base: list[dict[str, Any]], is_base: bool) -> Any:
    if is_base or not base:
        return None
    mine = {r["seed"]: r["val_loss"] for r in runs}
    theirs = {r["seed"]: r["val_loss"] for r in base}
    seeds = sorted(set(mine) & set(theirs))
    test = paired_t_test([mine[s] for s in seeds], [theirs[s] for s in seeds])
    return {"difference": test.difference, "p_value": test.p_value, "seeds": test.n,
            "within_noise": test.within_noise}  # fmt: skip


def markdown(report: dict[str, Any]) -> str:
    """The table, ready to paste into a paper or an issue."""
    extrapolating = any("extrapolation" in r for r in report["rows"])
    head = ["variant", "best lr", "validation loss (95 % CI)", "vs baseline", "tokens/s",
            "peak MiB", "parameters", "FLOPs/token"]  # fmt: skip
    if extrapolating:
        head.insert(3, "at longer context")
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for row in report["rows"]:
        if not row.get("seeds"):
            lines.append(f"| {row['variant']} |" + " not run yet |" + " |" * (len(head) - 2))
            continue
        edge = " (edge)" if row.get("best_lr_at_edge") else ""
        cells = [row["variant"], f"{row['best_lr']:g}{edge}", _loss(row["val_loss"]),
                 _versus(row["vs_baseline"]), f"{row['tokens_per_s']:,.0f}",
                 f"{row['peak_mib']:,.0f}", f"{row['parameters']:,}",
                 f"{row['flops_per_token']:,.0f}"]  # fmt: skip
        if extrapolating:
            cells.insert(3, _longer(row.get("extrapolation")))
        lines.append("| " + " | ".join(cells) + " |")
    p = report["progress"]
    lines.append("")
    lines.append(f"{report['study']}: budget {report['budget'][0]} = {report['budget'][1]:,.0f}, "
                 f"seeds {report['seeds']}; {p['done']} trials done, {p['running']} running, "
                 f"{p['left']} left. vs baseline ({report['baseline']}): mean difference over "
                 "seeds, paired t-test; 'noise' when p >= 0.05. '(edge)': the best rate is "
                 "the lowest or highest tried, so a better one may lie beyond it.")  # fmt: skip
    return "\n".join(lines) + "\n"


def _loss(s: dict[str, Any]) -> str:
    interval = f" ± {s['ci95']:.4f}" if s["ci95"] is not None else ""
    return f"{s['mean']:.4f}{interval} (n={s['n']})"


def _versus(v: dict[str, Any] | None) -> str:
    if v is None:
        return "baseline"
    if v["seeds"] < 2:
        return f"{v['difference']:+.4f} (one seed: no test)"
    verdict = "noise" if v["within_noise"] else "real"
    return f"{v['difference']:+.4f}, p={v['p_value']:.3f} ({verdict})"


def _longer(x: dict[str, Any] | None) -> str:
    if not x:
        return "-"
    if x["val_loss"] is None:
        return f"cannot ({x['why']})"
    return f"{x['val_loss']:.4f} at {x['context']}"


def write(
    folder: Path, report: dict[str, Any], records: Sequence[dict[str, Any]], plan: Plan
) -> list[Path]:
    """``report.json``, ``report.md`` and the pictures; returns the paths."""
    (folder / "report.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    (folder / "report.md").write_text(markdown(report), encoding="utf-8")
    from transformer_from_scratch.study import plots

    written = [folder / "report.json", folder / "report.md"]
    return written + plots.draw(folder, report, records, plan)
