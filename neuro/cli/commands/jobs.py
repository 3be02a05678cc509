"""finetune, transfer, jobs: start the training tasks headless (foreground by default, --detach for the
background) and list, show, cancel, resume or export jobs. Jobs live in <cache>/jobs, where the app's Jobs
page sees them. Both tasks use the shared selection / evaluation split of the global --eval-fraction and
--split-seed: neurons and concept layers are chosen, and training runs, on the selection side; losses and
scores are measured on the evaluation side. The --json report carries the split (`split`).
"""

from __future__ import annotations

from pathlib import Path

from neuro.cli import command, open_corpus, open_model, open_split
from neuro.cli.params import add_params
from neuro.instrument.tokens import truncation
from neuro.params import spec


def _jobs_root(args) -> Path | None:
    return Path(args.cache) / "jobs" if args.cache else None


def _common_options(p) -> None:
    p.add_argument("--lr", type=float, help="learning rate (default: 1e-3 adapters, 1e-4 full fine-tuning)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, metavar="SEED",
                   help="seeds per method (default 0 1 2): each decides the random control's neurons, which "
                        "programs share a batch, the batch order and LoRA's initialisation; runs = methods x "
                        "seeds; `--seeds 0` is the quick single run")
    p.add_argument("--seed", type=int, default=None, help="one seed (the same as --seeds SEED)")
    p.add_argument("--detach", action="store_true", help="start in the background and return at once")
    p.add_argument("--memory-budget-gb", type=float, help="refuse runs estimated above this (default: available)")
    p.add_argument("--checkpoint-every", type=int, default=50,
                   help="steps between checkpoints that `jobs resume` continues from (0: only the last step)")
    p.add_argument("--export", help="after a single foreground run, export the model as a Hugging Face folder here")
    p.add_argument("--eval-programs", type=int, default=0, metavar="N",
                   help="evaluate on N evaluation-side programs, a deterministic subset stratified by language "
                        "(default 0: all); the results say 'evaluated on N of M programs'")


def _budget(args, loaded=None) -> int | None:
    """--memory-budget-gb, else (None) what is available; a foreground run trains `loaded` itself, so its
    weights, already resident, count in what it may use (neuro.training.memory.job_budget)."""
    if args.memory_budget_gb:
        return int(args.memory_budget_gb * (1 << 30))
    if loaded is None or args.detach:
        return None
    from neuro.training.memory import job_budget
    return job_budget(loaded, args.device or str(loaded.device), reuses_loaded=True)


def _finetune_options(p) -> None:
    from neuro.analysis.selectivity import SelectionParams
    from neuro.experiments.finetune import METHODS, NEURON_SETS, FinetuneConfig

    _common_options(p)
    add_params(p, FinetuneConfig, ["steps"])
    p.add_argument("--target", required=True, help="language to fine-tune for")
    p.add_argument("--method", default="neurons",
                   help=f"{', '.join(METHODS)}; comma-separated for a comparison at equal steps")
    p.add_argument("--neuron-set", choices=NEURON_SETS, default="specific")
    add_params(p, FinetuneConfig, ["lora_rank"])
    p.add_argument("--pass-at-k", action="store_true", help="also pass@1 on evaluation-side programs with tests")
    add_params(p, SelectionParams, ["candidate_quantile", "ratio", "top_fraction"])


def _seeds(args) -> list[int]:
    from neuro.experiments.seeds import DEFAULT_SEEDS, check_seeds

    if args.seed is not None and args.seeds is not None:
        raise ValueError("give --seeds or --seed, not both")
    return check_seeds([args.seed] if args.seed is not None else (args.seeds or list(DEFAULT_SEEDS)))


def _comparisons(comparisons: dict) -> tuple[list[dict], list[str]]:
    """The seed comparisons as JSON and as text lines."""
    out, lines = [], []
    for comparison in comparisons.values():
        out.append(comparison.summary())
        lines.append(f"{comparison.metric}; {comparison.cost}")
        for arm in comparison.arms:
            params = sorted({p for p in arm.trainable_params if p is not None})
            count = f"; {', '.join(f'{p:,}' for p in params)} trainable parameters" if params else ""
            lines.append(f"  {arm.arm}: {arm.text()} per seed {[round(v, 4) for v in arm.values]}{count}")
        for diff in comparison.differences:
            task = diff.task_ci
            task_text = (f"; over evaluation tasks {task['estimate']:+.4f} [{task['low']:+.4f}, {task['high']:+.4f}]"
                         if task and task.get("low") is not None else "")
            lines.append(f"  {diff.text()}{task_text}: {diff.verdict()}")
    return out, lines


def _result_json(info, drop=()) -> dict | None:
    """The job's typed result as JSON (None while it has none), without the `drop` fields."""
    from neuro.jobs.kinds import job_result

    result = job_result(info)
    return None if result is None else {k: v for k, v in result.to_json().items() if k not in drop}


def _finish(infos, table, split, comparisons=None, runs: dict | None = None) -> tuple[dict, str]:
    """The --json summary (split, the grid of runs and its cost, each job with its result less its config and
    per-program scores, the comparisons over seeds) and the text."""
    summary = {"split": split.summary(), **(runs or {}),
               "jobs": [{**info.row(), "path": str(info.path),
                         "result": _result_json(info, drop=("config", "per_program"))} for info in infos]}
    lines = [split.caption()] + ([runs["cost"]] if runs else [])
    lines += [f"{i.id}: {i.state}" + (f" ({i.error})" if i.error else "") for i in infos]
    if table is not None and not table.empty:
        lines.append(table.to_string(index=False))
    if comparisons is not None:
        summary["comparisons"], text = _comparisons(comparisons)
        lines += text
    return summary, "\n".join(lines)


@command("finetune", "neuron-guided fine-tuning (and its baselines) as jobs; results in <cache>/jobs",
         _finetune_options)
def cmd_finetune(args) -> tuple[dict, str]:
    from neuro.analysis.selectivity import SelectionParams
    from neuro.experiments.finetune import (
        FinetuneConfig,
        compare_finetune,
        kept_weights,
        plan_finetune_runs,
        results_table,
        select_finetune_neurons,
    )
    from neuro.experiments.seeds import cost
    from neuro.jobs.kinds import FINETUNE, finished_results
    from neuro.jobs.runner import start_job

    methods = [m.strip() for m in args.method.split(",") if m.strip()]
    if len(set(methods)) < len(methods):
        raise ValueError(f"--method lists a method twice: {args.method}")
    seeds = _seeds(args)
    _check_export(args, len(methods) * len(seeds))
    loaded, snippets = open_model(args), open_corpus(args)
    split = open_split(args, snippets)
    params = SelectionParams(candidate_quantile=args.candidate_quantile, ratio=args.ratio,
                             top_fraction=args.top_fraction)
    # neurons from the selection side's statistics only; the jobs evaluate on the other side
    selection = select_finetune_neurons(loaded, split, params, store=args.cache, max_length=args.max_length)
    batch_tokens = args.batch_tokens or spec(FinetuneConfig, "batch_tokens").default  # global --batch-tokens
    options = dict(batch_tokens=batch_tokens, max_length=min(args.max_length, 1024), steps=args.steps,
                   lora_rank=args.lora_rank, pass_at_k=args.pass_at_k, checkpoint_every=args.checkpoint_every,
                   eval_programs=args.eval_programs,
                   device=args.device, dtype=args.dtype, trust_remote_code=args.trust_remote_code)
    configs = plan_finetune_runs(loaded, selection, args.target, methods, seeds, lr=args.lr,
                                 neuron_set=args.neuron_set, split=split, **options)
    # Foreground runs share the one loaded model: neuron deltas act through hooks and LoRA is taken out after
    # its run, so each run starts from the same weights; full fine-tuning changes them, so its runs come last
    # (plan_finetune_runs) and every one but the last puts the weights back afterwards.
    last_full = max((i for i, c in enumerate(configs) if c.method == "full"), default=-1)
    infos = []
    for i, config in enumerate(configs):
        keep = config.method == "full" and i != last_full and not args.detach
        with kept_weights(loaded, keep=keep):
            infos.append(start_job(FINETUNE, config, loaded, snippets, root=_jobs_root(args),
                                   memory_budget=_budget(args, loaded), detach=args.detach, run_loaded=loaded))
    order = {m: i for i, m in enumerate(methods)}  # report in the order asked for
    infos = [info for _, info in sorted(enumerate(infos), key=lambda x: (order[configs[x[0]].method], x[0]))]
    results = {} if args.detach else finished_results(infos, FINETUNE)
    table = None if args.detach else results_table(results)
    runs = {"methods": methods, "seeds": seeds, "runs": len(configs), "cost": cost(methods, seeds),
            "comparison": configs[0].comparison}
    summary, text = _finish(infos, table, split, None if args.detach else compare_finetune(results), runs)
    summary["truncated_programs"] = truncation(loaded, snippets, args.max_length).summary()
    return _export(args, infos, summary, text)


def _check_export(args, runs: int) -> None:
    """--export needs one foreground run: refuse before anything starts."""
    if args.export and (runs != 1 or args.detach):
        raise ValueError("--export needs a single foreground run (one method and one seed, e.g. --seeds 0; "
                         "export detached or compared runs later with `jobs export <id>`)")


def _export(args, infos, summary: dict, text: str) -> tuple[dict, str]:
    """--export: write the finished run's model as a Hugging Face folder."""
    if not args.export:
        return summary, text
    if infos[0].state != "finished":
        summary["export_error"] = f"not exported: the run {infos[0].state}"
        return summary, text + "\n" + summary["export_error"]
    summary["exported"] = _export_to(infos[0].path, args.export)
    return summary, text + f"\nexported to {summary['exported']}"


def _export_to(job_dir: Path, out) -> str:
    """Export here; an occupied folder is a usage error (exit 2 with the message), not a crash."""
    from neuro.jobs.kinds import export_model

    try:
        return str(export_model(job_dir, out))
    except FileExistsError as err:
        raise ValueError(f"{err}; choose another folder or remove it") from err


def _transfer_options(p) -> None:
    from neuro.experiments.transfer import METHODS, TransferConfig

    _common_options(p)
    add_params(p, TransferConfig, ["steps"])
    p.add_argument("--source", required=True, help="language whose (code, summary) pairs are trained on")
    p.add_argument("--layers", action="append",
                   help="concept, all, lower, or a comma-separated layer list; repeat to compare (default concept)")
    p.add_argument("--method", choices=METHODS, default="lora", help="LoRA on the chosen blocks, or their weights")
    add_params(p, TransferConfig, ["rank", "batch_size", "max_new_tokens"])
    p.add_argument("--targets", help="comma-separated languages to evaluate (default: all)")
    p.add_argument("--keep-comments", action="store_true", help="do not strip comments from the code")
    p.add_argument("--no-before", action="store_true", help="skip the evaluation before training")


@command("transfer", "concept-layer-guided summarization transfer as jobs: BLEU-4 / ROUGE-L per language",
         _transfer_options)
def cmd_transfer(args) -> tuple[dict, str]:
    from neuro.experiments.seeds import cost
    from neuro.experiments.transfer import (
        LAYER_CHOICES,
        compare_transfer,
        comparison_table,
        plan_transfer_runs,
        trainable_count,
    )
    from neuro.jobs.kinds import TRANSFER, finished_results
    from neuro.jobs.runner import start_job

    choices = args.layers or ["concept"]
    seeds = _seeds(args)
    _check_export(args, len(choices) * len(seeds))
    loaded, snippets = open_model(args), open_corpus(args)
    split = open_split(args, snippets)
    options = dict(method=args.method, rank=args.rank, steps=args.steps,
                   lr=args.lr if args.lr is not None else (1e-4 if args.method == "full" else 1e-3),
                   batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                   strip_comments=not args.keep_comments, eval_before=not args.no_before,
                   targets=args.targets.split(",") if args.targets else [], device=args.device,
                   checkpoint_every=args.checkpoint_every, eval_programs=args.eval_programs, dtype=args.dtype,
                   trust_remote_code=args.trust_remote_code)
    comparison, configs = None, []
    for choice in choices:
        custom = None
        if choice not in LAYER_CHOICES:
            custom, choice = [int(x) for x in choice.split(",") if x.strip()], "custom"
        planned = plan_transfer_runs(loaded, split, args.source, [choice], seeds, custom, store=args.cache,
                                     comparison=comparison, **options)
        comparison = planned[0].comparison
        configs += planned
    layer_params = {f"{c.layer_choice} {c.layers}": trainable_count(loaded, c) for c in configs}
    infos = []
    for config in configs:
        run_loaded = loaded if len(configs) == 1 else None  # LoRA stays in the model after a transfer run
        infos.append(start_job(TRANSFER, config, loaded, snippets, root=_jobs_root(args),
                               memory_budget=_budget(args, run_loaded), detach=args.detach, run_loaded=run_loaded))
    text_tables, comparisons = None, None
    if not args.detach:
        results = finished_results(infos, TRANSFER)
        bleu, rouge = comparison_table(results, "bleu4"), comparison_table(results, "rouge_l")
        if not bleu.empty:
            import pandas as pd
            text_tables = pd.concat({"BLEU-4": bleu.set_index("layers"), "ROUGE-L": rouge.set_index("layers")},
                                    names=["metric", "layers"]).drop(columns=["job", "source", "method", "steps"])
            text_tables = text_tables.reset_index()
        comparisons = {f"{key} {metric}": comp for metric in ("bleu4", "rouge_l")
                       for key, comp in compare_transfer(results, metric).items()}
    arms = [c if c in LAYER_CHOICES else "custom" for c in choices]
    runs = {"layer_choices": arms, "seeds": seeds, "runs": len(configs), "cost": cost(arms, seeds),
            "comparison": comparison, "trainable_params": layer_params}
    summary, text = _finish(infos, text_tables, split, comparisons, runs)
    text += "\ntrainable parameters: " + "; ".join(f"{k}: {v:,}" for k, v in layer_params.items())
    return _export(args, infos, summary, text)


def _jobs_options(p) -> None:
    p.add_argument("action", choices=["list", "show", "cancel", "resume", "export"])
    p.add_argument("job", nargs="?", help="job id (show, cancel, resume, export)")
    p.add_argument("--kind", help="list only this kind (finetune, transfer, export)")
    p.add_argument("--log", action="store_true", help="show: include the log")
    p.add_argument("--detach", action="store_true", help="resume: continue in the background and return at once")
    p.add_argument("--out", help="export: the Hugging Face folder to write (default: <job>/export)")


@command("jobs", "list, show, cancel, resume or export background jobs (fine-tuning, transfer, export)",
         _jobs_options)
def cmd_jobs(args) -> tuple[dict, str]:
    from neuro.jobs.folders import cancel_job, find_job, job_metrics, list_jobs, log_tail
    from neuro.jobs.runner import resume_job

    root = _jobs_root(args)
    if args.action == "list":
        jobs = list_jobs(root, kind=args.kind)
        rows = [job.row() for job in jobs]
        text = "\n".join(f"{r['id']:<40} {r['state']:<10} {r['progress']:>6.1f}%  {r['label']}" for r in rows)
        return {"jobs": rows}, text or "no jobs"
    if not args.job:
        raise ValueError(f"jobs {args.action} needs a job id")
    if args.action == "cancel":
        info = cancel_job(args.job, root=root)
        return info.row(), f"{info.id}: {info.state}"
    if args.action == "resume":
        info = resume_job(args.job, root=root, detach=args.detach)
        return {**info.row(), "result": _result_json(info)}, f"{info.id}: {info.state}" + (
            f" ({info.error})" if info.error else "")
    if args.action == "export":
        return _export_job(find_job(args.job, root), args.out)
    info = find_job(args.job, root)
    metrics = job_metrics(info)
    summary = {**info.row(), "path": str(info.path), "params": info.params, "result": _result_json(info),
               "metrics": [m.to_json() for m in metrics[-20:]]}
    text = "\n".join(f"{k}: {v}" for k, v in info.row().items())
    if metrics:
        text += f"\nlast metric: {metrics[-1].to_json()}"
    if args.log:
        summary["log"] = log_tail(info)
        text += "\n--- log ---\n" + summary["log"]
    return summary, text


def _export_job(info, out: str | None) -> tuple[dict, str]:
    """Export a finished fine-tuning or transfer job here (in the foreground)."""
    from neuro.jobs.folders import JobRefused
    from neuro.jobs.kinds import export_reason

    reason = export_reason(info)
    if reason:
        raise JobRefused([reason])
    path = _export_to(info.path, out or info.path / "export")
    return {"id": info.id, "exported": path}, f"{info.id}: exported to {path}"
