"""`python -m neuro plan`: will it fit? Every command's memory, from the model's config alone."""

from __future__ import annotations

from neuro.cli import command
from neuro.code.corpus import load_corpus
from neuro.model.plan import GIB, parse_bytes, plan_commands, read_config


def _configure(p) -> None:
    p.add_argument("--programs-per-language", type=int,
                   help="plan for N programs per language (default: the corpus's count, 164 without --corpus)")
    p.add_argument("--device-memory", help="memory of one device, e.g. 80GB (default: unbounded)")
    p.add_argument("--host-memory", help="host RAM, e.g. 64GB (default: unbounded)")
    p.add_argument("--on-cpu", action="store_true", help="the model runs on the CPU: host memory holds it")


def _corpus_counts(args) -> tuple[int, int, int | None]:
    """(programs per language, languages, mean tokens) from --corpus / --programs-per-language."""
    if args.corpus is None:
        return args.programs_per_language or 164, 5, None
    snippets = load_corpus(args.corpus)
    langs = {s.lang for s in snippets}
    per_language = args.programs_per_language or max(1, -(-len(snippets) // max(len(langs), 1)))
    # about 3.5 characters a token for code (the plan's mean program length; capped by --max-length)
    mean_chars = sum(len(s.code) for s in snippets) / max(len(snippets), 1)
    return per_language, len(langs), max(1, min(args.max_length, int(mean_chars / 3.5)))


@command("plan", "will it fit? memory (device, host, disk) and batch size of every command, from config.json "
                 "alone (nothing is loaded or downloaded)", _configure)
def plan(args):
    config = read_config(args.model or _demo(), trust_remote_code=args.trust_remote_code)
    per_language, languages, mean_tokens = _corpus_counts(args)
    result = plan_commands(config, dtype=args.dtype or "bfloat16", device_memory=parse_bytes(args.device_memory),
                           host_memory=parse_bytes(args.host_memory), programs_per_language=per_language,
                           languages=languages, max_length=args.max_length, mean_tokens=mean_tokens,
                           on_cpu=args.on_cpu)
    summary = result.to_json()
    lines = [f"{config.model_type}: {result.model.parameters / 1e9:.2f}B parameters, "
             f"{result.model.weight_bytes / GIB:.1f} GiB of {result.model.dtype} weights; "
             f"{result.programs} programs, max {result.max_length} tokens",
             f"{'command':<12} {'device GiB':>10} {'host GiB':>9} {'disk GiB':>9} {'batch':>6}  fits"]
    for name, c in result.commands.items():
        lines.append(f"{name:<12} {c.device_bytes / GIB:>10.1f} {c.host_bytes / GIB:>9.1f} {c.disk_bytes / GIB:>9.2f} "
                     f"{c.batch_tokens:>6}  {'yes' if c.fits else 'NO'}{' (checkpointed)' if c.checkpointing else ''}")
    return summary, "\n".join(lines)


def _demo() -> str:
    from neuro.paths import DEMO_MODEL_DIR

    return str(DEMO_MODEL_DIR)
