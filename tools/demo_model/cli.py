"""Command line: one subcommand per pipeline step, or `all`."""

from __future__ import annotations

import argparse
import logging
import sysconfig
import time
from pathlib import Path

import tools.demo_model
from tools.demo_model.card import card
from tools.demo_model.corpus import build_corpus, check_overlap
from tools.demo_model.evaluation import evaluate
from tools.demo_model.pack import PACK_BUDGET_MIB, pack, unpack
from tools.demo_model.settings import (
    BOOST,
    DEFAULT_EXCLUDE,
    GO_SRC,
    JDK_SRC_ZIP,
    JS_PACKAGES,
    LIBSTDCXX,
    MODEL_DIR,
    PARALLEL_LAYOUTS,
    PYPI_PACKAGES,
    WORK_DIR,
    log,
)
from tools.demo_model.sources import fetch_js
from tools.demo_model.tokens import parallel_stream, pretokenize, train_tokenizer
from tools.demo_model.training import train


def parser() -> argparse.ArgumentParser:
    """Command-line interface."""
    summary = (tools.demo_model.__doc__ or "").split("\n")[0]
    p = argparse.ArgumentParser(prog="python -m tools.demo_model", description=summary)
    p.add_argument("--work-dir", default=str(WORK_DIR))
    p.add_argument("--out-dir", default=str(MODEL_DIR), help="the shipped model folder")
    sub = p.add_subparsers(dest="cmd", required=True)

    def excl(sp):
        sp.add_argument("--exclude", nargs="*", default=list(DEFAULT_EXCLUDE),
                        help="glob patterns of JSONL(.gz) files whose programs must not be trained on")
        sp.add_argument("--ngram", type=int, default=8, help="normalized lines per overlap window")

    def corpus_args(sp):
        sp.add_argument("--python-stdlib", default=sysconfig.get_paths()["stdlib"])
        sp.add_argument("--go-src", default=str(GO_SRC))
        sp.add_argument("--jdk-src-zip", default=str(JDK_SRC_ZIP))
        sp.add_argument("--libstdcxx", default=str(LIBSTDCXX))
        sp.add_argument("--boost", default=str(BOOST))
        sp.add_argument("--npm-dir", default=str(WORK_DIR / "npm"))
        sp.add_argument("--site-packages", default=sysconfig.get_paths()["purelib"])
        sp.add_argument("--pypi-packages", nargs="*", default=list(PYPI_PACKAGES),
                        help="installed packages (import names) added to the standard library")
        sp.add_argument("--bytes-per-lang", type=int, default=20_000_000)
        sp.add_argument("--package-cap", type=int, default=1_500_000, help="max bytes per npm/PyPI package")
        sp.add_argument("--val-frac", type=float, default=0.03)
        sp.add_argument("--parse-check", nargs="*", default=["cpp"], help="languages filtered by parse errors")
        sp.add_argument("--seed", type=int, default=0)
        excl(sp)

    def train_args(sp):
        sp.add_argument("--max-minutes", type=float, default=70.0)
        sp.add_argument("--max-tokens", type=int, default=12_000_000)
        sp.add_argument("--ctx", type=int, default=256)
        sp.add_argument("--batch-size", type=int, default=None, help="default 8 on CPU, 64 on CUDA")
        sp.add_argument("--lr", type=float, default=2e-3)
        sp.add_argument("--warmup", type=float, default=0.03, help="share of the budget")
        sp.add_argument("--weight-decay", type=float, default=0.1)
        sp.add_argument("--clip", type=float, default=1.0)
        sp.add_argument("--layers", type=int, default=8)
        sp.add_argument("--hidden", type=int, default=256)
        sp.add_argument("--intermediate", type=int, default=1024)
        sp.add_argument("--heads", type=int, default=8)
        sp.add_argument("--kv-heads", type=int, default=4)
        sp.add_argument("--threads", type=int, default=None,
                        help="CPU threads; default: all cores, fewer while other processes load the machine")
        sp.add_argument("--log-every", type=int, default=25)
        sp.add_argument("--eval-every", type=int, default=250)
        sp.add_argument("--quick-eval-windows", type=int, default=8)
        sp.add_argument("--ckpt-minutes", type=float, default=5.0)
        sp.add_argument("--snapshot-minutes", type=float, default=0.0,
                        help="also save the model to --out-dir this often (0: only at the end), so a run cut off "
                             "by a time limit still returns one")
        sp.add_argument("--max-shard-mb", type=float, default=None,
                        help="split the saved weights into files of at most this many MB (default: one file)")
        sp.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint")
        sp.add_argument("--seed", type=int, default=0)
        sp.add_argument("--parallel-share", type=float, default=0.0,
                        help="share of training rows drawn from the parallel-program stream (0: real code only)")
        sp.add_argument("--parallel-layout", choices=PARALLEL_LAYOUTS, default="pairs",
                        help="which parallel stream (`parallel --layout`) to draw from")

    def eval_args(sp):
        sp.add_argument("--eval-windows", type=int, default=400, help="max windows per language")
        sp.add_argument("--ctx", type=int, default=256)
        sp.add_argument("--threads", type=int, default=None)

    sp = sub.add_parser("fetch-js", help="npm pack the JavaScript packages")
    sp.add_argument("--npm-dir", default=str(WORK_DIR / "npm"))
    sp.add_argument("--packages", nargs="*", default=list(JS_PACKAGES))
    corpus_args(sub.add_parser("build-corpus", help="filter, dedupe, decontaminate, balance, split"))
    sp = sub.add_parser("train-tokenizer", help="byte-level BPE on the training split")
    sp.add_argument("--vocab-size", type=int, default=8192)
    sp = sub.add_parser("pretokenize", help="uint16 token streams")
    sp.add_argument("--seed", type=int, default=0)
    sp = sub.add_parser("parallel", help="uint16 stream of decontaminated parallel-program documents")
    sp.add_argument("--layout", choices=PARALLEL_LAYOUTS, default="pairs")
    sp.add_argument("--tokens", type=int, default=4_000_000, help="stop once the stream has this many tokens")
    sp.add_argument("--program-seed", type=int, default=1, help="seed of the program generator")
    excl(sp)
    train_args(sub.add_parser("train", help="train the model (CPU or CUDA)"))
    eval_args(sub.add_parser("evaluate", help="validation loss per language vs unigram"))
    excl(sub.add_parser("check-overlap", help="re-run decontamination on the built corpus"))
    sp = sub.add_parser("card", help="write README.md and metrics.json into the model folder")
    sp.add_argument("--experiment", default=None,
                    help="markdown table of the recipe experiment (tools.recipe_experiment's table.md) to include")
    sp.add_argument("--from-folder", action="store_true",
                    help="read the metrics from the model folder's metrics.json (no work folder needed)")
    sp = sub.add_parser("pack", help="xz-compress the token streams, tokenizer and statistics into one folder "
                        "(to carry to a GPU machine)")
    sp.add_argument("--out", required=True, help="folder to write (replaced if it exists)")
    sp.add_argument("--parallel-layout", choices=PARALLEL_LAYOUTS, default=None,
                    help="also pack this parallel-program stream (`parallel --layout`)")
    sp.add_argument("--max-mib", type=float, default=PACK_BUDGET_MIB, help="refuse a pack larger than this")
    sp = sub.add_parser("unpack", help="restore a packed folder into --work-dir, checking every stream's checksum")
    sp.add_argument("--packed", required=True)
    sp = sub.add_parser("all", help="every step in order", conflict_handler="resolve")
    corpus_args(sp)
    train_args(sp)
    eval_args(sp)
    sp.add_argument("--vocab-size", type=int, default=8192)
    sp.add_argument("--packages", nargs="*", default=list(JS_PACKAGES))
    sp.add_argument("--parallel-tokens", type=int, default=4_000_000,
                    help="size of the parallel-program stream when --parallel-share > 0")
    return p


def main(argv: list[str] | None = None) -> None:
    """Run one subcommand (or ``all``)."""
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    steps = {
        "fetch-js": lambda: fetch_js(Path(args.npm_dir), args.packages),
        "build-corpus": lambda: build_corpus(args),
        "train-tokenizer": lambda: train_tokenizer(work, args.vocab_size),
        "pretokenize": lambda: pretokenize(work, getattr(args, "seed", 0)),
        "parallel": lambda: parallel_stream(work, args.layout, args.tokens, args.program_seed, args.exclude,
                                            args.ngram),
        "train": lambda: train(args),
        "evaluate": lambda: evaluate(args),
        "check-overlap": lambda: check_overlap(args),
        "card": lambda: card(args),
    }
    transport = {"pack": lambda: pack(work, Path(args.out), args.parallel_layout, args.max_mib),
                 "unpack": lambda: unpack(Path(args.packed), work)}
    if args.cmd == "all":
        args.layout, args.tokens, args.program_seed = args.parallel_layout, args.parallel_tokens, 1
        order = [name for name in steps if name != "parallel" or args.parallel_share > 0]
    else:
        order = [args.cmd]
    for name in order:
        t0 = time.time()
        (steps | transport)[name]()
        log.info("%s finished in %.1f s", name, time.time() - t0)
