"""`python -m neuro ...`: every analysis headless, with a `--json` summary on stdout.

Conventions for all subcommands: `--model` takes a local folder or a hub id, `--corpus` a Snippet
JSONL file, a folder of source files or a folder of HumanEval-X files; both default to the embedded
demo. With `--json`, stdout carries one JSON document and nothing else; logs and progress go to stderr.

Commands live in `neuro/cli/commands/<feature>.py`, each registered with `@command(...)`; every module
in that package is imported when the parser is built.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import pkgutil
import sys
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

from neuro.choices import DeviceMap, choices
from neuro.code.corpus import CorpusError, load_corpus
from neuro.code.split import DEFAULT_EVAL_FRACTION, CorpusSplit, SplitParams, split_corpus
from neuro.model.errors import ModelLoadError, WeightsNotLoaded
from neuro.progress import reporter
from neuro.model.loading import load_model
from neuro.model.plan import parse_max_memory
from neuro.cli.params import Parser, UsageError
from neuro.paths import DEMO_MODEL_DIR
from neuro.results import cache_problem

log = logging.getLogger("neuro")


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    run: Callable  # (args) -> (json summary: dict, text: str)
    configure: Callable[[argparse.ArgumentParser], None] | None


COMMANDS: dict[str, Command] = {}


def command(name: str, help: str, configure: Callable[[argparse.ArgumentParser], None] | None = None):
    """Register `fn(args) -> (summary, text)` as `python -m neuro NAME`; `configure` adds its options."""
    def wrap(fn):
        COMMANDS[name] = Command(name, help, fn, configure)
        return fn
    return wrap


def progress(label: str):
    """A progress callback printing `label: done/total · elapsed · about N left` on one stderr line."""
    clear = "\033[K" if sys.stderr.isatty() else ""  # erase the rest of a longer previous line

    def show(fraction: float, text: str) -> None:
        print(f"\r{text}{clear}", end="\n" if fraction >= 1 else "", file=sys.stderr, flush=True)
    return reporter(label, show)


def open_model(args):
    source = args.model or str(DEMO_MODEL_DIR)
    log.info("loading model %s", source)
    return load_model(source, dtype=args.dtype, device=args.device, trust_remote_code=args.trust_remote_code,
                      device_map=args.device_map, max_memory=parse_max_memory(args.max_memory))


def open_corpus(args):
    snippets = load_corpus(args.corpus)
    if args.languages:
        wanted = set(args.languages.split(","))
        snippets = [s for s in snippets if s.lang in wanted]
    if args.limit:
        snippets = snippets[: args.limit]
    if not snippets:
        raise CorpusError("the corpus is empty after filtering")
    return snippets


def open_split(args, snippets) -> CorpusSplit:
    """The selection / evaluation split every analysis shares (--eval-fraction, --split-seed)."""
    return split_corpus(snippets, SplitParams(eval_fraction=args.eval_fraction, seed=args.split_seed))


def read_code_file(path: str | None, purpose: str) -> str:
    """The program in `path` as text, read before any model is loaded; a missing flag, a binary file or
    text that is not UTF-8 fails with a message that says what to do."""
    from pathlib import Path

    from neuro.code.upload import decode_upload

    if not path:
        raise ValueError(f"--code-file FILE is required ({purpose})")
    upload = decode_upload(Path(path).read_bytes(), Path(path).name)
    if upload.error:
        raise ValueError(upload.error)
    assert upload.text is not None  # decoded: no error
    return upload.text


def _load_commands() -> None:
    from neuro.cli import commands

    for module in pkgutil.iter_modules(commands.__path__):
        importlib.import_module(f"{commands.__name__}.{module.name}")


def build_parser() -> argparse.ArgumentParser:
    _load_commands()
    parser = Parser(prog="python -m neuro", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for cmd in COMMANDS.values():
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        p.add_argument("--model", help="local folder or hub id (default: the embedded demo model)")
        p.add_argument("--corpus", help="Snippet JSONL, folder of sources or of HumanEval-X files "
                                        "(default: the embedded demo corpus)")
        p.add_argument("--languages", help="comma-separated subset, e.g. python,go")
        p.add_argument("--limit", type=int, help="use only the first N snippets")
        p.add_argument("--max-length", type=int, default=512, help="tokens per program (default 512)")
        p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
        p.add_argument("--dtype", help="float32, bfloat16, float16 (default: float32 on CPU, bf16 on GPU)")
        p.add_argument("--trust-remote-code", action="store_true", help="run code shipped with the model")
        p.add_argument("--device-map", choices=choices(DeviceMap),
                       help="split the model over the visible GPUs (and CPU) with accelerate (default: auto when "
                            "more than one GPU is visible)")
        p.add_argument("--max-memory", help="accelerate's per-device cap, e.g. 0=70GiB,1=70GiB,cpu=200GiB")
        p.add_argument("--batch-tokens", type=int,
                       help="padded tokens per batch for every pass (default: sized by the memory plan)")
        p.add_argument("--eval-fraction", type=float, default=DEFAULT_EVAL_FRACTION,
                       help="share of tasks (else programs) kept for evaluation; neurons, concept layers and "
                            "centring means are chosen on the rest (default 0.3)")
        p.add_argument("--split-seed", type=int, default=0, help="seed of the selection / evaluation split")
        p.add_argument("--cache", help="cache folder (default: cache/ or $NEURO_CACHE)")
        p.add_argument("--json", action="store_true", help="print one JSON summary on stdout")
        p.add_argument("-v", "--verbose", action="store_true")
        if cmd.configure:
            cmd.configure(p)
        p.set_defaults(handler=cmd.run)
    return parser


@contextmanager
def cache_in_use(cache: str | None):
    """`--cache X` is the cache of everything the command does, not only of the results it passes X to:
    $NEURO_CACHE is X while it runs, so the weight-digest memo (neuro.model.identity), model cards and the
    job processes it starts (which inherit the environment) never write into another cache."""
    if not cache:
        yield
        return
    before = os.environ.get("NEURO_CACHE")
    os.environ["NEURO_CACHE"] = str(cache)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("NEURO_CACHE", None)
        else:
            os.environ["NEURO_CACHE"] = before


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except UsageError as err:  # already on stderr; with --json the summary says it too
        if "--json" in (sys.argv[1:] if argv is None else argv):
            print(json.dumps({"error": err.message}))
        return 2
    if args.batch_tokens:
        if args.batch_tokens < 1:
            print("error: --batch-tokens must be >= 1", file=sys.stderr)
            return 2
        os.environ["NEURO_BATCH_TOKENS"] = str(args.batch_tokens)  # read by neuro.model.plan.batch_plan
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    from neuro.instrument.distributed import finish

    try:
        with cache_in_use(args.cache):
            summary, text = args.handler(args)
    except (ModelLoadError, CorpusError, WeightsNotLoaded, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        if args.json:
            print(json.dumps({"error": str(err)}))
        finish(wait=False)
        return 2
    finish()  # under torchrun: every rank leaves the process group together
    problem = cache_problem(args.cache, probe=False)
    if problem:  # the store has logged each failed write; the summary says it once
        summary = {**summary, "cache_warning": problem}
        text = f"{text}\nwarning: results are not being kept: {problem}"
    if int(os.environ.get("RANK", 0)) == 0:  # under torchrun only the first rank reports
        print(json.dumps(summary, indent=1, default=str) if args.json else text)
    return 0
