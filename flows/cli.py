"""The `flywheel` command: one entry point, one subcommand per job."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from typing import Callable, Sequence

# Prefect's temporary server needs more than its default 20 s to start on a 2-core machine.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

import duckdb

from schemas import SchemaError
from tasks.generation.generate import GenerationError
from tasks.generation.ref_logprobs import ReferenceModelError
from tasks.lake.lock import LockBusy
from tasks.lake.sql import connect, refresh_views_file, write_views_file
from tasks.lake.store import Lake, LakeError, default_lake_root
from tasks.runtime.errors import StageFailed
from tasks.runtime.logs import library_log_path, route_library_logs
from tasks.runtime.progress import progress_enabled
from tasks.runtime.reaper import watch_this_process
from tasks.scoring.judge import JudgeError
from tasks.scoring.reward_model import RewardModelError

# Errors that are the user's input, reported as one line with a non-zero exit.
USER_ERRORS: tuple[type[BaseException], ...] = (LakeError, SchemaError, duckdb.Error, ValueError,
                                                FileNotFoundError, FileExistsError, GenerationError,
                                                ReferenceModelError, RewardModelError, StageFailed, LockBusy, JudgeError)


# subcommands that may start an engine or train (their libraries' INFO logs go to a file)
ENGINE_COMMANDS = {"generate", "score"}
# subcommands that run Prefect flows (their log lines go to stdout)
FLOW_COMMANDS = {"bootstrap", "reward-models", "best-of-n", "run", "iterate", "eval", "demo", "report"}


class CommandError(RuntimeError):
    """A subcommand failed for a reason that one line explains."""


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 500 else text[:497] + "..."


def cmd_sql(args: argparse.Namespace) -> int:
    """Run one SQL query and print it as a table, or open the DuckDB shell with the lake's views."""
    lake = Lake(args.lake)
    strays = lake.stray_files() if lake.root.is_dir() else []
    if strays:
        print(f"flywheel: note: ignoring {len(strays)} temporary file(s) left by an interrupted "
              f"write, e.g. {strays[0]}", file=sys.stderr)
    if args.query is None:
        views = write_views_file(lake)
        binary = shutil.which("duckdb") or os.path.join(os.path.dirname(sys.executable), "duckdb")
        if not os.path.exists(binary):
            raise CommandError("the duckdb CLI is not installed (pip install duckdb-cli)")
        print(f"flywheel: views from {views}", file=sys.stderr)
        os.execv(binary, [binary, "-init", str(views)])
    con = connect(lake)
    try:
        relation = con.sql(args.query)
    except duckdb.Error as error:
        raise CommandError(f"SQL error: {_one_line(error)}") from None
    if relation is not None:
        relation.show(max_rows=args.max_rows, max_width=shutil.get_terminal_size((200, 40)).columns)
    return 0


def cmd_views(args: argparse.Namespace) -> int:
    """Write the views file for `duckdb -init` and print its path."""
    print(write_views_file(Lake(args.lake)))
    return 0


def _load_loop_config(path: str, lake: str | None):
    from schemas.config import load_config_with_lake
    from schemas.loop import LoopConfig

    return load_config_with_lake(path, LoopConfig, lake)


def cmd_bootstrap(args: argparse.Namespace) -> int:
    """Make the demo prompts and the tiny base model (reused unless --force)."""
    from flows.bootstrap import bootstrap_flow
    from schemas.bootstrap import BootstrapConfig
    from schemas.config import load_config

    config = load_config(args.config, BootstrapConfig) if args.config else BootstrapConfig()
    if args.output:
        config = config.model_copy(update={"output": args.output})
    if args.steps:
        config = config.model_copy(update={"pretrain": config.pretrain.model_copy(update={"steps": args.steps})})
    card = bootstrap_flow(config, args.lake, args.force)
    print(json.dumps({"path": card["path"], "model_id": card["model_id"], "reused": card["reused"],
                      "held_out": card["held_out"]}, indent=2))
    return 0


def _given(args: argparse.Namespace, **names: str) -> dict:
    """{field: value} for the command-line options that were given (not None), renamed."""
    return {field: getattr(args, option) for field, option in names.items() if getattr(args, option) is not None}


def generation_stage_for(args: argparse.Namespace):
    """The loop's generation stage (from --config, else the loop's defaults) with the options given
    on the command line applied over it."""
    from schemas.generation import SamplingConfig
    from schemas.loop import GenerationStage

    config = _load_loop_config(args.config, args.lake_override) if args.config else None
    stage = config.generation if config else GenerationStage()
    sampling = SamplingConfig.model_validate({**stage.sampling.model_dump(), **_given(
        args, n="n", temperature="temperature", max_tokens="max_tokens", seed="seed")})
    engine = stage.engine.model_copy(update=_given(args, backend="backend", base_url="base_url"))
    fmt = stage.format.model_copy(update=_given(args, template="template"))
    stage = stage.model_copy(update={"sampling": sampling, "engine": engine, "format": fmt,
                                     **_given(args, chunk_size="chunk_size")})
    return GenerationStage.model_validate(stage.model_dump()), (config.lake if config else args.lake)


def cmd_generate(args: argparse.Namespace) -> int:
    """Sample candidates from a model for the prompts of one split, with the loop's settings."""
    from tasks.generation.generate import LazyBackend, generate_for_stage, model_id_for
    from tasks.prompts.sources import split_prompts

    stage, lake_root = generation_stage_for(args)
    lake = Lake(lake_root)
    lake.require_exists()
    try:
        prompts = split_prompts(lake, args.split, args.limit)
    except ValueError:
        raise CommandError(f"no prompts with split {args.split!r} in the lake at {lake.root}") from None
    backend = LazyBackend(args.model, stage.engine)
    try:
        report = generate_for_stage(lake, backend, prompts, model_id=model_id_for(args.model),
                                    iteration=args.iteration, stage=stage)
    finally:
        backend.close()
    print(json.dumps(report.__dict__, indent=2))
    refresh_views_file(lake.root)
    return 0


def _score_with_engine(args: argparse.Namespace, lake: Lake, candidates: list[dict]) -> dict:
    """math_shepherd and judge: scorers that sample from a model through a generation engine."""
    from schemas.generation import EngineConfig, SamplingConfig
    from tasks.generation.generate import LazyBackend, model_id_for

    engine = LazyBackend(args.model, EngineConfig(backend=args.backend))
    try:
        if args.scorer == "judge":
            from tasks.scoring.judge import GenerativeJudge
            from tasks.scoring.judge_stage import judge_candidates

            sampling = SamplingConfig(n=1, temperature=args.temperature, max_tokens=args.max_tokens, seed=args.seed)
            judge = GenerativeJudge(engine, sampling, max_attempts=args.attempts)
            report = judge_candidates(lake, judge, candidates, args.iteration, method=args.method,
                                      votes_k=args.votes, seed=args.seed, judge_version=model_id_for(args.model))
            return {**report.__dict__, "engine_calls": judge.calls}
        from tasks.scoring.math_shepherd import MathShepherdScorer
        from tasks.scoring.score import score_candidates

        sampling = SamplingConfig(n=args.rollouts, temperature=args.temperature, max_tokens=args.max_tokens,
                                  seed=args.seed)
        scorer = MathShepherdScorer(engine, sampling, model_id=model_id_for(args.model))
        try:
            return score_candidates(lake, scorer, candidates, args.iteration).__dict__
        finally:
            scorer.close()
    finally:
        engine.close()


def cmd_score(args: argparse.Namespace) -> int:
    """Run one scorer over an iteration's candidates (resuming)."""
    from schemas.loop import ScoringStage
    from tasks.scoring.score import load_candidates, make_scorer, score_candidates, verifier_for_stage

    config = _load_loop_config(args.config, args.lake_override) if args.config else None
    lake = Lake(config.lake if config else args.lake)
    lake.require_exists()
    needs_model = ("orm", "prm", "math_shepherd", "judge")
    if args.scorer in needs_model and not args.model:
        raise CommandError(f"scorer {args.scorer!r} needs --model (the "
                           f"{'reward model' if args.scorer in ('orm', 'prm') else 'generating model'} folder)")
    scoring = (config.scoring if config else ScoringStage()).model_copy(update=_given(args, verifier_mode="mode"))
    options: dict = {}
    if args.scorer == "prl":
        if not args.reference:
            raise CommandError("scorer 'prl' needs --reference (the base model folder)")
        options = {"lake": lake, "iteration": args.iteration, "reference_path": args.reference, "eta": args.eta}
    if args.scorer in ("orm", "prm"):
        from tasks.scoring.reward_model import ORM_KIND, PRM_KIND, check_reward_model_folder

        check_reward_model_folder(args.model, ORM_KIND if args.scorer == "orm" else PRM_KIND)
        options = {"model_path": args.model}
    candidates = load_candidates(lake, args.iteration, prompt_split=args.split)
    if not candidates:
        raise CommandError(f"no candidates in iteration {args.iteration} to score")
    if args.scorer in ("math_shepherd", "judge"):
        print(json.dumps(_score_with_engine(args, lake, candidates), indent=2))
        return 0
    scorer = verifier_for_stage(scoring) if args.scorer == "verifier" else make_scorer(args.scorer, **options)
    try:
        report = score_candidates(lake, scorer, candidates, args.iteration, chunk_size=scoring.chunk_size)
    finally:
        scorer.close()
    print(json.dumps(report.__dict__, indent=2))
    refresh_views_file(lake.root)
    return 0


def cmd_reward_models(args: argparse.Namespace) -> int:
    """Train the ORM and PRM from a policy's samples and write the reward-model report."""
    from schemas.config import load_config_with_lake
    from schemas.reward_models import RewardModelsConfig

    config = load_config_with_lake(args.config, RewardModelsConfig, args.lake_override)  # before the slow imports
    from flows.reward_models import reward_models_flow

    result = reward_models_flow(config)
    figures = result["figures"]
    print(json.dumps({"orm_auroc": figures["orm_auroc"]["auroc"],
                      "best_of_n": {k: round(v["value"], 4) for k, v in figures["best_of_n"].items()},
                      "step_auroc": {k: v["auroc"] for k, v in figures["step_auroc"].items()}}, indent=2))
    return 0


def cmd_best_of_n(args: argparse.Namespace) -> int:
    """Sample N answers per prompt, pick one by every reference-free method, print accuracy beside cost."""
    from schemas.best_of_n import BestOfNConfig
    from schemas.config import load_config_with_lake

    config = load_config_with_lake(args.config, BestOfNConfig, args.lake_override)  # before the slow imports
    from flows.best_of_n import best_of_n_flow

    result = best_of_n_flow(config)
    print(result["table"])
    for method, why in result["skipped"].items():
        print(f"skipped {method}: {why}")
    print(f"picks: {result['picks']} rows; report: {result['report']}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """The loop: bootstrap if configured, then R rounds."""
    config = _load_loop_config(args.config, args.lake_override)  # a bad config fails before the slow imports
    from flows.loop import self_improve_flow

    summary = self_improve_flow(config)
    print(json.dumps(summary, indent=2))
    return 0


def cmd_iterate(args: argparse.Namespace) -> int:
    """One round of the loop by hand."""
    config = _load_loop_config(args.config, args.lake_override)
    from flows.loop import iteration_flow

    print(json.dumps(iteration_flow(config, args.iteration), indent=2))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Evaluate one model folder on the eval split."""
    config = _load_loop_config(args.config, args.lake_override) if args.config else None
    from flows.evaluation import evaluation_flow

    print(json.dumps(evaluation_flow(args.model, config, args.lake, args.run_id, args.iteration), indent=2))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Write the run report (markdown + plots) and publish it as a Prefect artifact."""
    from flows.report import report_flow

    Lake(args.lake).require_exists()
    print(report_flow(args.lake, args.run or None))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Bootstrap, the demo loops and their report, in one flow run."""
    from flows.demo import demo_flow

    result = demo_flow(args.config or None, args.lake_override, args.all_arms)
    for run in result["runs"]:
        rounds = run["rounds"]
        print(f"{run['run_id']}: pass@1 {rounds[0]['pass@1_in']:.3f} -> {rounds[-1]['pass@1_out']:.3f} "
              f"after {len(rounds)} round(s)")
    print(f"demo finished in {result['seconds']:.0f} s; report: {result['report']}")
    return 0


def cmd_prompts(args: argparse.Namespace) -> int:
    """Load prompt sources (YAML PromptSourceConfig files) into the prompts table."""
    from schemas.prompt_source import PromptSourceConfig
    from tasks.prompts.sources import load_prompt_sources

    lake = Lake(args.lake)
    configs = [PromptSourceConfig.from_yaml(path) for path in args.source]
    print(json.dumps(load_prompt_sources(lake, configs), indent=2))
    refresh_views_file(args.lake)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Write what a run kept in one iteration (SFT) or preference pairs (DPO) as a dataset."""
    from tasks.selection.export import export_dpo_pairs, export_sft, run_policy_hash

    lake = Lake(args.lake)
    lake.require_exists()
    if args.format == "sft":
        path = export_sft(lake, args.iteration, run_policy_hash(lake, args.run, args.iteration), args.out,
                          args.template)
    else:
        run_policy_hash(lake, args.run, args.iteration)  # the run must have finished that round
        path = export_dpo_pairs(lake, args.iteration, {"scorer": args.score}, args.out, args.template)
    print(f"{path} (Hugging Face dataset; load_from_disk) and {path}.parquet")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    """Average a model's weights with its base model's into a new model folder (WiSE-FT)."""
    from tasks.training.merge import merge_model_folders

    card = merge_model_folders(args.model, args.base, args.base_share, args.output)
    print(json.dumps({"path": args.output, **card}, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="flywheel", description=__doc__)
    parser.add_argument("--lake", default=default_lake_root(),
                        help="lake root (default: $FLYWHEEL_LAKE or data/lake)")
    parser.add_argument("--verbose", action="store_true",
                        help="show every library's logs in the terminal (default: INFO lines go to data/logs/)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sql = sub.add_parser("sql", help="query the lake with DuckDB SQL (no query: interactive shell)")
    sql.add_argument("query", nargs="?", help="one SQL statement; omit for the DuckDB shell")
    sql.add_argument("--max-rows", type=int, default=40, help="rows to print (default 40)")
    sql.set_defaults(func=cmd_sql)

    views = sub.add_parser("views", help="write <lake>/views.sql for `duckdb -init` and print its path")
    views.set_defaults(func=cmd_views)

    boot = sub.add_parser("bootstrap", help="make the demo prompts and the tiny base model")
    boot.add_argument("--config", help="YAML BootstrapConfig (default: built-in demo settings)")
    boot.add_argument("--output", help="model folder (default data/models/base)")
    boot.add_argument("--steps", type=int, help="pretraining steps (overrides the config)")
    boot.add_argument("--force", action="store_true", help="retrain even if a matching model exists")
    boot.set_defaults(func=cmd_bootstrap)

    prompts = sub.add_parser("prompts", help="load prompt sources (YAML files) into the prompts table")
    prompts.add_argument("source", nargs="+", help="prompt source config file(s)")
    prompts.set_defaults(func=cmd_prompts)

    gen = sub.add_parser("generate", help="sample n candidates per prompt of a split")
    gen.add_argument("--model", required=True, help="local model folder")
    gen.add_argument("--split", default="train", help="prompt split (default train)")
    gen.add_argument("--config", help="YAML LoopConfig whose generation settings to use (default: the loop's "
                                      "defaults); the options below override it")
    gen.add_argument("--n", type=int, help="samples per prompt (loop default 8)")
    gen.add_argument("--max-tokens", type=int, help="loop default 64")
    gen.add_argument("--temperature", type=float, help="loop default 0.8")
    gen.add_argument("--seed", type=int, help="loop default 0")
    gen.add_argument("--iteration", type=int, default=0)
    gen.add_argument("--limit", type=int, help="only the first N prompts (by prompt_id)")
    gen.add_argument("--chunk-size", type=int, help="prompts per shard (loop default 1024)")
    gen.add_argument("--backend", choices=["vllm", "hf", "openai"], help="loop default vllm")
    gen.add_argument("--base-url", help="openai backend: server URL, e.g. http://127.0.0.1:8000/v1")
    gen.add_argument("--template", help="prompt template with {problem} (loop default 'Q: {problem}\\n')")
    gen.set_defaults(func=cmd_generate)

    score = sub.add_parser("score", help="run one scorer over an iteration's candidates")
    score.add_argument("--scorer", required=True, help="scorer name (verifier, step_verifier, ...)")
    score.add_argument("--iteration", type=int, default=0)
    score.add_argument("--split", help="only candidates of prompts in this split")
    score.add_argument("--config", help="YAML LoopConfig whose scoring settings to use (default: the loop's)")
    score.add_argument("--mode", choices=["exact", "math"], help="verifier comparison (loop default exact)")
    score.add_argument("--reference", help="prl: the reference (base) model folder")
    score.add_argument("--eta", type=float, default=1.0, help="prl: eta (beta = 1/eta)")
    score.add_argument("--model", help="orm/prm: the reward model folder; math_shepherd/judge: the model that samples")
    score.add_argument("--backend", choices=["vllm", "hf"], default="vllm", help="math_shepherd/judge engine")
    score.add_argument("--rollouts", type=int, default=4, help="math_shepherd: completions per step prefix")
    score.add_argument("--temperature", type=float, default=0.8, help="math_shepherd/judge sampling temperature")
    score.add_argument("--max-tokens", type=int, default=64, help="math_shepherd/judge: tokens per completion")
    score.add_argument("--seed", type=int, default=0, help="math_shepherd/judge sampling seed")
    score.add_argument("--method", choices=["knockout", "elo"], default="knockout", help="judge: tournament")
    score.add_argument("--votes", type=int, default=1, help="judge: votes per pair (voting@k)")
    score.add_argument("--attempts", type=int, default=3, help="judge: tries per judgment before unparseable")
    score.set_defaults(func=cmd_score)

    rms = sub.add_parser("reward-models", help="train the ORM and PRM and report how well they rank samples")
    rms.add_argument("--config", help="YAML RewardModelsConfig (default: built-in defaults)")
    rms.set_defaults(func=cmd_reward_models)

    bon = sub.add_parser("best-of-n", help="sample N per prompt, pick one by each reward-guided method, "
                                           "report accuracy and cost")
    bon.add_argument("--config", help="YAML BestOfNConfig (default: built-in defaults)")
    bon.set_defaults(func=cmd_best_of_n)

    run = sub.add_parser("run", help="run the self-improvement loop from a YAML config")
    run.add_argument("--config", required=True)
    run.set_defaults(func=cmd_run)

    iterate = sub.add_parser("iterate", help="run one round of the loop by hand")
    iterate.add_argument("--config", required=True)
    iterate.add_argument("--iteration", type=int, required=True)
    iterate.set_defaults(func=cmd_iterate)

    ev = sub.add_parser("eval", help="evaluate a model folder on the eval split")
    ev.add_argument("--model", required=True)
    ev.add_argument("--config", help="YAML LoopConfig for evaluation settings (default: demo)")
    ev.add_argument("--run-id", default="manual-eval")
    ev.add_argument("--iteration", type=int, default=0)
    ev.set_defaults(func=cmd_eval)

    merge = sub.add_parser("merge", help="average a model's weights with its base model's into a new folder "
                                         "(WiSE-FT: keeps pass@k that finetuning narrowed)")
    merge.add_argument("--model", required=True, help="the finetuned model folder")
    merge.add_argument("--base", required=True, help="the model it was finetuned from, e.g. data/models/base")
    merge.add_argument("--base-share", type=float, default=0.5,
                       help="the base model's share of every weight, between 0 and 1 (default 0.5)")
    merge.add_argument("--output", required=True, help="the new model folder (must not exist)")
    merge.set_defaults(func=cmd_merge)

    demo = sub.add_parser("demo", help="bootstrap, the demo loops and the report in one flow run")
    demo.add_argument("--config", action="append", help="loop config (repeatable; default: the two demo arms)")
    demo.add_argument("--all-arms", action="store_true",
                      help="add the oracle (step verifier), Math-Shepherd, pairwise-judge, PRL-weighted and "
                           "weight-merging arms")
    demo.set_defaults(func=cmd_demo)

    export = sub.add_parser("export", help="write a run's kept samples (sft) or preference pairs (dpo) "
                                           "as a Hugging Face dataset and a Parquet file")
    export.add_argument("--run", required=True, help="run id (its round's selection is exported)")
    export.add_argument("--iteration", type=int, required=True)
    export.add_argument("--format", choices=["sft", "dpo"], required=True)
    export.add_argument("--out", required=True, help="folder: <out>/<format> and <out>/<format>.parquet")
    export.add_argument("--score", default="verifier",
                        help="dpo: the score that picks chosen (highest) and rejected (lowest), e.g. orm")
    export.add_argument("--template", default="Q: {problem}\n", help="prompt template with {problem}")
    export.set_defaults(func=cmd_export)

    report = sub.add_parser("report", help="write data/reports/<run>/report.md with plots")
    report.add_argument("--run", action="append", help="run id (repeat to compare runs; default: all)")
    report.set_defaults(func=cmd_report)
    return parser


def _flow_logs_to_stdout() -> None:
    """Prefect's console log lines go to stdout, so stderr holds only progress bars and the one
    error line of a failed command (the full traceback stays in the flow run's log)."""
    import logging

    from prefect.logging.configuration import PROCESS_LOGGING_CONFIG, setup_logging

    if not PROCESS_LOGGING_CONFIG:
        setup_logging()

    for logger in [logging.getLogger(), *(logging.getLogger(n) for n in logging.root.manager.loggerDict)]:
        for handler in getattr(logger, "handlers", []):
            if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stderr:
                handler.setStream(sys.stdout)
                if hasattr(handler, "console"):  # Prefect's handler prints through a rich Console
                    handler.console.file = sys.stdout


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `flywheel` console command; returns the exit code."""
    if argv is None:  # a process of its own: what it starts ends with it, even on kill -9
        watch_this_process()
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    # --lake given explicitly overrides the lake of a loop config
    args.lake_override = args.lake if "--lake" in argv else None
    func: Callable[[argparse.Namespace], int] = args.func
    if not progress_enabled():  # Hugging Face's bars follow the project's rule: a terminal only
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    try:
        if args.command in FLOW_COMMANDS | ENGINE_COMMANDS:
            log_file = route_library_logs(library_log_path(args.lake, args.command), show_all=args.verbose)
            if log_file is not None and sys.stderr.isatty():  # scripts read stderr as one error line
                print(f"flywheel: engine and library logs: {log_file}", file=sys.stderr)
        if args.command in FLOW_COMMANDS:
            _flow_logs_to_stdout()
        return func(args)
    except (CommandError, *USER_ERRORS) as error:
        if os.environ.get("FLYWHEEL_DEBUG"):
            raise
        print(f"flywheel: error: {_one_line(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("flywheel: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
