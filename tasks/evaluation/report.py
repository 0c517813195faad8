"""The run report: a row per round (data, accuracy, stage seconds), plots, and a comparison of runs.

Figures come from the lake (evals, candidates, scores) and the run's rounds.json (stage seconds).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from tasks.evaluation.metrics import pass_at_k
from tasks.lake.sql import connect
from tasks.lake.store import Lake

STAGES = ("evaluate", "generate", "label", "judge", "reward_train", "score", "select", "finetune", "evaluate_next")


@dataclass
class RunData:
    """Everything the report shows about one run."""

    run_id: str
    rounds: list[dict]  # from rounds.json
    evals: dict[int, dict[str, float]]  # iteration -> metric name -> value (with CIs as name_lo/_hi)
    models: dict[int, str]  # iteration -> model_id
    pass_curves: dict[int, list[float]]  # iteration -> pass@k for k = 1..n
    n: int


def load_run(lake: Lake, run_id: str, rounds_file: Path) -> RunData:
    """Collect one run's figures from the lake and its rounds.json."""
    rounds = json.loads(rounds_file.read_text())["rounds"] if rounds_file.is_file() else []
    con = connect(lake)
    rows = con.execute(
        "SELECT iteration, model_id, metric, k, scorer, value, ci_low, ci_high FROM evals "
        "WHERE run_id = ? ORDER BY iteration", [run_id]).fetchall()
    if not rows:
        raise ValueError(f"run {run_id!r} has no evals in the lake at {lake.root}")
    evals: dict[int, dict[str, float]] = {}
    models: dict[int, str] = {}
    for it, model_id, metric, k, scorer, value, lo, hi in rows:
        name = f"{metric}@{k}" + (f"[{scorer}]" if scorer else "")
        evals.setdefault(it, {}).update({name: value, f"{name}_lo": lo, f"{name}_hi": hi})
        models[it] = model_id
    curves, n = {}, 0
    for it, model_id in models.items():
        counts = con.execute(
            """SELECT c.prompt_id, count(*) AS n, count(*) FILTER (WHERE s.label = 'correct') AS c
               FROM candidates c JOIN prompts p ON p.prompt_id = c.prompt_id
               JOIN scores s ON s.candidate_id = c.candidate_id AND s.scorer = 'verifier'
               WHERE c.iteration = ? AND c.model_id = ? AND p.split = 'eval'
                 AND c.sampling_hash = (SELECT any_value(sampling_hash) FROM candidates c2
                     JOIN prompts p2 ON p2.prompt_id = c2.prompt_id
                     WHERE c2.iteration = ? AND c2.model_id = ? AND p2.split = 'eval' AND c2.sample_index > 0)
               GROUP BY c.prompt_id""", [it, model_id, it, model_id]).fetchall()
        if counts:
            n = counts[0][1]
            curves[it] = [sum(pass_at_k(n, c, k) for _, _, c in counts) / len(counts) for k in range(1, n + 1)]
    return RunData(run_id=run_id, rounds=rounds, evals=evals, models=models, pass_curves=curves, n=n)


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def round_table(run: RunData) -> str:
    """Markdown: one row per model of the run (iteration k = after k rounds)."""
    n = run.n
    head = (f"| iteration | model | prompts | candidates | kept | yield | pass@1 (avg@{n}) | pass@{n} | "
            f"maj@{n} | greedy | all-steps-correct | unparseable | "
            + " | ".join(f"{s} s" for s in STAGES) + " |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    by_iter = {r["iteration"]: r for r in run.rounds}
    for it in sorted(run.evals):
        e, r = run.evals[it], by_iter.get(it, {})
        kept, cands = r.get("kept"), r.get("candidates")
        yld = f"{100 * kept / cands:.1f}%" if kept is not None and cands else "–"
        secs = r.get("seconds", {})
        lines.append(
            f"| {it} | {run.models[it]} | {r.get('prompts', '–')} | {cands or '–'} | "
            f"{kept if kept is not None else '–'} | {yld} | {_pct(e.get('pass@1'))} | {_pct(e.get(f'pass@{n}'))} | "
            f"{_pct(e.get(f'maj@{n}'))} | {_pct(e.get('greedy@1'))} | {_pct(e.get(f'all_steps@{n}'))} | "
            f"{_pct(e.get(f'unparseable@{n}'))} | "
            + " | ".join(f"{secs[s]:.0f}" if s in secs else "–" for s in STAGES) + " |")
    return "\n".join(lines)


def comparison_table(runs: Sequence[RunData]) -> str:
    """Markdown: base vs final model of each run, with 95% bootstrap intervals."""
    lines = ["| run | rounds | metric | base | final | change (points) | final 95% CI |",
             "|---|---|---|---|---|---|---|"]
    for run in runs:
        first, last = min(run.evals), max(run.evals)
        for name in ("pass@1", f"pass@{run.n}", f"maj@{run.n}", "greedy@1", f"all_steps@{run.n}"):
            a, b = run.evals[first].get(name), run.evals[last].get(name)
            if a is None or b is None:
                continue
            lo, hi = run.evals[last].get(f"{name}_lo"), run.evals[last].get(f"{name}_hi")
            lines.append(f"| {run.run_id} | {last - first} | {name} | {_pct(a)} | {_pct(b)} | "
                         f"{100 * (b - a):+.1f} | {_pct(lo)}–{_pct(hi)} |")
    return "\n".join(lines)


def plot_accuracy(runs: Sequence[RunData], path: Path) -> Path:
    """PNG: pass@1, pass@n and greedy accuracy against the round, one line style per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for run in runs:
        its = sorted(run.evals)
        for name, style in (("pass@1", "-o"), (f"pass@{run.n}", "--s"), ("greedy@1", ":^")):
            ax.plot(its, [100 * run.evals[i].get(name, float("nan")) for i in its], style,
                    label=f"{run.run_id} {name}")
    ax.set_xlabel("round (0 = base model)")
    ax.set_ylabel("accuracy on held-out problems (%)")
    ax.set_xticks(sorted({i for run in runs for i in run.evals}))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_pass_at_k(run: RunData, path: Path) -> Path:
    """PNG: pass@k against k, one line per round."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for it, curve in sorted(run.pass_curves.items()):
        ax.plot(range(1, len(curve) + 1), [100 * v for v in curve], "-o", label=f"round {it}")
    ax.set_xlabel("k")
    ax.set_ylabel("pass@k (%)")
    ax.set_title(run.run_id)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(lake: Lake, run_ids: Sequence[str], reports_dir: Path) -> tuple[Path, str]:
    """Write reports_dir/<first run>/report.md with plots; returns its path and the markdown."""
    if not run_ids:
        raise ValueError("no run to report on")
    runs = [load_run(lake, r, reports_dir / r / "rounds.json") for r in run_ids]
    out = reports_dir / run_ids[0]
    out.mkdir(parents=True, exist_ok=True)
    accuracy_png = plot_accuracy(runs, out / "accuracy.png")
    parts = [f"# Flywheel report: {', '.join(run_ids)}", "",
             "Held-out demo problems; iteration k is the model after k rounds (0 = base). Percentages; "
             "stage columns are wall seconds (evaluate = this model, evaluate_next = the model it trained).", ""]
    for run in runs:
        png = plot_pass_at_k(run, out / f"pass_at_k_{run.run_id}.png")
        parts += [f"## {run.run_id}", "", round_table(run), "", f"![pass@k vs k]({png.name})", ""]
    parts += ["## Base vs final", "", comparison_table(runs), "", f"![accuracy vs round]({accuracy_png.name})", ""]
    markdown = "\n".join(parts)
    (out / "report.md").write_text(markdown, encoding="utf-8")
    return out / "report.md", markdown


def reports_dir_for(lake_root: str) -> Path:
    """data/reports beside the lake (data/lake → data/reports)."""
    return Path(lake_root).resolve().parent / "reports"


def known_runs(lake_root: str) -> list[str]:
    """Run ids that have evals rows, in first-seen order."""
    rows = connect(Lake(lake_root)).execute(
        "SELECT run_id, min(iteration) FROM evals GROUP BY run_id ORDER BY run_id").fetchall()
    return [r[0] for r in rows]
