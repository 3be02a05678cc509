"""findings: what was found for a model and corpus (the Overview page's lines), from the cache."""

from __future__ import annotations

from neuro.cli import command, open_corpus, open_model, open_split, progress
from neuro.instrument.tokens import truncation


def _options(p) -> None:
    p.add_argument("--compute", action="store_true",
                   help="compute and cache what is missing (statistics, chance level, layer scores, clone "
                        "evaluation) instead of reporting it as not computed; e.g. on a GPU box, then copy cache/")


@command("findings", "what was found: neuron counts beside chance, where they sit, language tree, concept layers, "
                     "clone detection, beside the paper", _options)
def cmd_findings(args) -> tuple[dict, str]:
    from neuro.results.findings import gather_inputs
    from neuro.analysis.findings import findings

    loaded = open_model(args)
    snippets = open_corpus(args)
    split = open_split(args, snippets)
    gathered = gather_inputs(loaded, snippets, split=split, cache=args.cache, compute=args.compute,
                             progress=progress("findings"))
    result = findings(gathered.inputs)
    summary = {**result.to_dict(), "model_identity": loaded.identity, "split": split.summary(),
               "computed": gathered.computed,
               "truncated_programs": truncation(loaded, snippets, args.max_length).summary()}
    lines = [f"model {result.model}; corpus {result.corpus}", *result.notes, ""]
    for finding in result:
        lines.append(("- " if finding.computed else "- (not computed) ") + finding.line())
    if gathered.computed:
        lines.append(f"\ncomputed and cached: {', '.join(gathered.computed)}")
    return summary, "\n".join(lines)
