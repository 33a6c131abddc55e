"""`seal eval` (the knowledge-incorporation harness) and `seal policy train` (ReST-EM).

Generation runs through `HFGenerator` on the trainer's warm weights, not a vLLM engine: on this
2-core CPU vLLM's LoRA path decoded 4 probes x 48 tokens in 35-66 s against a few seconds with peft
(workers/main.py), every condition but two decodes with a fresh adapter, and a vLLM engine would
also cost ~4.5 GB and 30-60 s to start and take a core from training. Heavy imports stay inside
the commands so `seal --help` is instant.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from workers.seal.config import RewardBaseline

eval_app = typer.Typer(help="Measure what learning buys: the SEAL knowledge-incorporation table.",
                       no_args_is_help=True)
policy_app = typer.Typer(help="Train the self-edit policy (ReST-EM).", no_args_is_help=True)
console = Console()
logger = logging.getLogger(__name__)

DEFAULT_SQUAD = "../shared/data/squad_val.json"
DEFAULT_FICTIONAL = "../shared/data/fictional_dev.jsonl"

Threads = Annotated[int, typer.Option(help="torch threads. 1 when the 2 cores are shared with a vLLM engine "
                                           "or another job (2 threads collapse when a core is taken).")]
ModelOpt = Annotated[str | None, typer.Option("--model", help="Base model directory (default: SEAL_MODEL's path).")]
Epochs = Annotated[int, typer.Option(help="Inner-loop LoRA epochs (paper: 10).")]
Rank = Annotated[int, typer.Option(help="Inner-loop LoRA rank (paper: 32; alpha = 2 x rank).")]
Lr = Annotated[float, typer.Option(help="Inner-loop learning rate (paper: 1e-3).")]
MaxTokens = Annotated[int, typer.Option(help="Answer budget per question: 48, what a user and the gate get (EvalConfig.max_tokens).")]
Conditions = Annotated[str, typer.Option(help="Comma-separated conditions.")]
Format = Annotated[str, typer.Option("--format", help="Self-edit prompt format.")]
Formats = Annotated[str | None, typer.Option(help="Compare several self-edit formats, comma-separated.")]
Policy = Annotated[Path | None, typer.Option(help="Policy adapter dir for self-edit+policy.")]
RewardBaselineOpt = Annotated[RewardBaseline, typer.Option(
    help="What a self-edit's reward is measured against: a LoRA on the passage alone, or the bare model.")]
SelfEditMaxTokens = Annotated[int, typer.Option(help="Self-edit length budget.")]
Seed = Annotated[int, typer.Option(help="Self-edit sampling and LoRA seed.")]
JudgeUrl = Annotated[str | None, typer.Option(help="OpenAI-compatible base URL for a yes/no judge.")]
JudgeModel = Annotated[str, typer.Option(help="Judge model name.")]
JudgeKey = Annotated[str | None, typer.Option(envvar="SEAL_JUDGE_API_KEY", help="Judge API key.")]
WriteRecipe = Annotated[bool, typer.Option(
    "--write-recipe/--no-write-recipe",
    help="Write the condition with the best closed-book accuracy (ties: the faster) as the model's recipe, "
         "<SEAL_RECIPE_DIR>/<model>.json, which workers use from their next job.")]
RecipeSection = Annotated[str, typer.Option(
    help="Where --write-recipe writes the winner: 'stream' (the recipe single-stream adapters train with) or "
         "'shard' (its shard section, what knowledge-base shards train with; the stream recipe stays).")]
ALL_CONDITIONS = "base,passage,self-edit,self-edit+policy,context"


def _check_shard(spec: str | None) -> str | None:
    from workers.seal.harness import shard_passages

    try:
        if spec is not None:
            shard_passages([], spec)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    return spec


Shard = Annotated[str | None, typer.Option(
    callback=_check_shard, help="Run only shard I/N of the passages (0-based), e.g. two processes with 0/2 and 1/2 "
                                "on one --out; then rerun without --shard to write the tables.")]


def _load_trainer(model: str | None, threads: int):  # noqa: ANN202
    from app.config import Settings
    from workers.seal.hfgen import HFGenerator
    from workers.seal.train import LoraTrainer

    # Device and dtype as a worker resolves them (bf16 on a GPU, fp32 on CPU); threads matter on CPU only.
    settings = Settings()
    path = model or settings.model_path
    trainer = LoraTrainer(str(Path(path).resolve()), device=settings.resolved_device().value,
                          dtype=settings.resolved_dtype(), num_threads=threads,
                          bf16_autocast=settings.resolved_train_bf16_autocast())
    return trainer, HFGenerator(trainer)


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _run_eval(*, dataset: str, passages, out: Path, conditions: str, fmt: str, formats: str | None,  # noqa: ANN001
              policy: Path | None, epochs: int, rank: int, lr: float, max_tokens: int, selfedit_max_tokens: int,
              seed: int, threads: int, model: str | None, judge_url: str | None, judge_model: str,
              judge_key: str | None, shard: str | None = None, write_recipe: bool = False,
              recipe_section: str = "stream") -> None:
    from app.config import Settings
    from workers.seal.config import EvalConfig, TrainConfig
    from workers.seal.harness import (
        HarnessConfig,
        OpenAIJudge,
        run_harness,
        shard_passages,
        summarize,
        write_outputs,
    )
    from workers.seal.harness.report import render_table
    from workers.seal.recipes import RECIPE_SECTIONS

    if recipe_section not in RECIPE_SECTIONS:
        raise typer.BadParameter(f"must be one of {', '.join(RECIPE_SECTIONS)}", param_hint="--recipe-section")
    conds = _split(conditions)
    if "self-edit+policy" in conds and policy is None:
        conds.remove("self-edit+policy")
        console.print("[yellow]no --policy: skipping self-edit+policy[/yellow]")
    conditions = ",".join(conds)
    from workers.seal.restem import read_policy_format

    policy_dir = str(policy.resolve()) if policy else None
    cfg = HarnessConfig(
        conditions=_split(conditions), formats=_split(formats) if formats else [fmt], policy_dir=policy_dir,
        policy_format=(read_policy_format(policy_dir) if policy_dir else None) or fmt,
        train=TrainConfig(rank=rank, alpha=2 * rank, epochs=epochs, lr=lr, seed=seed),
        eval=EvalConfig(max_tokens=max_tokens), selfedit_max_tokens=selfedit_max_tokens, seed=seed,
        distill=_distill_config(model or Settings().model_path, recipe_section),
    )
    judge = OpenAIJudge(judge_url, model=judge_model, api_key=judge_key) if judge_url else None
    t0 = time.perf_counter()
    trainer, generator = _load_trainer(model, threads)
    keys = cfg.condition_keys()
    if shard is not None:
        passages = shard_passages(passages, shard)
        dataset = f"{dataset} (shard {shard})"
    console.print(f"{dataset}: {len(passages)} passages, {sum(p.num_questions for p in passages)} questions; "
                  f"conditions {', '.join(keys)} -> {out}")
    with Progress(TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as bar:
        tasks = {k: bar.add_task(k, total=len(passages)) for k in keys}
        records = run_harness(generator=generator, trainer=trainer, passages=passages, cfg=cfg, out_dir=str(out),
                              judge=judge, progress=lambda k, done, total: bar.update(tasks[k], completed=done))
    if shard is not None:  # a shard holds part of the table: the unsharded rerun reads the cache and writes it
        console.print(f"shard {shard}: {len(passages)} passages cached in {out} in {time.perf_counter() - t0:.0f} s; "
                      "rerun without --shard to write the tables")
        return
    rows = summarize(records, keys)
    meta = {"dataset": dataset, "passages": [p.id for p in passages], "config": cfg.fingerprint(),
            "conditions": keys, "model": trainer.model_path, "threads": threads,
            "wall_seconds_this_run": time.perf_counter() - t0}
    title = f"{dataset}, {len(passages)} passages, {Path(trainer.model_path).name}"
    paths = write_outputs(str(out), rows=rows, records=records, meta=meta, title=title)
    console.print(render_table(rows))
    console.print(f"wrote {paths['json']}, {paths['markdown']}, {paths['chart']} "
                  f"in {time.perf_counter() - t0:.0f} s")
    if write_recipe:
        _write_recipe(rows, cfg, trainer.model_path, provenance={
            "dataset": dataset, "answer_tokens": cfg.eval.max_tokens, "seed": cfg.seed, "threads": threads,
            "results": str(Path(paths["json"]).resolve())}, section=recipe_section)


def _current_recipe(model_path: str):  # noqa: ANN202
    """The model's recipe as workers read it now; the built-in defaults when its file is broken (a
    broken file is replaced when a recipe is written, but what it held cannot be carried over)."""
    from app.config import Settings
    from workers.seal import recipes

    try:
        return recipes.load_recipe(model_path, Settings().resolved_recipe_dir())
    except ValueError as exc:
        console.print(f"[yellow]{escape(str(exc))}; the recipe falls back to the built-in defaults[/yellow]")
        return recipes.Recipe(model=recipes.model_id(model_path))


def _distill_config(model_path: str, section: str):  # noqa: ANN202
    """Distillation as the recipe section it may be written into sets it (its questions, prefixes,
    clauses), so a recipe never records numbers its own options did not produce."""
    from workers.seal.distill import DistillConfig

    current = _current_recipe(model_path)
    return DistillConfig.of((current.for_shards() if section == "shard" else current).selfedit_config())


def _write_recipe(rows: list[dict], cfg, model_path: str, *, provenance: dict,  # noqa: ANN001
                  section: str = "stream") -> None:
    """Write the winning condition as the model's recipe, where workers look for it (Settings.recipe())."""
    from app.config import Settings
    from workers.seal import recipes

    recipe_dir, name = Settings().resolved_recipe_dir(), recipes.model_id(model_path)
    current = _current_recipe(model_path)
    recipe = recipes.recipe_from_summary(rows, train=cfg.train, model=name, current=current, provenance=provenance,
                                         section=section)
    if recipe is None:
        console.print("[yellow]no recipe written: none of these conditions trains as a learn job does "
                      "(passage, self-edit:<format>)[/yellow]")
        return
    path = recipes.recipe_path(recipe_dir, name)
    recipes.save_recipe(recipe, path)
    written = recipe.for_shards() if section == "shard" else recipe
    m = written.measured
    console.print(f"recipe{' (shard section)' if section == 'shard' else ''} for {name}: {m['condition']} "
                  f"({100 * m['accuracy']:.1f}% closed-book, {m['seconds_per_passage']:.0f} s per passage; "
                  f"format={written.format}, epochs={written.epochs}, lr={written.lr:g}, rank={written.rank}) -> {path}\n"
                  "workers pick it up on their next job, no code change or restart needed "
                  "(--no-write-recipe to measure without changing it)")


@eval_app.command("squad")
def eval_squad(
    out: Annotated[Path, typer.Option(help="Output and cache directory (rerun to resume).")] = Path("results/squad"),
    data: Annotated[Path, typer.Option(help="SQuAD in SEAL's format.")] = Path(DEFAULT_SQUAD),
    passages: Annotated[int, typer.Option(help="Prefix of SEAL's 200-passage split (974 questions).")] = 200,
    conditions: Conditions = ALL_CONDITIONS, format: Format = "rewrite", formats: Formats = None,
    policy: Policy = None, epochs: Epochs = 10, rank: Rank = 32, lr: Lr = 1e-3, max_tokens: MaxTokens = 48,
    selfedit_max_tokens: SelfEditMaxTokens = 256, seed: Seed = 0, threads: Threads = 1, model: ModelOpt = None,
    judge_url: JudgeUrl = None, judge_model: JudgeModel = "gpt-4.1", judge_key: JudgeKey = None,
    shard: Shard = None, write_recipe: WriteRecipe = True, recipe_section: RecipeSection = "stream",
) -> None:
    """Run the conditions on SQuAD passages from SEAL's evaluation split."""
    from workers.seal.datasets import load_squad

    _run_eval(dataset=f"squad --passages {passages}", passages=load_squad(data, split="eval", limit=passages),
              out=out, conditions=conditions, fmt=format, formats=formats, policy=policy, epochs=epochs,
              rank=rank, lr=lr, max_tokens=max_tokens, selfedit_max_tokens=selfedit_max_tokens, seed=seed,
              threads=threads, model=model, judge_url=judge_url, judge_model=judge_model, judge_key=judge_key,
              shard=shard, write_recipe=write_recipe, recipe_section=recipe_section)


@eval_app.command("fictional")
def eval_fictional(
    data: Annotated[Path, typer.Argument(help="JSONL in fictional_dev.jsonl's schema.")] = Path(DEFAULT_FICTIONAL),
    out: Annotated[Path, typer.Option(help="Output and cache directory (rerun to resume).")] = Path("results/fictional"),
    passages: Annotated[int | None, typer.Option(help="Only the first N passages.")] = None,
    conditions: Conditions = ALL_CONDITIONS, format: Format = "rewrite", formats: Formats = None,
    policy: Policy = None, epochs: Epochs = 10, rank: Rank = 32, lr: Lr = 1e-3, max_tokens: MaxTokens = 48,
    selfedit_max_tokens: SelfEditMaxTokens = 256, seed: Seed = 0, threads: Threads = 1, model: ModelOpt = None,
    judge_url: JudgeUrl = None, judge_model: JudgeModel = "gpt-4.1", judge_key: JudgeKey = None,
    shard: Shard = None, write_recipe: WriteRecipe = True, recipe_section: RecipeSection = "stream",
) -> None:
    """Run the conditions on a JSONL set of (fictional) passages."""
    from workers.seal.datasets import load_jsonl

    _run_eval(dataset=f"fictional {data.name}", passages=load_jsonl(data, limit=passages), out=out,
              conditions=conditions, fmt=format, formats=formats, policy=policy, epochs=epochs, rank=rank,
              lr=lr, max_tokens=max_tokens, selfedit_max_tokens=selfedit_max_tokens, seed=seed, threads=threads,
              model=model, judge_url=judge_url, judge_model=judge_model, judge_key=judge_key, shard=shard,
              write_recipe=write_recipe, recipe_section=recipe_section)


@eval_app.command("regrade")
def eval_regrade(
    results: Annotated[Path, typer.Argument(help="A finished run's output directory (its results.json).")],
    out: Annotated[Path | None, typer.Option(help="Where the regraded run goes (default: <results>-<N>tok).")] = None,
    max_tokens: MaxTokens = 48, model: ModelOpt = None,
) -> None:
    """Grade a finished run again at a shorter answer budget, without training or decoding.

    Answers are greedy, so an N-token budget answers with the first N tokens of a longer budget's
    answer: runs made at 128 tokens say what a 48-token user gets once their answers are cut there.
    """
    from transformers import AutoTokenizer

    from app.config import Settings
    from workers.seal.harness import cut_at_tokens, regrade, summarize, write_outputs
    from workers.seal.harness.report import render_table

    try:
        run = json.loads((results / "results.json").read_text())
        meta, budget = run["meta"], run["meta"]["config"]["eval"]["max_tokens"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise typer.BadParameter(f"no finished run with its answer budget in {results}: {exc}",
                                 param_hint="RESULTS") from exc
    if not 4 <= max_tokens < budget:
        raise typer.BadParameter(f"must be at least 4 and under the run's own budget ({budget} tokens): "
                                 "a cut answer can only be shorter", param_hint="--max-tokens")
    out = out or results.with_name(f"{results.name}-{max_tokens}tok")
    out.mkdir(parents=True, exist_ok=True)
    # The run's model wrote the answers; its tokenizer counts their tokens (the bundled model's, by default).
    tokenizer = AutoTokenizer.from_pretrained(str(Path(model or Settings().model_path).resolve()))
    records = regrade(run["records"], cut_at_tokens(tokenizer, max_tokens))
    rows = summarize(records, meta.get("conditions") or [r["condition"] for r in run["summary"]])
    config = {**meta["config"], "eval": {**meta["config"]["eval"], "max_tokens": max_tokens}}
    meta = {**meta, "config": config, "regraded_from": {"results": str(results), "answer_tokens": budget}}
    paths = write_outputs(str(out), rows=rows, records=records, meta=meta,
                          title=f"{meta['dataset']}, {max_tokens}-token answers (regraded from {budget})")
    console.print(render_table(rows))
    console.print(f"wrote {paths['json']}, {paths['markdown']}, {paths['chart']}")


@policy_app.command("train")
def policy_train(
    out: Annotated[Path, typer.Option(help="Checkpoint/output dir; the policy lands in OUT/policy.")] =
        Path("results/policy"),
    data: Annotated[Path, typer.Option(help="SQuAD in SEAL's format (passages outside the eval split).")] =
        Path(DEFAULT_SQUAD),
    passages: Annotated[int, typer.Option("--passages", "-n", help="Training passages n.")] = 30,
    rounds: Annotated[int, typer.Option(help="ReST-EM rounds R.")] = 2,
    k: Annotated[int, typer.Option("-k", help="Self-edits sampled per passage.")] = 3,
    seeds: Annotated[int, typer.Option("--seeds", "-s", help="Inner-loop repeats per self-edit.")] = 1,
    format: Annotated[str, typer.Option("--format", help="Prompt format the policy learns.")] = "rewrite",
    reward_baseline: RewardBaselineOpt = "passage",
    epochs: Epochs = 10, rank: Rank = 32, lr: Lr = 1e-3, max_tokens: MaxTokens = 48,
    selfedit_max_tokens: SelfEditMaxTokens = 256, threads: Threads = 1, model: ModelOpt = None,
) -> None:
    """Train a self-edit policy adapter with ReST-EM on SQuAD passages outside the evaluation split."""
    from workers.seal.config import EvalConfig, TrainConfig
    from workers.seal.datasets import load_squad
    from workers.seal.restem import PolicyTrainConfig, train_policy

    cfg = PolicyTrainConfig(rounds=rounds, k=k, seeds=seeds, format=format, max_tokens=selfedit_max_tokens,
                            reward_baseline=reward_baseline)
    t0 = time.perf_counter()
    trainer, generator = _load_trainer(model, threads)
    train_passages = load_squad(data, split="train", limit=passages)
    with Progress(TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as bar:
        tasks: dict[str, int] = {}

        def on_progress(what: str, done: int, total: int) -> None:
            if what not in tasks:
                tasks[what] = bar.add_task(what, total=total)
            bar.update(tasks[what], completed=done)

        report = train_policy(generator=generator, trainer=trainer, passages=train_passages, out_dir=str(out),
                              cfg=cfg, train_cfg=TrainConfig(rank=rank, alpha=2 * rank, epochs=epochs, lr=lr),
                              eval_cfg=EvalConfig(max_tokens=max_tokens), progress=on_progress)
    for r in report["rounds"]:
        console.print(f"round {r['round']}: baseline {100 * r['baseline_accuracy']:.1f}%, mean gain of sampled "
                      f"edits {100 * r['mean_gain_all_edits']:+.1f} pts, kept {r['kept']}/{r['passages']}")
    console.print(json.dumps({"policy_dir": report["policy_dir"],
                              "wall_seconds": round(time.perf_counter() - t0)}))


@policy_app.command("enqueue")
def policy_enqueue(
    name: Annotated[str, typer.Argument(help="Policy adapter name; learn jobs use it via SEAL_POLICY=NAME.")],
    passages: Annotated[int, typer.Option("--passages", "-n", help="Training passages n.")] = 30,
    rounds: Annotated[int, typer.Option(help="ReST-EM rounds R.")] = 2,
    k: Annotated[int, typer.Option("-k", help="Self-edits sampled per passage.")] = 3,
    seeds: Annotated[int, typer.Option("--seeds", "-s", help="Inner-loop repeats per self-edit.")] = 1,
    format: Annotated[str, typer.Option("--format", help="Prompt format the policy learns.")] = "rewrite",
    reward_baseline: RewardBaselineOpt = "passage",
    epochs: Epochs = 10,
) -> None:
    """Queue ReST-EM training as one resumable job on the `policy` queue (run `seal worker -q policy`)."""
    from app.config import Settings
    from app.queue import POLICY_QUEUE, enqueue_policy, get_queue
    from app.redis_server import ensure_redis, redis_client

    settings = Settings()
    redis_url, _ = ensure_redis(settings.redis_url, settings.data_dir)
    job = enqueue_policy(get_queue(redis_client(redis_url), POLICY_QUEUE),
                         {"name": name, "passages": passages, "rounds": rounds, "k": k, "seeds": seeds,
                          "format": format, "reward_baseline": reward_baseline, "epochs": epochs})
    typer.echo(f"queued policy training {job.id} for '{name}' on the '{POLICY_QUEUE}' queue")
