"""steer: scale a language's neurons while the model generates, and read which language it writes."""

from __future__ import annotations

from neuro.cli import command, open_corpus, open_model, open_split, progress
from neuro.cli.commands.neurons import _selection, _selection_options, _statistics


def _factors(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(f) for f in text.split(",") if f.strip())
    except ValueError:
        raise ValueError(f"--factors wants numbers separated by commas (e.g. 0,1,2,4,8), got {text!r}") from None


def _options(p) -> None:
    which = p.add_mutually_exclusive_group()
    which.add_argument("--task", help="one prompt: the source-language program of this task (code up to its body)")
    which.add_argument("--prompt-file", help="one prompt: this file's text (a code start or a docstring)")
    p.add_argument("--from", dest="source", required=True, help="the prompts' language (source)")
    p.add_argument("--to", dest="target", required=True, help="the language whose selected neurons are scaled")
    p.add_argument("--op", choices=["scale"], default="scale",
                   help="how the target's neurons are changed: scaled by each factor")
    p.add_argument("--factors", default="0,1,2,4,8",
                   help="factors the target's neurons are scaled by (default 0,1,2,4,8)")
    p.add_argument("--source-factor", type=float, default=1.0,
                   help="factor of the source's selected neurons at every step (default 1: untouched; 0: suppressed)")
    p.add_argument("--draws", type=int, default=3,
                   help="matched random controls (same layer, same score decile; default 3); sweep only")
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--seed", type=int, default=0, help="seed of the matched controls")
    _selection_options(p)


@command("steer", "steer generation: scale the target language's neurons (and/or suppress the source's) and detect "
         "the language of each continuation; without --task/--prompt-file, the dose-response sweep on the "
         "evaluation side against matched random neurons (cached)", _options)
def cmd_steer(args) -> tuple[dict, str]:
    from neuro.analysis.generation import GenerationParams, prompt_of
    from neuro.analysis.steering import SteerSpec, steer_prompt
    from neuro.cli import read_code_file
    from neuro.results.interventions import STEERING

    spec = SteerSpec(args.source, args.target, _factors(args.factors), args.source_factor, args.draws, args.seed)
    params = GenerationParams(max_new_tokens=args.max_new_tokens)
    prompt = read_code_file(args.prompt_file, "the prompt") if args.prompt_file else None
    loaded = open_model(args)
    corpus = open_corpus(args)
    split = open_split(args, corpus)
    selection = _selection(args, _statistics(args, loaded, split))
    head = {"model": loaded.identity, "from": args.source, "to": args.target, "op": args.op,
            "split": split.summary(), "selection": selection.summary()}
    if args.task or prompt is not None:
        if args.task:
            found = [s for s in corpus if s.task == args.task and s.lang == args.source]
            if not found:
                raise ValueError(f"no {args.source} program of task {args.task!r} in the corpus")
            prompt = prompt_of(found[0])
        target = selection.neurons_for(args.target)
        if not target:
            raise ValueError(f"no neurons are specific to {args.target} with these selection parameters")
        source = selection.neurons_for(args.source) if args.source_factor != 1.0 else None
        assert prompt is not None  # from the file, else the task's program
        steered = steer_prompt(loaded, prompt, spec, target, source=source, params=params)
        lines = [f"prompt:\n{prompt}", f"[unchanged] {steered.before['lang']} ({steered.before['confidence']:.2f}): "
                 f"{steered.before['completion']!r}"]
        for r in steered.after.to_dict(orient="records"):
            lines.append(f"[{args.target} x{r['factor']:g}] {r['lang']} ({r['confidence']:.2f}): {r['completion']!r}")
        return head | {"neurons": sum(len(v) for v in target.values())} | steered.summary(), "\n".join(lines)
    result, hit = STEERING.fetch(loaded, split.evaluation, selection=selection, spec=spec, params=params,
                                 max_length=args.max_length, cache=args.cache,
                                 progress=progress("steering sweep (one generation + one loss pass per step)"))
    return head | {"cache_hit": hit} | result.summary(), result.text()
