"""clones eval | search: cross-language clone detection with concept-layer embeddings."""

from __future__ import annotations

from neuro.choices import CenterChoice, choices
from neuro.cli import command, open_corpus, open_model, open_split, progress, read_code_file
from neuro.instrument.tokens import truncation


def _options(p) -> None:
    p.add_argument("action", choices=["eval", "search"],
                   help="eval: MAP@R and Recall@1 with task-bootstrap CIs, baselines, paired differences and the layer "
                        "sweep; search: hits for --code-file")
    p.add_argument("--layer", type=int, help="embedding layer (default: the concept layer of this model, chosen on "
                                              "the selection side of the corpus split)")
    p.add_argument("--center", choices=choices(CenterChoice), default="language",
                   help="what is subtracted before cosine: each language's mean (default), the corpus mean, nothing")
    p.add_argument("--strip-comments", action="store_true",
                   help="eval: programs without comments and docstrings (parallel corpora share their prose)")
    p.add_argument("--code-file", help="search: the query program (UTF-8 text)")
    p.add_argument("--lang", help="search: the query's language (default: detected)")
    p.add_argument("-k", type=int, default=10, help="search: number of hits (default 10)")
    p.add_argument("--hit-languages", help="search: comma-separated languages the hits may be in (default: all)")
    p.add_argument("--cross-language", action="store_true", help="search: no hits in the query's own language")
    p.add_argument("--task", help="search: the query's task in the corpus, for the same-task ranks (default: the task "
                                  "of the corpus program the query equals, after whitespace normalisation)")


def _eval(args, loaded, snippets, split) -> tuple[dict, str]:
    from neuro.results.clones import CLONE_EVAL

    result = CLONE_EVAL.get(loaded, snippets, layer=args.layer, split=split, center=args.center,
                            strip=args.strip_comments, max_length=args.max_length, cache=args.cache,
                            progress=progress("embed"))
    from neuro.analysis.clones.intervals import ci_text

    boot = result.meta["bootstrap"]
    sweep = result.sweep.assign(cell=[ci_text(e, lo, hi) for e, lo, hi in zip(
        result.sweep.map_at_r, result.sweep.map_at_r_low, result.sweep.map_at_r_high)])
    sweep = sweep.pivot(index="layer", columns="setting", values="cell")
    headline = "\n\n".join(f"{setting}: MAP@R and Recall@1 [{boot['confidence']:.0%} CI]\n"
                            + result.headline(setting).to_string(index=False)
                            for setting in ("cross-language", "all-language"))
    text = (f"measured on the evaluation side ({result.meta['evaluated_programs']} programs, "
            f"{result.meta['evaluated_tasks']} tasks); layer {result.layer} (concept layers {result.concept_layers}, "
            f"alignment measured after the same centring) and centring means ({args.center}) from the selection side"
            f"\n{split.caption()}\nintervals: task-level bootstrap ({boot['tasks']} tasks resampled with their "
            f"queries, {boot['n_resamples']} resamples); a difference whose interval covers 0 is indistinguishable "
            "on this corpus\n\n" + headline
            + "\n\npaired differences (per query, tasks resampled)\n"
            + result.difference_table().to_string(index=False)
            + "\n\nMAP@R per layer [CI]\n" + sweep.to_string()
            + "\n\ncross-language MAP@R per pair (rows: query language)\n" + result.pair_matrix().round(3).to_string())
    return result.summary(), text


def _search(args, loaded, snippets, split, code: str) -> tuple[dict, str]:
    from neuro.analysis.clones.explain import MODEL, TFIDF
    from neuro.results.clones import build_index, explain_search

    index = build_index(loaded, snippets, args.layer, split=split, center=args.center, max_length=args.max_length,
                        cache=args.cache, progress=progress("embed"))
    languages = args.hit_languages.split(",") if args.hit_languages else None
    result = explain_search(index, snippets, code, task=args.task, k=args.k, languages=languages, lang=args.lang,
                            cross_language=args.cross_language, split=split, concept=args.layer is None,
                            cache=args.cache, progress=progress("embed every layer"))
    q = result.query
    lines = [f"query: {q.lang} ({'given' if q.overridden else f'detected, {q.confidence:.0%}'}), layer {result.layer}",
             *(f"note: {n}" for n in (*q.notices, *result.notes))]
    for method in (MODEL, TFIDF):
        lines += [f"\n{result.label(method)}"]
        lines += [f"{i + 1:>3}. {h.score:+.4f}  {h.lang:<11} {h.task:<24} {h.id}"
                  for i, h in enumerate(result.hits[method])]
    if result.ranks:
        lines += ["\nsame-task ranks", result.rank_frame().to_string(index=False)]
    lines += ["", result.describe()]
    summary = {"model": loaded.identity, "split": split.summary(), **result.summary()}
    return summary, "\n".join(lines)


@command("clones", "cross-language clone detection: `eval` (MAP@R, Recall@1, baselines, layer sweep) or `search`",
         _options)
def cmd_clones(args) -> tuple[dict, str]:
    code = read_code_file(args.code_file, "the program to find clones of") if args.action == "search" else None
    loaded, snippets = open_model(args), open_corpus(args)
    split = open_split(args, snippets)
    summary, text = _eval(args, loaded, snippets, split) if code is None else \
        _search(args, loaded, snippets, split, code)
    return {**summary, "truncated_programs": truncation(loaded, snippets, args.max_length).summary()}, text
