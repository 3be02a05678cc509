"""What was found, in sentences: one `Finding` per headline result, from the analyses' typed results.

Pure: the inputs (`FindingsInputs`: a neuron selection, its chance level, the language relations, the
layer report, the clone evaluation, each None when it is not computed) are handed in by
neuro.results.findings, which reads them from the cache. Each finding says what this model shows (its
numbers and, for language-specific counts, per-language p-values against the permutation null; for
universal neurons, their split-half stability beside the top-by-mean baseline and their overlap with the
most important neurons, since a label permutation cannot test them), what the paper
reports (arXiv 2512.19980: shares for Llama-3.1-8B and Qwen2.5-Coder-32B, the rest qualitative), one
sentence where this model does not show the paper's pattern, and the page and tab that show it. A result
that is not computed yet gives a line that says which page computes it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote_plus

import numpy as np

if TYPE_CHECKING:
    from neuro.analysis.clones.metrics import CloneEvaluation
    from neuro.analysis.layers import LayerReport
    from neuro.analysis.selectivity import ChanceLevel, LanguageRelations, NeuronSelection
    from neuro.analysis.universality import UniversalityReport

PAPER = "Neuron-Guided Interpretation of Code LLMs: Where, Why, and How? (arXiv 2512.19980)"
PAPER_MODELS = "Llama-3.1-8B and Qwen2.5-Coder-32B"
PAPER_SPECIFIC_SHARE = 0.007   # language-specific neurons: < 0.7 % of all FFN neurons
PAPER_UNIVERSAL_SHARE = 0.009  # universal neurons: < 0.9 %
LANG_ID_DROP = 0.02            # language ID "falls" when it drops this far below its early-layer high
MIN_FOR_PLACEMENT = 5          # fewer selected neurons than this say nothing about where they concentrate
THIRDS = ("lower", "middle", "upper")
NAMES = {"cpp": "C++", "java": "Java", "python": "Python", "go": "Go", "javascript": "JavaScript"}


def language_name(lang: str) -> str:
    return NAMES.get(lang, lang)


@dataclass(frozen=True)
class Link:
    """A page of the app (its URL path, e.g. "neurons") and one of its tabs (`lazy_tabs` keeps the open
    tab in the URL as ?tab=<name>)."""

    page: str
    title: str
    tab: str | None = None

    @property
    def url(self) -> str:
        return f"/{self.page}" + (f"?tab={quote_plus(self.tab)}" if self.tab else "")

    @property
    def label(self) -> str:
        return self.title + (f" · {self.tab}" if self.tab else "")


NEURONS_LAYER_MAP = Link("neurons", "Neurons", "Layer map")
NEURONS_RELATIONS = Link("neurons", "Neurons", "Language relations")
LAYER_SCORES = Link("layers", "Layers", "Layer scores")
CLONES_EVALUATION = Link("clones", "Clones", "Evaluation")


@dataclass(frozen=True)
class Finding:
    """One line of the Overview.

    key: a stable name ("specific", "universal", "placement", "family", "concept", "clones").
    computed: False when its inputs are not cached yet (`text` then says which page computes them).
    numbers: the values the text quotes (JSON-ready). chance: the permutation null beside the language-specific
    counts (mean, max, permutations, per-language p and Holm p), None where none applies (universal neurons)
    or it is not computed. paper: what the paper
    reports (qualitative unless it gives a number). differs: one sentence where this model does not
    show the paper's pattern, else None. link: the page and tab that show it.
    """

    key: str
    title: str
    text: str
    link: Link
    computed: bool = True
    numbers: dict[str, Any] = field(default_factory=dict)
    chance: dict[str, Any] | None = None
    paper: str | None = None
    differs: str | None = None

    def line(self) -> str:
        """The finding as one plain-text line (CLI), with the paper and any divergence."""
        parts = [f"{self.title}: {self.text}"]
        if self.differs:
            parts.append(self.differs)
        if self.paper:
            parts.append(f"Paper: {self.paper}")
        return " ".join(parts) + f"  [{self.link.url}]"

    def to_dict(self) -> dict:
        return {**asdict(self), "link": {**asdict(self.link), "url": self.link.url}}


@dataclass(frozen=True)
class Findings:
    model: str
    corpus: str
    findings: list[Finding]
    notes: list[str] = field(default_factory=list)

    def __iter__(self):
        return iter(self.findings)

    def __getitem__(self, key: str) -> Finding:
        for finding in self.findings:
            if finding.key == key:
                return finding
        raise KeyError(key)

    def lines(self) -> list[str]:
        return [f.line() for f in self.findings]

    def to_dict(self) -> dict:
        return {"model": self.model, "corpus": self.corpus, "notes": list(self.notes),
                "findings": [f.to_dict() for f in self.findings]}


@dataclass(frozen=True)
class FindingsInputs:
    """The cached results the findings are read from; None where not computed. `reasons` says, per input
    ("selection", "chance", "universality", "layers", "clones"), why it is missing when the cause is not simply that
    nothing was computed (e.g. statistics without gradients, a corpus without parallel programs)."""

    model: str
    corpus: str
    n_layers: int
    n_neurons: int
    selection: NeuronSelection | None = None
    chance: ChanceLevel | None = None
    universality: UniversalityReport | None = None
    relations: LanguageRelations | None = None
    layers: LayerReport | None = None
    clones: CloneEvaluation | None = None
    reasons: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------- helpers
def percent(share: float) -> str:
    return f"{100 * share:.2f} %"


def layer_third(layer: int, n_layers: int) -> int:
    """0, 1, 2: the lower, middle or upper third of the layers `layer` sits in."""
    return min(2, 3 * int(layer) // max(1, n_layers))


def third_layers(n_layers: int) -> dict[str, list[int]]:
    """The layers in each third (a model with fewer than three layers leaves a third empty)."""
    out: dict[str, list[int]] = {name: [] for name in THIRDS}
    for layer in range(n_layers):
        out[THIRDS[layer_third(layer, n_layers)]].append(layer)
    return out


def _span(layers: list[int]) -> str:
    if not layers:
        return "no layers"
    return f"layer {layers[0]}" if len(layers) == 1 else f"layers {layers[0]}–{layers[-1]}"


def _missing(key: str, title: str, link: Link, what: str, reason: str | None) -> Finding:
    why = reason or (f"not computed yet for this model and corpus: the {link.title} page ({link.tab} tab) "
                     f"computes {what}")
    return Finding(key, title, why[0].upper() + why[1:] + ".", link, computed=False)


# --------------------------------------------------------------------------- neurons
ALPHA = 0.05        # a count is above chance when its Holm-corrected permutation p is below this
MOSTLY_TOP = 0.5    # universal neurons "are mostly the most important neurons" above this share


def _p(p: float) -> str:
    return "nan" if p != p else f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def _specific_chance(inputs: FindingsInputs, counts: dict, text: str, differs: list) -> tuple[str, dict | None]:
    """The per-language permutation p-values beside the language-specific counts."""
    sel, level = inputs.selection, inputs.chance
    assert sel is not None and level is not None  # the caller reads both before asking
    langs = [lang for lang in sel.languages if lang in level.counts.columns]
    if not langs:
        return text + "; chance level not computed for these languages", None
    p, p_holm = level.p_values(), level.p_holm()
    null = level.counts[langs].sum(axis=1)
    chance: dict[str, Any] = {
        "mean": float(null.mean()), "max": int(null.max()), "permutations": int(level.permutations),
        "stratified": bool(level.stratified), "permutation": level.permutation,
        "by_language": {lang: {"mean": level.mean()[lang], "max": level.max()[lang], "p": p[lang],
                               "p_holm": p_holm[lang]} for lang in langs}}
    above = [lang for lang in langs if p_holm[lang] < ALPHA]
    text += (f"; chance (language labels shuffled {level.permutation}, {level.permutations} permutations): total "
             f"mean {chance['mean']:.1f}, max {chance['max']}; Holm-corrected p per language: "
             + ", ".join(f"{language_name(lang)} {_p(p_holm[lang])}" for lang in langs))
    if above:
        text += f" (above chance: {', '.join(language_name(lang) for lang in above)})"
    none = [lang for lang in langs if lang not in above and not counts[lang]]
    below = [lang for lang in langs if lang not in above and counts[lang]]
    if below:
        names = ", ".join(f"{language_name(lang)} ({counts[lang]})" for lang in below)
        one = len(below) == 1
        verb, pronoun = ("is", "it does") if one else ("are", "they do")
        differs.append(f"The count{'' if one else 's'} of {names} {verb} not distinguishable from shuffled labels "
                       f"(Holm p >= {ALPHA}), so on this model and corpus {pronoun} not show neurons tied to "
                       + ("that language." if one else "those languages."))
    if none:
        differs.append("No neuron is specific to " + ", ".join(language_name(lang) for lang in none) + ".")
    if above and chance["mean"] < 0.5:
        text += (f". Shuffled labels select almost none (mean {chance['mean']:.1f}), so any count of one or more is "
                 "above chance: the p-values say the language labels matter to these neurons, not that the counts "
                 "are large")
    return text, chance


def _universal_tests(inputs: FindingsInputs, count: int, text: str, differs: list) -> tuple[str, dict]:
    """Split-half stability beside the top-by-mean baseline, and the overlap with the most important neurons."""
    report = inputs.universality
    if report is None:
        return text + "; stability across halves " + (inputs.reasons.get("universality") or (
            "not computed yet (the Neurons page shows it; `python -m neuro findings --compute` caches it)")), {}
    u, base, ctrl = (report.spread(n) for n in ("universal", "top_by_mean", "control"))
    numbers = {"top_by_mean_overlap": report.top_by_mean_overlap, "halvings": report.halvings,
               "halves_by": report.halves_by, "jaccard_universal": u.mean, "jaccard_universal_sd": u.sd,
               "jaccard_top_by_mean": base.mean, "jaccard_top_by_mean_sd": base.sd,
               "jaccard_control": ctrl.mean, "jaccard_control_sd": ctrl.sd, "by_fraction": report.by_fraction}
    if not count:
        return text + "; none to test for stability", numbers
    text += (f"; {report.top_by_mean_overlap} of the {count} are also among the top {count} neurons by mean score "
             f"over the languages. Split-half Jaccard over {report.halvings} halvings (by {report.halves_by}): "
             f"universal set {u.text(2)}, as many top neurons by mean score {base.text(2)}, importance-matched "
             f"control {ctrl.text(2)}. Count by top fraction (cap): "
             + ", ".join(f"{percent(r['top_fraction'])} {r['universal']} ({r['cap']})" for r in report.by_fraction))
    notes = []
    if report.top_by_mean_overlap >= MOSTLY_TOP * count:
        notes.append(f"{report.top_by_mean_overlap} of the {count} universal neurons are simply the most important "
                     "neurons overall")
    if not (u.mean > base.mean + (base.sd if base.sd == base.sd else 0.0)):
        notes.append("the universal set is no more stable across halves than as many top neurons by mean score")
    if notes:
        differs.append("On this model " + " and ".join(notes) + ": nothing here separates \"universal\" from "
                       "\"important in every language\".")
    return text, numbers


def _count_finding(inputs: FindingsInputs, universal: bool) -> Finding:
    key, title = ("universal", "Universal neurons") if universal else ("specific", "Language-specific neurons")
    bound, paper_bound = (PAPER_UNIVERSAL_SHARE, "< 0.9 %") if universal else (PAPER_SPECIFIC_SHARE, "< 0.7 %")
    paper = f"{paper_bound} of FFN neurons in {PAPER_MODELS}."
    sel = inputs.selection
    if sel is None:
        return _missing(key, title, NEURONS_LAYER_MAP, "the neuron statistics (one capture pass)",
                        inputs.reasons.get("selection"))
    counts = sel.counts_by_language()
    count = counts["universal"] if universal else int(sum(counts[lang] for lang in sel.languages))
    share = count / sel.total
    numbers: dict[str, Any] = {"count": count, "total": sel.total, "share": share}
    text = f"{count:,} of {sel.total:,} FFN neurons ({percent(share)})"
    chance = None
    differs: list[str] = []
    if universal:
        text, more = _universal_tests(inputs, count, text, differs)
        numbers.update(more)
    else:
        numbers["by_language"] = {lang: counts[lang] for lang in sel.languages}
        text += ": " + ", ".join(f"{language_name(lang)} {counts[lang]}" for lang in sel.languages)
        if inputs.chance is not None:
            text, chance = _specific_chance(inputs, counts, text, differs)
            if chance:
                numbers["p_holm"] = {k: v["p_holm"] for k, v in chance["by_language"].items()}
        else:
            text += "; chance level " + (inputs.reasons.get("chance") or
                                         "not computed yet (the Neurons page shows it live; "
                                         "`python -m neuro findings --compute` caches it)")
    text += "."
    if share >= bound:
        differs.append(f"The share is above the paper's {paper_bound} (a small model has few neurons, and the "
                       "top-1 % rule alone allows up to 1 %).")
    return Finding(key, title, text, NEURONS_LAYER_MAP, numbers=numbers, chance=chance, paper=paper,
                   differs=" ".join(differs) or None)


def _placement(counts: np.ndarray, n_layers: int) -> tuple[str, dict[str, Any], bool | None]:
    """Text, numbers and whether the neurons concentrate (None: too few to say) for per-layer counts."""
    total = int(counts.sum())
    thirds = third_layers(n_layers)
    shares = {name: (int(counts[layers].sum()) / total if total else 0.0) for name, layers in thirds.items() if layers}
    top = int(np.argmax(counts))
    numbers = {"total": total, "by_layer": [int(c) for c in counts], "thirds": {n: thirds[n] for n in shares},
               "third_shares": shares, "top_layer": top, "top_count": int(counts[top])}
    if not total:
        return "none selected", numbers, None
    text = ", ".join(f"{100 * s:.0f} % in the {name} third ({_span(thirds[name])})"
                     for name, s in shares.items())
    text += f"; most in layer {top} ({int(counts[top])} of {total})"
    if total < MIN_FOR_PLACEMENT:
        return text, numbers, None
    return text, numbers, bool(counts[top] >= 2 * total / n_layers)


def placement_finding(inputs: FindingsInputs) -> Finding:
    title = "Where they sit"
    sel = inputs.selection
    if sel is None:
        return _missing("placement", title, NEURONS_LAYER_MAP, "the neuron statistics (one capture pass)",
                        inputs.reasons.get("selection"))
    by_layer = sel.counts_by_layer()
    specific = by_layer[list(sel.languages)].sum(axis=1).to_numpy()
    universal = by_layer["universal"].to_numpy()
    s_text, s_numbers, concentrated = _placement(specific, sel.n_layers)
    u_text, u_numbers, _ = _placement(universal, sel.n_layers)
    text = f"language-specific neurons: {s_text}. Universal neurons: {u_text}."
    differs = None
    if concentrated is None and s_numbers["total"]:
        text += f" ({s_numbers['total']} language-specific neurons are too few to say where they concentrate.)"
    elif concentrated is False:
        differs = (f"On this model the language-specific neurons spread over the layers (the fullest, layer "
                   f"{s_numbers['top_layer']}, holds {s_numbers['top_count']} of {s_numbers['total']}), not "
                   "concentrated in a few layers as the paper reports.")
    return Finding("placement", title, text[0].upper() + text[1:], NEURONS_LAYER_MAP,
                   numbers={"specific": s_numbers, "universal": u_numbers},
                   paper="language-specific neurons concentrate in some layers, and the lower layers mainly "
                         "encode language-specific syntax (qualitative).", differs=differs)


def family_finding(inputs: FindingsInputs) -> Finding:
    title = "Language family tree"
    rel = inputs.relations
    if rel is None:
        return _missing("family", title, NEURONS_RELATIONS, "the neuron statistics (one capture pass)",
                        inputs.reasons.get("selection"))
    sim = rel.similarity
    langs = list(sim.index)
    values = sim.to_numpy(dtype=float).copy()
    np.fill_diagonal(values, -np.inf)
    nearest = {lang: langs[int(np.argmax(values[i]))] for i, lang in enumerate(langs)}
    i, j = np.unravel_index(int(np.argmax(values)), values.shape)
    closest = (langs[int(i)], langs[int(j)])
    text = (f"dendrogram order {' · '.join(language_name(x) for x in rel.tree.leaves)}; closest pair "
            f"{language_name(closest[0])}–{language_name(closest[1])} ({rel.method} {values[i, j]:.3f}); nearest: "
            + ", ".join(f"{language_name(a)} → {language_name(b)}" for a, b in nearest.items()) + ".")
    differs = None
    if {"cpp", "java"} <= set(langs) and nearest["cpp"] != "java" and nearest["java"] != "cpp":
        differs = (f"On this model C++ and Java are not each other's nearest language (C++ → "
                   f"{language_name(nearest['cpp'])}, Java → {language_name(nearest['java'])}), unlike the "
                   "paper's tree.")
    return Finding("family", title, "PLS profiles of the languages, average linkage: " + text, NEURONS_RELATIONS,
                   numbers={"order": list(rel.tree.leaves), "nearest": nearest, "closest": list(closest),
                            "closest_similarity": float(values[i, j])},
                   paper="the languages' neurons form a family-tree-like structure (e.g. C++ and Java close; "
                         "qualitative).", differs=differs)


# --------------------------------------------------------------------------- layers
def concept_finding(inputs: FindingsInputs) -> Finding:
    title = "Concept layers"
    report = inputs.layers
    if report is None:
        return _missing("concept", title, LAYER_SCORES, "the per-layer scores", inputs.reasons.get("layers"))
    scores = report.scores
    n = len(scores)
    lang_id = scores["lang_id_acc"].to_numpy(dtype=float)
    align = scores["align_mrr"].to_numpy(dtype=float)
    concept = [int(x) for x in report.concept_layers]
    where = [t for t in THIRDS if t in {THIRDS[layer_third(x, n)] for x in concept}]
    numbers: dict[str, Any] = {"concept_layers": concept, "rule": report.rule, "thirds": where,
                               "lang_id": [_finite(x) for x in lang_id], "align_mrr": [_finite(x) for x in align]}
    text = f"{concept} of layers 0–{n - 1} ({' and '.join(where)} third). {report.rule}"
    differs = []
    early_half = lang_id[: max(1, n // 2)]
    if np.isfinite(early_half).any():
        early = float(np.nanmax(early_half))
        low_layer = int(np.nanargmin(lang_id))
        numbers.update(lang_id_early_high=early, lang_id_min=float(lang_id[low_layer]), lang_id_min_layer=low_layer)
        text += (f" Language-ID accuracy: {early:.2f} at its early high, lowest {lang_id[low_layer]:.2f} at layer "
                 f"{low_layer}")
        if lang_id[low_layer] > early - LANG_ID_DROP:
            differs.append(f"On this model language ID stays near {early:.2f} at every layer, so no layer is "
                           f"language-agnostic as the paper finds for {PAPER_MODELS}.")
    else:
        text += " Language ID cannot be measured here (too few programs per language for the probe)"
    if np.isfinite(align).any():
        peak = int(np.nanargmax(align))
        numbers.update(align_peak_layer=peak, align_peak_mrr=float(align[peak]))
        text += f"; cross-language alignment (MRR) peaks at layer {peak} ({align[peak]:.2f})."
    else:
        text += "."
        differs.append("Cross-language alignment cannot be measured on this corpus (no language pair shares two "
                       "tasks).")
    if not differs and where != ["middle"]:
        differs.append(f"Here the concept layers sit in the {' and '.join(where)} third, not in the middle as in "
                       "the paper.")
    return Finding("concept", title, text, LAYER_SCORES, numbers=numbers,
                   paper="concept layers lie in the middle, where language identity fades and cross-language "
                         "alignment peaks (qualitative).", differs=" ".join(differs) or None)


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def clones_finding(inputs: FindingsInputs) -> Finding:
    title = "Clone detection"
    result = inputs.clones
    if result is None:
        return _missing("clones", title, CLONES_EVALUATION, "it (one pass over the corpus)",
                        inputs.reasons.get("clones"))
    overall = result.overall()
    column = "cross-language MAP@R"
    value = {str(r["method"]): float(r[column]) for r in overall.to_dict(orient="records") if column in r}
    main = next((m for m in ("concept layer", "chosen layer") if m in value), None)
    if main is None:
        return Finding("clones", title, "The clone evaluation holds no cross-language score.", CLONES_EVALUATION,
                       computed=False)
    others = [m for m in ("token TF-IDF", "first layer", "last layer", "mean of layers") if m in value]
    evaluated = result.meta.get("evaluated_programs")
    def with_ci(method: str) -> str:
        ci = result.interval(method, "cross-language", "map_at_r")
        return f"{value[method]:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")

    text = (f"cross-language MAP@R{f' on {evaluated} evaluation programs' if evaluated else ''} "
            f"(95 % intervals over evaluation tasks): {main} (layer {result.layer}) {with_ci(main)} vs "
            + ", ".join(f"{m} {with_ci(m)}" for m in others) + ".")
    compared = {}
    diffs = result.differences
    if not diffs.empty:
        rows = diffs[(diffs.setting == "cross-language") & (diffs.metric == "map_at_r")
                     & diffs.comparison.str.contains("first layer|last layer|mean of layers")]
        for r in rows.to_dict(orient="records"):
            compared[r["comparison"]] = {k: r[k] for k in ("estimate", "low", "high", "covers_zero", "verdict")}
        if compared:
            text += " Paired differences: " + "; ".join(
                f"{name} {d['estimate']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}] ({d['verdict']})"
                for name, d in compared.items()) + "."
    differs = None
    if "token TF-IDF" in value and value[main] <= value["token TF-IDF"]:
        differs = (f"On this model the {main} does not beat the TF-IDF baseline ({value[main]:.3f} vs "
                   f"{value['token TF-IDF']:.3f}), unlike the paper's gain.")
    return Finding("clones", title, text[0].upper() + text[1:], CLONES_EVALUATION,
                   numbers={"layer": result.layer, "concept_layers": list(result.concept_layers),
                            "cross_language_map_at_r": value, "evaluated_programs": evaluated,
                            "differences": compared},
                   paper="concept-layer embeddings improve cross-language clone detection (qualitative).",
                   differs=differs)


def findings(inputs: FindingsInputs) -> Findings:
    """Every finding, in the Overview's order."""
    items = [_count_finding(inputs, universal=False), _count_finding(inputs, universal=True),
             placement_finding(inputs), family_finding(inputs), concept_finding(inputs), clones_finding(inputs)]
    notes = []
    if inputs.selection is not None:
        notes.append(f"Neurons: PLS selection with the default parameters "
                     f"({', '.join(f'{k}={v}' for k, v in asdict(inputs.selection.params).items())}).")
    return Findings(inputs.model, inputs.corpus, items, notes)
