"""layers: per-layer syntax-versus-semantics scores and the concept layers, on the selection side of the
corpus split (the concept layers are then evaluated on the other side, e.g. by `clones eval`)."""

from __future__ import annotations

from neuro.cli import command, open_corpus, open_model, open_split, progress
from neuro.instrument.tokens import truncation


def _options(p) -> None:
    p.add_argument("--tokens-per-snippet", type=int, default=12, help="token states sampled per program "
                                                                      "for the syntax probe (default 12)")
    p.add_argument("--no-contribution", action="store_true", help="skip the FFN ablation per layer")
    p.add_argument("--concept", type=int, nargs="+", help="override the concept layers")


@command("layers", "per-layer language ID, cross-language alignment, syntax probe, contribution; concept layers",
         _options)
def cmd_layers(args) -> tuple[dict, str]:
    from neuro.results.layers import LAYER_REPORT

    loaded, snippets = open_model(args), open_corpus(args)
    split = open_split(args, snippets)
    params = dict(tokens_per_snippet=args.tokens_per_snippet, contribution=not args.no_contribution,
                  max_length=args.max_length)
    if args.concept:
        params["concept_override"] = tuple(args.concept)
    report = LAYER_REPORT.get(loaded, split.selection, cache=args.cache, progress=progress("layers"), **params)
    summary = {"model": loaded.identity, "split": split.summary(), **report.summary(),
               "truncated_programs": truncation(loaded, split.selection, args.max_length).summary()}
    cols = [c for c in report.scores.columns if not c.startswith("syntax_acc_")]
    text = (f"layer scores on the selection side: {split.caption()}\n"
            + report.scores[cols].round(3).to_string(index=False) + f"\n\nconcept layers: {report.concept_layers}\n"
            + report.rule)
    return summary, text
