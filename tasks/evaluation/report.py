"""The run report: a row per round (data, accuracy, stage seconds), plots, and a comparison of runs.

Figures come from the lake (evals, candidates, scores) and the run's rounds.json (stage seconds).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from tasks.evaluation.metrics import pass_at_k
from tasks.evaluation.rm_eval import purity_auroc, step_auroc, within_prompt_auroc
from tasks.lake.sql import connect
from tasks.lake.store import Lake

SIGNAL_KINDS = ("math_shepherd", "orm", "prm", "prl", "confidence")  # reward models whose ranking the report measures
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
    kept_data: dict[int, dict[str, float | int | None]]  # iteration -> purity and extra cost of its round
    signals: dict[int, dict[str, dict]]  # iteration -> reward model name -> how well it ranked the round
    recipe: dict = field(default_factory=dict)  # the run's selection name and finetune settings


def load_run(lake: Lake, run_id: str, rounds_file: Path) -> RunData:
    """Collect one run's figures from the lake and its rounds.json."""
    summary = json.loads(rounds_file.read_text()) if rounds_file.is_file() else {}
    rounds, reward_models = summary.get("rounds", []), summary.get("reward_models", {})
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
    kept_data = {r["iteration"]: round_data(con, r, reward_models) for r in rounds}
    signals = {r["iteration"]: signal_quality(con, r, reward_models) for r in rounds}
    return RunData(run_id=run_id, rounds=rounds, evals=evals, models=models, pass_curves=curves, n=n,
                   kept_data=kept_data, signals=signals, recipe=summary.get("recipe", {}))


def recipe_line(recipe: dict) -> str:
    """One sentence saying how the run selected and finetuned ('' when its summary predates it)."""
    if not recipe:
        return ""
    ft = recipe["finetune"]
    budget = f"{ft['max_steps']} steps" if ft["max_steps"] else f"{ft['epochs']:g} epochs"
    start = "the base model" if ft["start_from"] == "base" else "the previous round's model"
    text = (f"Selection `{recipe['selection']}`; finetuning {budget} at learning rate "
            f"{ft['learning_rate']:g} from {start}, batches {ft['batching']}")
    if ft["token_weights"] == "prefix":
        text += (f", each sample learned up to its first step scored below {ft['token_weight_min']:g} "
                 f"by `{ft['token_weight_scorer']}`")
    elif ft["token_weights"] != "none":
        text += f", token weights {ft['token_weights']}"
    if ft["merge_with_base"]:
        text += f"; each round's model merged {100 * ft['merge_with_base']:g}% with the base model"
    return text + "."


def round_data(con: Any, round_summary: dict, reward_models: dict[str, str]) -> dict[str, float | int | None]:
    """Of one round (a rounds.json entry): the purity of its kept samples (share whose every step is
    right, where the step verifier knows; None where it knows none) and the extra cost of the run's
    reward models (`reward_models`: name -> kind) on its candidates: the Math-Shepherd candidates
    labelled and their rollouts, the pairwise judge's votes, and the ORM, PRM and PRL (reference
    model) scoring passes.
    Work another run already did on the same candidates counts too: it is what the signal costs."""
    it, model_in = round_summary["iteration"], round_summary["model_in"]
    named = {kind: [n for n, k in reward_models.items() if k == kind] for kind in ("math_shepherd", "judge")}
    scored = [n for n, k in reward_models.items() if k in ("orm", "prm", "prl")]
    kept, known, pure = con.execute(
        """SELECT count(*), count(v.value), count(*) FILTER (WHERE v.value = 1.0)
           FROM (SELECT DISTINCT candidate_id FROM selections WHERE iteration = ? AND policy_hash = ?) k
           JOIN (SELECT DISTINCT candidate_id, model_id FROM candidates WHERE iteration = ?) c
             ON c.candidate_id = k.candidate_id AND c.model_id = ?
           LEFT JOIN scores v ON v.candidate_id = k.candidate_id AND v.scorer = 'step_verifier'""",
        [it, round_summary.get("policy_hash", ""), it, model_in]).fetchone()
    labelled, rollouts = con.execute(
        """SELECT count(*), coalesce(sum(greatest(len(s.step_scores) - 1, 0)
                                         * CAST(json_extract(s.detail, '$.rollouts_per_step') AS BIGINT)), 0)
           FROM scores s JOIN (SELECT DISTINCT candidate_id, model_id FROM candidates WHERE iteration = ?) c
             ON c.candidate_id = s.candidate_id AND c.model_id = ?
           WHERE s.iteration = ? AND s.scorer IN (SELECT unnest(?::VARCHAR[]))""",
        [it, model_in, it, named["math_shepherd"]]).fetchone()
    votes = con.execute(
        """SELECT count(*) FROM comparisons WHERE iteration = ? AND judge IN (SELECT unnest(?::VARCHAR[]))
           AND (a_id IN (SELECT candidate_id FROM candidates WHERE iteration = ? AND model_id = ?))""",
        [it, named["judge"], it, model_in]).fetchone()[0]
    rm_passes = con.execute(
        """SELECT count(*) FROM scores s
           JOIN (SELECT DISTINCT candidate_id, model_id FROM candidates WHERE iteration = ?) c
             ON c.candidate_id = s.candidate_id AND c.model_id = ?
           WHERE s.iteration = ? AND s.scorer IN (SELECT unnest(?::VARCHAR[]))""",
        [it, model_in, it, scored]).fetchone()[0]
    return {"kept": kept, "purity": pure / known if known else None, "ms_labelled": labelled,
            "rollouts": rollouts, "judge_votes": votes, "rm_passes": rm_passes}


def signal_quality(con: Any, round_summary: dict, reward_models: dict[str, str]) -> dict[str, dict]:
    """How well each of the run's ranking reward models (`reward_models`: name -> kind; Math-Shepherd
    labels, ORM, PRM, PRL) ranked one round's train candidates, measured against the verifiers:
    - within-prompt AUROC against the verifier's outcome (mean over prompts with both outcomes; the
      ORM's value, the step scorers' minimum step) — does it rank a prompt's samples;
    - step AUROC on answer-correct candidates against the step verifier's step labels (where it
      knows) — does it find the wrong step behind a right answer;
    - purity AUROC on answer-correct candidates: the same number against every step being right —
      does it tell the clean right answers from the others, which is what a selection needs.
    A reward model the round trained (rounds.json `trained`) is measured only on the candidates it
    was not trained on (its model card's `example_keys`; `trained_on` None: the card does not say,
    and the figures include its training data)."""
    it, model_in = round_summary["iteration"], round_summary["model_in"]
    names = [n for n, kind in reward_models.items() if kind in SIGNAL_KINDS]
    if not names:
        return {}
    rows = con.execute(
        """SELECT c.candidate_id, c.prompt_id, s.scorer, s.value, s.label, s.step_scores
           FROM (SELECT DISTINCT candidate_id, prompt_id FROM candidates WHERE iteration = ? AND model_id = ?) c
           JOIN scores s ON s.candidate_id = c.candidate_id AND s.iteration = ?
           WHERE s.scorer IN (SELECT unnest(?::VARCHAR[]))""",
        [it, model_in, it, ["verifier", "step_verifier", *names]]).fetchall()
    by_scorer: dict[str, dict[str, dict]] = {}
    prompt_of: dict[str, str] = {}
    for cid, pid, scorer, value, label, steps in rows:
        by_scorer.setdefault(scorer, {})[cid] = {"value": value, "label": label, "step_scores": steps}
        prompt_of[cid] = pid
    verifier, truth = by_scorer.get("verifier", {}), by_scorer.get("step_verifier", {})
    answer_correct = {cid for cid, row in verifier.items() if row["label"] == "correct"}
    out = {}
    for name in names:
        scores = by_scorer.get(name, {})
        trained = (round_summary.get("trained") or {}).get(name)
        keys = _training_keys(trained["path"]) if trained else []
        seen = set(keys or ())
        candidates = [{"candidate_id": cid, "prompt_id": prompt_of[cid]} for cid in sorted(scores) if cid not in seen]
        aggregate = None if reward_models[name] in ("orm", "confidence") else "min"
        within = within_prompt_auroc(candidates, verifier, scores, aggregate)
        steps = step_auroc(candidates, truth, scores, only=answer_correct)
        clean = purity_auroc(candidates, truth, scores, answer_correct, aggregate)
        out[name] = {"kind": reward_models[name], "measured": len(candidates),
                     "trained_on": None if keys is None else len(seen),
                     "within_prompt_auroc": within["auroc"], "prompts": within["prompts"],
                     "step_auroc_correct": steps["auroc"], "step_candidates": steps["candidates"],
                     "purity_auroc": clean["auroc"], "purity_candidates": clean["candidates"]}
    return out


def _training_keys(model_path: str) -> list[str] | None:
    """The candidate ids a reward model the loop trained was trained on (its card's example_keys;
    None when the card does not list them)."""
    card = Path(model_path) / "flywheel_card.json"
    return json.loads(card.read_text()).get("example_keys") if card.is_file() else None


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def _with_ci(values: dict[str, float], name: str) -> str:
    """`value [low–high]` in percent, or – when the metric is missing."""
    if values.get(name) is None:
        return "–"
    lo, hi = values.get(f"{name}_lo"), values.get(f"{name}_hi")
    return _pct(values[name]) + (f" [{_pct(lo)}–{_pct(hi)}]" if lo is not None and hi is not None else "")


def _number(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _cost(data: dict) -> str:
    """The extra cost of a round's selection signal, in words (– when it had none)."""
    parts = []
    if data.get("ms_labelled"):
        parts.append(f"{data['ms_labelled']} MS-labelled, {data['rollouts']} rollouts")
    if data.get("judge_votes"):
        parts.append(f"{data['judge_votes']} judge votes")
    if data.get("rm_passes"):
        parts.append(f"{data['rm_passes']} reward-model passes")
    return "; ".join(parts) or "–"


def round_table(run: RunData) -> str:
    """Markdown: what each round kept and what it cost (row k: round k, from M_k)."""
    head = "| round | from model | candidates | kept | yield | purity of kept | extra cost | " + \
        " | ".join(f"{s} s" for s in STAGES) + " |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in sorted(run.rounds, key=lambda r: r["iteration"]):
        it, data = r["iteration"], run.kept_data.get(r["iteration"], {})
        kept, cands, secs = r.get("kept"), r.get("candidates"), r.get("seconds", {})
        yld = f"{100 * kept / cands:.1f}%" if kept is not None and cands else "–"
        lines.append(f"| {it} | {r['model_in']} | {cands or '–'} | {kept if kept is not None else '–'} | {yld} | "
                     f"{_pct(data.get('purity'))} | {_cost(data)} | "
                     + " | ".join(f"{secs[s]:.0f}" if s in secs else "–" for s in STAGES) + " |")
    return "\n".join(lines)


def signal_table(run: RunData) -> str:
    """Markdown: how well each reward model ranked each round's candidates (empty when the run has none)."""
    lines = ["| round | reward model | kind | measured on | within-prompt AUROC (prompts) | "
             "step AUROC, answer-correct (candidates) | purity AUROC, answer-correct (candidates) |",
             "|---|---|---|---|---|---|---|"]
    for it in sorted(run.signals):
        for name, q in run.signals[it].items():
            where = f"{q['measured']}" + (" (including its training data)" if q["trained_on"] is None else
                                          f" (held out; trained on {q['trained_on']})" if q["trained_on"] else "")
            lines.append(f"| {it} | {name} | {q['kind']} | {where} | {_number(q['within_prompt_auroc'], 3)} "
                         f"({q['prompts']}) | {_number(q['step_auroc_correct'], 3)} ({q['step_candidates']}) | "
                         f"{_number(q['purity_auroc'], 3)} ({q['purity_candidates']}) |")
    return "\n".join(lines) if len(lines) > 2 else ""


def model_table(run: RunData) -> str:
    """Markdown: each model of the run on held-out problems, with 95% bootstrap intervals, and its
    drift from the base model (iteration k = after k rounds)."""
    n = run.n
    lines = [f"| iteration | model | pass@1 (avg@{n}) | pass@{n} | maj@{n} | greedy | all steps correct | "
             f"unparseable | mean tokens | distinct answers | log-ratio to base (nats/token) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for it in sorted(run.evals):
        e = run.evals[it]
        lines.append(f"| {it} | {run.models[it]} | {_with_ci(e, 'pass@1')} | {_with_ci(e, f'pass@{n}')} | "
                     f"{_with_ci(e, f'maj@{n}')} | {_with_ci(e, 'greedy@1')} | {_pct(e.get(f'all_steps@{n}'))} | "
                     f"{_pct(e.get(f'unparseable@{n}'))} | {_number(e.get(f'tokens@{n}'), 1)} | "
                     f"{_number(e.get(f'answers@{n}'))} | {_number(e.get(f'log_ratio@{n}'), 3)} |")
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


def _figure(size: tuple[float, float]) -> tuple[Any, Any]:
    """A matplotlib figure and axes, drawn without a display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=size)


def _save(fig: Any, ax: Any, path: Path, legend_size: int = 8) -> Path:
    """Grid, legend, save as PNG, free the figure; returns the path."""
    import matplotlib.pyplot as plt

    ax.grid(alpha=0.3)
    ax.legend(fontsize=legend_size)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_accuracy(runs: Sequence[RunData], path: Path) -> Path:
    """PNG: pass@1, pass@n and greedy accuracy against the round, one line style per run."""
    fig, ax = _figure((7, 4.5))
    for run in runs:
        its = sorted(run.evals)
        for name, style in (("pass@1", "-o"), (f"pass@{run.n}", "--s"), ("greedy@1", ":^")):
            ax.plot(its, [100 * run.evals[i].get(name, float("nan")) for i in its], style,
                    label=f"{run.run_id} {name}")
    ax.set_xlabel("round (0 = base model)")
    ax.set_ylabel("accuracy on held-out problems (%)")
    ax.set_xticks(sorted({i for run in runs for i in run.evals}))
    return _save(fig, ax, path, legend_size=7)


def plot_pass_at_k(run: RunData, path: Path) -> Path:
    """PNG: pass@k against k, one line per round."""
    fig, ax = _figure((6, 4))
    for it, curve in sorted(run.pass_curves.items()):
        ax.plot(range(1, len(curve) + 1), [100 * v for v in curve], "-o", label=f"round {it}")
    ax.set_xlabel("k")
    ax.set_ylabel("pass@k (%)")
    ax.set_title(run.run_id)
    return _save(fig, ax, path)


def plot_pass_at_k_arms(runs: Sequence[RunData], path: Path) -> Path:
    """PNG: pass@k against k of each run's final model, beside the first run's base model."""
    fig, ax = _figure((6, 4))
    first = runs[0]
    if first.pass_curves:
        base = first.pass_curves[min(first.pass_curves)]
        ax.plot(range(1, len(base) + 1), [100 * v for v in base], ":k", label="base model")
    for run in runs:
        if run.pass_curves:
            last = max(run.pass_curves)
            curve = run.pass_curves[last]
            ax.plot(range(1, len(curve) + 1), [100 * v for v in curve], "-o", label=f"{run.run_id} (round {last})")
    ax.set_xlabel("k")
    ax.set_ylabel("pass@k (%)")
    return _save(fig, ax, path)


def write_report(lake: Lake, run_ids: Sequence[str], reports_dir: Path) -> tuple[Path, str]:
    """Write reports_dir/<first run>/report.md with plots; returns its path and the markdown."""
    if not run_ids:
        raise ValueError("no run to report on")
    runs = [load_run(lake, r, reports_dir / r / "rounds.json") for r in run_ids]
    out = reports_dir / run_ids[0]
    out.mkdir(parents=True, exist_ok=True)
    accuracy_png = plot_accuracy(runs, out / "accuracy.png")
    arms_png = plot_pass_at_k_arms(runs, out / "pass_at_k_arms.png")
    parts = [f"# Flywheel report: {', '.join(run_ids)}", "",
             "Held-out problems; iteration k is the model after k rounds (0 = base). Percentages with 95% "
             "bootstrap intervals over problems. Purity: the share of a round's kept samples whose every "
             "step is right, where the demo's step verifier knows (it measures, it does not select, except "
             "in an all-steps-correct arm). Stage columns are wall seconds (evaluate = the round's model, "
             "evaluate_next = the model it trained; 0 = already in the lake).", ""]
    for run in runs:
        png = plot_pass_at_k(run, out / f"pass_at_k_{run.run_id}.png")
        parts += [f"## {run.run_id}", ""] + ([recipe_line(run.recipe), ""] if run.recipe else [])
        parts += ["Rounds:", "", round_table(run), ""]
        if signals := signal_table(run):
            parts += ["Reward models (how they ranked the round's train candidates):", "", signals, ""]
        parts += ["Models:", "", model_table(run), "", f"![pass@k vs k]({png.name})", ""]
    parts += ["## Base vs final", "", comparison_table(runs), "", f"![accuracy vs round]({accuracy_png.name})", "",
              f"![pass@k vs k, final models]({arms_png.name})", ""]
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
