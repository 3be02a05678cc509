"""Neurons: where the language-specific and universal neurons are, what they respond to, and proof by
ablation. Thin: widgets and charts here, computation in neuro/."""

import dataclasses

import pandas as pd
import streamlit as st

from neuro.analysis.sensitivity import sensitivity
from neuro.analysis.selectivity import (
    LapeParams,
    SelectionParams,
    language_relations,
    overlap,
    select_neurons,
)
from neuro.code.corpus import LANGS
from neuro.code.syntax import align_tokens, detect_language, not_code_share
from neuro.instrument.statistics import trace_tokens
from neuro.jobs.analyses import AnalysisConfig, ablation_passes
from neuro.jobs.kinds import ABLATION as ABLATION_JOB
from neuro.jobs.kinds import STATISTICS as STATISTICS_JOB
from neuro.params import spec
from neuro.results.statistics import ABLATION, CHANCE, UNIVERSALITY
from views.ui import (
    charts,
    corpus_key,
    corpus_split,
    lazy_tabs,
    page_header,
    pls_statistics,
    small_enough_to_auto_run,
    stats_from_cache,
    truncation_caption,
)
from views.ui.links import intervene_here, neuron_link, open_neuron
from views.ui.params import slider
from views.ui.progress import cancelled, cost_caption, follow_job, metered_bar, start_background

MAX_PASTE = 20_000

model, corpus = page_header(
    "Neurons",
    "Which FFN neurons are specific to one programming language, which are shared by all, "
    "and what happens when they are silenced.")
split = corpus_split(corpus)
corpus = split.selection  # neurons are chosen here; the Ablation tab measures them on split.evaluation
stats = pls_statistics(model, corpus)


@st.cache_resource(show_spinner=False, max_entries=16)
def cached_selection(key: str, method: str, params, _stats):
    return select_neurons(_stats, method, params)


@st.cache_resource(show_spinner=False, max_entries=16)
def cached_views(key: str, method: str, params, _stats) -> dict:
    """Everything the page derives from one selection, computed once per parameter setting."""
    chosen = cached_selection(key, method, params, _stats)
    table = chosen.selected()
    labels = [f"L{r.layer} N{r.neuron} ({r.cls}{': ' + str(r.langs) if r.langs else ''})" for r in table.itertuples()]
    return {"selection": chosen, "counts": chosen.counts_by_language(), "share": chosen.share(),
            "by_layer": chosen.counts_by_layer(), "table": table, "labels": labels}


def analysis_config(method: str, params, **more) -> AnalysisConfig:
    """What a background analysis of this page's selection runs on (neuro.jobs.analyses)."""
    return AnalysisConfig(model=model.source, method=method, params=dataclasses.asdict(params),
                          n_selection=len(corpus), corpus=corpus_key(corpus),
                          trust_remote_code=bool(st.session_state.get("trust_remote_code", False)), **more)


def per_program_results(method: str, params):
    """The chance level and universal-neuron stability (CHANCE, UNIVERSALITY), kept in the cache: computed here
    when the statistics have the per-program scores they come from. Where the statistics leave those out (the
    shipped statistics of the demo), they are captured again first (a forward and backward pass over the
    selection programs): its cost is said before it starts; a short one runs here with a progress bar, a long
    one (a new score, e.g. attribution, on a real model) as a background job the page follows. (None, None)
    while there is nothing to compute them from."""
    results = tuple(recipe.get(model, corpus, method=method, params=params, compute=stats.has_units())
                    for recipe in (CHANCE, UNIVERSALITY))
    if all(r is not None for r in results) or not (stats.units_omitted and model.weights_loaded):
        return results
    config = analysis_config(method, params)
    what = "per-program scores for the chance level and universal-neuron stability"
    state = follow_job(STATISTICS_JOB.name, config, what.capitalize())
    if state in ("queued", "running"):
        return None, None
    st.info("The chance level and the universal neurons' stability for these parameters are computed from "
            "per-program scores that the shipped statistics leave out: the statistics are captured once more, "
            "with them, then kept in the cache.")
    est = cost_caption("statistics", model, corpus, what="one forward and backward pass, then the permutations",
                       background=True)
    if est.long:
        if st.button("Compute them in the background", key="units_job", type="primary"):
            start_background(STATISTICS_JOB, config, model, corpus)
            st.rerun()
        return None, None
    if not small_enough_to_auto_run(model, corpus) and not st.button("Compute them now", key="units_now"):
        return None, None
    with metered_bar(f"Per-program scores for the {what}", "statistics", model, len(corpus), to_exit=True) as progress:
        results = tuple(recipe.get(model, corpus, method=method, params=params, progress=progress)
                        for recipe in (CHANCE, UNIVERSALITY))
    stats_from_cache.clear()
    return results


@st.cache_resource(show_spinner=False, max_entries=8)
def cached_sensitivity(key: str, params, _stats) -> pd.DataFrame:
    return sensitivity(_stats, params).drop(columns="is_base")


def p_text(p: float) -> str:
    return "–" if p != p else f"{p:.3f}" if p >= 0.001 else f"{p:.0e}"


@st.cache_resource(show_spinner=False, max_entries=16)
def cached_overlap(key: str, method: str, params, _stats) -> pd.DataFrame:
    chosen = cached_selection(key, method, params, _stats)
    other = cached_selection(key, "lape" if method == "pls" else "pls", None, _stats)
    return overlap(chosen, other).round(3)


@st.cache_data(show_spinner=False, max_entries=32)
def export_bytes(key: str, filters: str, kind: str, _view: pd.DataFrame) -> bytes:
    return _view.to_csv(index=False).encode() if kind == "csv" else _view.to_parquet(index=False)


@st.cache_resource(show_spinner=False, max_entries=4)
def cached_relations(key: str, _stats):
    return language_relations(_stats)


# --------------------------------------------------------------------------- selection parameters
stats_key = f"{model.identity}|{corpus_key(corpus)}"
with st.expander("Selection method and parameters", expanded=False):
    method = st.radio("Method", ["pls", "lape"], horizontal=True, key="neurons_method",
                      format_func=lambda m: {"pls": "PLS (activation x gradient)", "lape": "LAPE (entropy)"}[m])
    c1, c2, c3 = st.columns(3)
    if method == "pls":
        q = slider(spec(SelectionParams, "candidate_quantile"), key="neurons_q", container=c1)
        ratio = slider(spec(SelectionParams, "ratio"), key="neurons_ratio", container=c2)
        top = slider(spec(SelectionParams, "top_fraction"), key="neurons_top", container=c3)
        normalize = st.radio(
            "Scale", ["language_layer", "language", "none"], horizontal=True, key="neurons_norm",
            format_func={"language_layer": "per language and layer (default)", "language": "per language",
                         "none": "raw PLS (the paper)"}.get,
            help="PLS grows with a language's loss (harder language, larger gradients) and differs several-fold "
                 "between layers. Dividing by the mean of each language (and layer) makes selection reflect "
                 "specialization rather than scale; 'raw' compares PLS values as the paper defines them.")
        score = st.radio(
            "Score", ["pls", "attribution"], horizontal=True, key="neurons_score",
            format_func={"pls": "PLS: mean |a x dL/da| (the paper)",
                         "attribution": "attribution: -(1/T) sum a x dL/da"}.get,
            help="PLS credits a neuron for a large product of either sign, including neurons whose removal "
                 "would LOWER a language's loss. The attribution is the first-order estimate of the change in "
                 "a program's mean loss when the neuron is zeroed (signs kept), so its selections are the "
                 "neurons ablation should hurt. L is each program's summed next-token loss.")
        if stats.units_omitted and model.weights_loaded:
            cost_caption("statistics", model, corpus, what="a score or parameters whose chance level is not "
                         "cached yet first capture per-program scores, one forward and backward pass")
        params = SelectionParams(candidate_quantile=q, ratio=ratio, top_fraction=top, normalize=normalize,
                                 score=score)
    else:
        top = slider(spec(LapeParams, "top_fraction"), key="lape_top", container=c1)
        fq = slider(spec(LapeParams, "filter_quantile"), key="lape_filter", container=c2)
        aq = slider(spec(LapeParams, "activation_quantile"), key="lape_bar", container=c3)
        params = LapeParams(top_fraction=top, filter_quantile=fq, activation_quantile=aq)
views = cached_views(stats_key, method, params, stats)
selection, counts, share = views["selection"], views["counts"], views["share"]
st.markdown(
    f"**{selection.total:,} neurons** ({selection.n_layers} layers x {selection.n_neurons:,}). "
    f"Candidate threshold: **{selection.threshold:.4g}** "
    + (f"(quantile of max {selection.score_label}, scale: {params.normalize})." if method == "pls"
       else "(activation probability bar).")
    + f" Language-specific: **{100 * share['specific']:.2f} %**, universal: **{100 * share['universal']:.2f} %** "
    "(paper, Llama-3.1-8B / Qwen2.5-Coder-32B: < 0.7 % and < 0.9 %).")
chance, universal = per_program_results(method, params)
p, p_holm = (chance.p_values(), chance.p_holm()) if chance is not None else ({}, {})
cols = st.columns(len(counts))
for col, (name, value) in zip(cols, counts.items()):
    if name in p:
        col.metric(name, value, help=f"p = (1 + permutations selecting at least {value}) / (1 + {chance.permutations})"
                   f", language labels shuffled {chance.permutation}; Holm-corrected over the languages. "
                   f"Shuffled labels select on average {chance.mean()[name]:.1f} (max {chance.max()[name]}).")
        col.caption(f"Holm p {p_text(p_holm[name])}" + (" · above chance" if p_holm[name] < 0.05 else
                                                        " · not distinguishable from shuffled labels"))
    elif name == "universal" and universal is not None:
        u, top = universal.spread("universal"), universal.spread("top_by_mean")
        col.metric(name, value, help="A label permutation cannot test universality (shuffled languages are "
                   "exchangeable). Split-half Jaccard: the same rule on two disjoint halves of the programs, "
                   f"{universal.halvings} random halvings (by {universal.halves_by}), beside as many top neurons "
                   "by mean score over the languages.")
        col.caption(f"split-half Jaccard {u.mean:.2f} (top by mean {top.mean:.2f}); "
                    f"{universal.top_by_mean_overlap} of {universal.count} in the top {universal.count} by mean")
    else:
        col.metric(name, value)
st.caption(f"Split (sidebar): {split.caption()}; neurons are chosen on the selection side. " + (
    f"p-values: the count the same rule gives when the language labels are shuffled {chance.permutation} "
    f"({chance.permutations} permutations; the smallest possible p is {p_text(chance.p_floor)}), "
    "Holm-corrected over the languages. " if chance is not None else "")
    + ("Universal neurons are tested by split-half stability and against an importance-matched control, not by "
       "shuffled labels." if universal is not None else ""))
if universal is not None:
    with st.expander("Universal neurons: stability, matched control, count by top fraction"):
        rows = [{"set": name, "split-half Jaccard (mean)": universal.spread(key).mean,
                 "sd": universal.spread(key).sd}
                for name, key in (("universal", "universal"), ("top by mean score (as many)", "top_by_mean"),
                                  ("importance-matched control", "control"))]
        st.dataframe(pd.DataFrame(rows).round(3), width="stretch", hide_index=True)
        st.caption(f"{universal.top_by_mean_overlap} of the {universal.count} universal neurons are also among the "
                   f"top {universal.count} neurons by mean score over the languages. The matched control: per layer "
                   "as many neurons, the highest by mean score among those neither universal nor specific.")
        st.dataframe(pd.DataFrame(universal.by_fraction).rename(columns={"top_fraction": "top fraction",
                                                                         "cap": "cap (the rule allows)"}),
                     width="stretch", hide_index=True)
if method == "pls":
    with st.expander("How the counts move with the scale and thresholds"):
        st.dataframe(cached_sensitivity(stats_key, params, stats), width="stretch", hide_index=True)
        st.caption("One parameter varied at a time around the current setting (first row). Which languages have "
                   "specific neurons can hinge on the scale: compare the raw and per-language rows.")
truncation_caption(model, corpus)


# --------------------------------------------------------------------------- heatmap
def layer_map() -> None:
    by_layer = views["by_layer"]
    as_share = st.toggle("Show share of the layer's neurons (%)", key="neurons_share")
    long = by_layer.reset_index().melt(id_vars="layer", var_name="group", value_name="neurons")
    if as_share:
        long["neurons"] = 100 * long["neurons"] / selection.n_neurons
    event = st.altair_chart(charts.pick_heatmap(long, "group", "layer", "neurons", scheme="oranges",
                                                title="Selected neurons per layer",
                                                x_sort=[*selection.languages, "universal"],
                                                fmt=".2f" if as_share else "d"),
                            width="stretch", on_select="rerun", key="map_cell")
    st.caption("Rows: layers (0 = closest to the input). Columns: the language a neuron is specific to, "
               "and universal neurons (high PLS in every language). Click a cell to list its neurons below.")
    _open_from_layer_map(by_layer, ((event or {}).get("selection", {}).get("cell") or [None])[0])
    other_name = "LAPE" if method == "pls" else "PLS"
    if st.toggle(f"Compare with {other_name} (agreement of the specific sets per language)", key="neurons_cmp"):
        st.dataframe(cached_overlap(stats_key, method, params, stats), width="stretch")


# --------------------------------------------------------------------------- table
def neuron_table() -> None:
    table = views["table"]
    f1, f2, f3 = st.columns(3)
    langs = f1.multiselect("Language", [*selection.languages, "universal"], key="table_langs")
    layer_range = f2.slider("Layers", 0, selection.n_layers - 1, (0, selection.n_layers - 1), key="table_layers")
    classes = f3.multiselect("Class", ["specific", "universal"], key="table_cls")
    view = table[table.layer.between(*layer_range)]
    if classes:
        view = view[view.cls.isin(classes)]
    if langs:
        keep = view.cls.astype(str).eq("universal") & ("universal" in langs)
        keep |= view.langs.astype(str).apply(lambda s: any(x in s.split(",") for x in langs))
        view = view[keep]
    shown = 1000
    st.caption(f"{len(view):,} of {len(table):,} selected neurons" + (
        f" (the first {shown:,} shown; the downloads hold all)" if len(view) > shown else "")
        + ". Click a row to open its neuron's page.")
    rows = view.head(shown)
    event = st.dataframe(rows, width="stretch", hide_index=True, on_select="rerun", selection_mode="single-row",
                         key="table_pick")
    if event.selection.rows:  # positions in the frame shown (filtered), not in the whole table
        picked = rows.iloc[event.selection.rows[0]]
        open_neuron(int(picked.layer), int(picked.neuron))
    filters = f"{stats_key}|{method}|{params}|{langs}|{layer_range}|{classes}"
    d1, d2 = st.columns(2)
    d1.download_button("Download CSV", export_bytes(filters, filters, "csv", view), "neurons.csv", "text/csv")
    d2.download_button("Download parquet", export_bytes(filters, filters, "parquet", view), "neurons.parquet",
                       "application/octet-stream")


# --------------------------------------------------------------------------- detail
def _open_from_layer_map(by_layer: pd.DataFrame, cell: dict | None) -> None:
    """Below the layer map: a layer's selected neurons as links to their pages (those of the clicked cell's
    group when a cell is clicked), and any neuron of it."""

    group = None
    if cell and "layer" in cell:
        if st.session_state.get("_map_cell") != cell:  # a new click picks the layer (the selectbox may change it)
            st.session_state["map_layer"] = int(cell["layer"])
        st.session_state["_map_cell"] = cell
        group = cell.get("group")
    with st.container(border=True):
        c1, c2, c3 = st.columns([1, 1, 3])
        layer = int(c1.selectbox("Open a neuron of layer", list(by_layer.index), key="map_layer",
                                 index=int(by_layer.sum(axis=1).to_numpy().argmax())))
        neuron = int(c2.number_input("Neuron", 0, selection.n_neurons - 1, 0, key="map_neuron"))
        with c3:
            neuron_link(layer, neuron, f"Open L{layer} N{neuron}")
        chosen = views["table"][views["table"].layer == layer]
        if group == "universal":
            chosen = chosen[chosen.cls.astype(str) == "universal"]
        elif group:
            chosen = chosen[chosen.langs.astype(str).str.split(",").apply(lambda langs: group in langs)]
        if len(chosen):
            st.caption(f"Selected in layer {layer}{f' ({group})' if group else ''}: {len(chosen)}, the first 12:")
            cols = st.columns(4)
            for i, row in enumerate(chosen.head(12).itertuples()):
                with cols[i % 4]:
                    neuron_link(row.layer, row.neuron, f"L{row.layer} N{row.neuron} "
                                f"({row.langs if str(row.cls) == 'specific' else 'universal'})")
        else:
            st.caption(f"No neuron of layer {layer}{f' ({group})' if group else ''} is selected; any can be opened "
                       "by its index.")


def neuron_detail() -> None:
    """Superseded by the Neuron page (any neuron, its own URL): old ?tab=Neuron+detail links land here."""

    table, labels = views["table"], views["labels"]
    st.info("Every neuron now has its own page (Neuron, in the navigation; its URL names the neuron). Pick one:")
    if not table.empty:
        pick = st.selectbox("Selected neuron", range(len(table)), format_func=labels.__getitem__, key="detail_pick")
        row = table.iloc[pick]
        neuron_link(int(row.layer), int(row.neuron), f"Open L{int(row.layer)} N{int(row.neuron)}")
    c1, c2, c3 = st.columns([1, 1, 2])
    layer = int(c1.number_input("Layer", 0, selection.n_layers - 1, 0, key="detail_layer"))
    neuron = int(c2.number_input("Neuron", 0, selection.n_neurons - 1, 0, key="detail_neuron"))
    with c3:
        neuron_link(layer, neuron, f"Open any neuron: L{layer} N{neuron}")


# --------------------------------------------------------------------------- relations
def relations() -> None:
    relations = cached_relations(stats_key, stats)
    left, right = st.columns(2)
    left.altair_chart(charts.matrix_heatmap(relations.similarity.round(3), "language", "other", "cosine",
                                            title="Similarity of the languages' PLS profiles", scheme="greens"),
                      width="stretch")
    right.altair_chart(charts.dendrogram(relations.tree.segments(), relations.tree.leaf_positions(),
                                         title="Average-linkage tree"), width="stretch")
    st.caption("The paper reports a family-tree-like structure (e.g. C++ and Java close, Python apart).")


# --------------------------------------------------------------------------- ablation
def _interval(estimate: float, low: float, high: float, digits: int = 4) -> str:
    return f"{estimate:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}]"


def _effects_table(effects) -> pd.DataFrame:
    """The ablation's per-group table as the page shows it: effects with intervals, p-values with draws."""
    rows = []
    for name, g in effects.groups.items():
        m, u = g.controls["matched"], g.controls["uniform"]
        rows.append({
            "group": name, "neurons": g.neurons,
            "effect (nats) [95 % CI]": _interval(g.effect.estimate, g.effect.low, g.effect.high),
            f"matched mean ({m.draws} draws)": f"{m.mean:+.4f}",
            "p matched (Holm)": f"{m.p:.3g} ({m.p_holm:.3g})",
            f"uniform mean ({u.draws} draws)": f"{u.mean:+.4f}",
            "p uniform (Holm)": f"{u.p:.3g} ({u.p_holm:.3g})",
            "selectivity [95 % CI]": _interval(g.selectivity.estimate, g.selectivity.low, g.selectivity.high)
            if g.selectivity else "",
            "p selectivity, labels permuted (Holm)": f"{g.p_labels:.3g} ({g.p_labels_holm:.3g})"
            if g.selectivity else "",
            "evenness [95 % CI]": _interval(g.evenness.estimate, g.evenness.low, g.evenness.high, 2)
            if g.evenness else ""})
    return pd.DataFrame(rows).set_index("group")


def ablation_tab() -> None:
    from neuro.analysis.ablation_effects import ablation_effects

    st.markdown("Zero each group's neurons and measure the change of mean next-token loss per language on the "
                f"**evaluation** programs ({len(split.evaluation)}, none of them used to choose the neurons). "
                "**Effect**: the change on the group's own language (universal: the mean over languages), in nats, "
                "with a 95 % interval from resampling evaluation tasks. **Controls**: the same number of neurons per "
                "layer, *matched* on importance (same layer and decile of the score that selected the group) or "
                "*uniform* (same layer); p = (1 + draws at least as extreme) / (1 + draws), two-sided for PLS "
                "(its sign is not known in advance), one-sided for attribution, Holm-corrected across languages. "
                "**Selectivity** = own-language change minus the mean change on the others, tested against the "
                "evaluation programs' language labels permuted within tasks (the test of *language*: the controls "
                "test importance); **evenness** (universal) "
                "= smallest language's rise / mean rise, beside the top-mean control (the same number of the "
                "highest-mean neurons that are neither universal nor specific).")
    left, right = st.columns(2)
    draws = left.number_input("Matched draws per group", 1, 1000, 100, key="ablation_draws")
    uniform = right.number_input("Uniform draws per group", 0, 1000, 20, key="ablation_uniform")
    passes = ablation_passes(selection.counts_by_language(), int(draws), int(uniform))
    est = cost_caption("forward", model, split.evaluation, passes=passes,
                       what="one forward pass over the evaluation programs per ablated set", background=True)
    st.caption(f"The smallest p-value the matched draws can give is {2 / (1 + int(draws)):.3g} two-sided, "
               f"{1 / (1 + int(draws)):.3g} one-sided.")
    key = f"ablation|{stats_key}|{method}|{params}|{split.params}"
    stored = st.session_state.get(key)
    if stored is None or (stored.draws("matched"), stored.draws("uniform")) != (int(draws), int(uniform)):
        try:  # computed earlier, here or by a background job
            stored = ABLATION.get(model, split.evaluation, selection=selection, draws=int(draws),
                                  uniform_draws=int(uniform), compute=False)
        except ValueError:
            stored = None
        st.session_state.pop(key, None)
        if stored is not None:
            st.session_state[key] = stored
    config = analysis_config(method, params, draws=int(draws), uniform_draws=int(uniform))
    if stored is None and follow_job(ABLATION_JOB.name, config, "Ablation") not in ("queued", "running"):
        background = st.toggle("Run as a background job", value=est.long, key="ablation_background",
                               help="The page stays usable (and can be left), the job can be cancelled, and the "
                                    "result lands in the cache this tab reads. A cancelled run started again goes "
                                    "on from the passes it finished.")
        cancelled("ablation_cancel")
        if st.button("Run ablation", type="primary", key="run_ablation"):
            if background:
                start_background(ABLATION_JOB, config, model, [*corpus, *split.evaluation])
                st.rerun()
            try:
                with metered_bar("Ablating (one forward pass per ablated set)", "forward", model,
                                 passes * len(split.evaluation), cancel="ablation_cancel") as progress:
                    st.session_state[key] = ABLATION.get(model, split.evaluation, selection=selection,
                                                         draws=int(draws), uniform_draws=int(uniform),
                                                         progress=progress)
            except ValueError as err:
                st.error(str(err))
    result = st.session_state.get(key)
    if result is not None:
        effects = st.session_state.get(key + "|effects")
        if effects is None or effects[0] is not result:
            effects = (result, ablation_effects(result))
            st.session_state[key + "|effects"] = effects
        effects = effects[1]
        left, right = st.columns(2)
        left.altair_chart(charts.matrix_heatmap(result.delta.round(4), "ablated", "evaluated", "loss change",
                                                title="Selected neurons", scheme="reds"), width="stretch")
        right.altair_chart(charts.matrix_heatmap(result.delta_control("matched").round(4), "ablated", "evaluated",
                                                 "loss change", title="Matched controls (mean of the draws)",
                                                 scheme="reds"), width="stretch")
        st.altair_chart(charts.ablation_bars(effects.table(), title="Own-language loss change [95 % CI] vs the "
                                             "controls' means"), width="stretch")
        st.dataframe(_effects_table(effects), width="stretch")
        st.caption(f"Intervals over {effects.units} evaluation {effects.unit}s ({effects.resamples} resamples); "
                   f"p-values {effects.alternative}; label permutations: "
                   f"{max(g.label_permutations for g in effects.groups.values())}; the universal group is a "
                   "family of its own.")
        if effects.top_mean is not None:
            t, u = effects.top_mean, effects.groups["universal"]
            d = t.evenness_difference
            difference = _interval(d.estimate, d.low, d.high, 2)
            st.markdown(f"**Universal vs its top-mean control** ({t.neurons} neurons): effect "
                        f"{_interval(u.effect.estimate, u.effect.low, u.effect.high)} vs "
                        f"{_interval(t.effect.estimate, t.effect.low, t.effect.high)}; evenness "
                        f"{_interval(u.evenness.estimate, u.evenness.low, u.evenness.high, 2)} vs "
                        f"{_interval(t.evenness.estimate, t.evenness.low, t.evenness.high, 2)} "
                        f"(universal minus control {difference}).")


# --------------------------------------------------------------------------- token inspector
def token_inspector() -> None:
    code = st.text_area("Paste code", height=200, key="inspect_code",
                        value=next((s.code for s in corpus if s.lang == "python"), corpus[0].code))
    if len(code) > MAX_PASTE:
        st.warning(f"Only the first {MAX_PASTE:,} characters are inspected.")
        code = code[:MAX_PASTE]
    if not code.strip():
        st.info("Paste some code to see its tokens coloured by a neuron's activation.")
    else:
        guess = detect_language(code)
        failing = not_code_share(guess)
        if failing is not None:
            st.warning(f"This does not look like code: at least {failing:.0%} of it fails to parse in the grammar "
                       f"that fits it best (the detector's guess, {guess.lang} at {guess.confidence:.0%}, rests on "
                       "no cue of that language). The activations below are the model's response to it all the same.")
        # fixed labels and defaults: a widget whose label or default moved with the pasted code was a new widget,
        # and the chosen language, layer and neuron were reset on every edit
        if st.session_state.get("inspect_code_seen") != code:
            st.session_state["inspect_code_seen"] = code
            st.session_state["inspect_lang"] = guess.lang  # a new program starts on its detected language
        c1, c2, c3 = st.columns(3)
        lang = c1.selectbox("Language", LANGS, key="inspect_lang",
                            help=f"Detected: {guess.lang} at {guess.confidence:.0%} confidence.")
        layer = c2.number_input("Layer", 0, model.n_layers - 1, value=model.n_layers // 2, key="inspect_layer")
        neuron = c3.number_input("Neuron (-1: the layer's strongest on this code)", -1, model.n_neurons - 1,
                                 value=-1, key="inspect_neuron")
        c1.caption(f"detected {guess.lang}, {guess.confidence:.0%}")
        trace = trace_tokens(model, code, layers=[int(layer)])
        acts = trace.activations[0]
        chosen = int(abs(acts).max(0).argmax()) if neuron < 0 else int(neuron)
        nodes = align_tokens(code, lang, trace.offsets)
        st.caption(f"Neuron L{layer} N{chosen}; red = positive, blue = negative; hover a token for its value "
                   "and syntax node.")
        st.html(charts.token_html(code, trace.offsets, acts[:, chosen], [n.type for n in nodes]))
        l1, l2 = st.columns(2)
        with l1:
            neuron_link(int(layer), chosen, label=f"Open neuron L{layer} N{chosen}'s page")
        l2.button(f"Intervene on L{layer} N{chosen} in this code", icon=":material/tune:", key="inspect_intervene",
                  on_click=intervene_here, args=(int(layer), chosen, code))


def intervene_tab() -> None:
    from views.intervene_view import intervene_panel

    intervene_panel(model, split, selection)


# --------------------------------------------------------------------------- tabs
TABS = {"Layer map": layer_map, "Neuron table": neuron_table, "Neuron detail": neuron_detail,
        "Language relations": relations, "Ablation": ablation_tab, "Token inspector": token_inspector,
        "Intervene": intervene_tab}
lazy_tabs(TABS)
