"""Fine-tuning: neuron-guided fine-tuning for code generation beside its baselines, run as background jobs.
Thin: widgets and charts here; planning, validation and training in neuro/experiments/finetune.py, jobs and
export in neuro/jobs."""

import altair as alt
import pandas as pd
import streamlit as st

from neuro.analysis.selectivity import SelectionParams, select_neurons
from neuro.code.sandbox import sandbox_warning
from neuro.cost import training_estimate
from neuro.experiments.finetune import (
    METHOD_LABELS,
    METHODS,
    NEURON_SETS,
    FinetuneConfig,
    compare_finetune,
    lora_rank_for,
    method_table,
    plan_finetune_runs,
    results_table,
    trainable_count,
)
from neuro.experiments.seeds import DEFAULT_SEEDS, INDISTINGUISHABLE, arms_table, cost, differences_table
from neuro.jobs.folders import JobRefused, job_metrics, list_jobs
from neuro.jobs.kinds import FINETUNE, finished_results
from neuro.jobs.runner import start_job
from neuro.params import spec
from views.ui import CHECKPOINT_HELP, corpus_key, corpus_split, export_panel, page_header, pls_statistics
from views.ui import mark_full_run, rerun_when_jobs_change, truncation_caption
from views.ui.charts import EVAL_CURVE, TRAIN_CURVE, loss_curves
from views.ui.params import number_input, slider

model, corpus = page_header(
    "Neuron-guided fine-tuning",
    "Train only the parameters a language's neurons own (their rows of the FFN gate/up projections "
    "and their columns of the down projection), and compare with the same number of random neurons, "
    "LoRA of a similar size, and full fine-tuning. Each run is a background job: it keeps running "
    "when you close the tab, and the Jobs page lists it.")
split = corpus_split(corpus)
st.caption(f"**Split** (sidebar): {split.caption()}. The neurons (and the random control's exclusion) are chosen "
           "from the PLS of the selection side only, training uses the target language's selection-side "
           "programs, and the losses before and after are measured on the evaluation side.")
stats = pls_statistics(model, split.selection)
truncation_caption(model, split.selection)


@st.cache_resource(show_spinner=False, max_entries=16)
def cached_selection(key: str, params: SelectionParams, _stats):
    return select_neurons(_stats, "pls", params)


with st.expander("Neuron selection (PLS on the selection side)", expanded=False):
    s1, s2, s3 = st.columns(3)
    q = slider(spec(SelectionParams, "candidate_quantile"), key="ft_q", container=s1)
    ratio = slider(spec(SelectionParams, "ratio"), key="ft_ratio", container=s2)
    top = slider(spec(SelectionParams, "top_fraction"), key="ft_top", container=s3)
selection = cached_selection(f"{model.identity}|{corpus_key(split.selection)}",
                             SelectionParams(candidate_quantile=q, ratio=ratio, top_fraction=top), stats)

# --------------------------------------------------------------------------- the run
c1, c2, c3 = st.columns([1, 1, 2])  # the methods' chips need room: cut short they read "Random neurons" as "Rando"
target = c1.selectbox("Target language", selection.languages, key="ft_target")
neuron_set = c2.radio("Neuron set", NEURON_SETS, key="ft_set",
                      format_func={"specific": "Language-specific",
                                   "specific+universal": "Specific + universal"}.get)
methods = c3.multiselect("Methods to compare", METHODS, default=["neurons", "random"], format_func=METHOD_LABELS.get,
                         key="ft_methods", help="Each method runs once per seed, with the same seeds.")
c4, c5, c6, c7 = st.columns(4)
steps = number_input(spec(FinetuneConfig, "steps"), key="ft_steps", container=c4)
lr = number_input(spec(FinetuneConfig, "lr"), key="ft_lr", container=c5)
batch_tokens = number_input(spec(FinetuneConfig, "batch_tokens"), key="ft_batch", container=c6)
n_seeds = int(c7.number_input("Seeds per method", min_value=1, max_value=20, value=len(DEFAULT_SEEDS), key="ft_seeds",
                              help="Seeds 0, 1, ...: each draws the random control's neurons, which programs share "
                                   "a batch, the batch order and LoRA's initialisation. 1 is the quick option."))
seeds = list(range(n_seeds))
c8, c9, c10 = st.columns([2, 1, 1])
pass_k = c8.checkbox("Also pass@1 on evaluation-side programs", key="ft_passk",
                     help="Generates a solution to each evaluation-side program with tests and runs it in the sandbox: "
                          "slow, and it needs a capable model.")
if pass_k and (warning := sandbox_warning()):
    st.warning(warning)
every = int(c9.number_input("Checkpoint every (steps)", min_value=0, max_value=1_000_000, value=50, key="ft_ckpt",
                            help=CHECKPOINT_HELP))
n_eval = len(split.evaluation)
eval_programs = int(c10.number_input(
    "Evaluate on N programs", min_value=0, max_value=n_eval, value=0, key="ft_eval_n",
    help=f"0: all {n_eval} evaluation-side programs. A smaller N is a quick run: a fixed subset that keeps each "
         "language's share and takes the same tasks in every language; the results say 'evaluated on N of M'."))
configs = plan_finetune_runs(model, selection, target, methods, seeds, lr=lr, neuron_set=neuron_set, split=split,
                             steps=steps, batch_tokens=batch_tokens, pass_at_k=pass_k, checkpoint_every=every,
                             eval_programs=eval_programs,
                             trust_remote_code=bool(st.session_state.get("trust_remote_code"))) if methods else []
total = sum(p.numel() for p in model.model.parameters())
for method in methods:
    config = next(c for c in configs if c.method == method)
    count = trainable_count(model, config)
    per_layer = ", ".join(f"L{layer}: {len(idx)}" for layer, idx in sorted(config.neurons.items())) or "none"
    what = {"neurons": f"**{config.n_neurons} {neuron_set} neurons** ({per_layer})",
            "random": f"**{config.n_neurons} random neurons** ({per_layer}), as many per layer as the {neuron_set} "
                      "set, drawn anew for each seed",
            "lora": f"**LoRA rank {lora_rank_for(model, config)}** on the FFN projections of layers "
                    f"{sorted(config.neurons)}, sized to the {neuron_set} neurons' parameter count",
            "full": "**every parameter**"}[method]
    st.markdown(f"{METHOD_LABELS[method]}: {what} · **{count:,} trainable parameters** "
                f"({100 * count / total:.3f} % of {total:,})")
if methods:
    st.caption(f"Cost: {cost(methods, seeds)} background jobs (seeds {', '.join(map(str, seeds))}).")
    st.caption("Cost: " + training_estimate(model, steps=steps, batch_tokens=batch_tokens, runs=len(configs),
                                            eval_programs=len(split.evaluation)).text() + ".")
if st.button("Start fine-tuning", type="primary", key="ft_start", disabled=not methods):
    for config in configs:
        try:
            info = start_job(FINETUNE, config, model, corpus)
            st.success(f"Started job `{info.id}`: {info.label}")
        except JobRefused as err:
            st.error(f"Not started ({config.method}, seed {config.seed}):\n"
                     + "\n".join(f"- {reason}" for reason in err.reasons))
            break


def seed_panel(results) -> None:
    """Per comparison (runs started together): mean ± sd per method over seeds, the per-seed values, and the
    neuron-guided run minus each other method per seed, with intervals over seeds and evaluation tasks."""
    comparisons = compare_finetune(results)
    if not comparisons:
        return
    st.subheader("Methods over seeds")
    for comparison in list(comparisons.values())[:3]:
        st.markdown(f"**{comparison.metric}** · {comparison.cost}")
        arms = arms_table(comparison)
        st.dataframe(arms.drop(columns=["mean", "ci_low", "ci_high"]), hide_index=True, width="stretch")
        points = pd.DataFrame([{"method": a.arm, "seed": s, "value": v} for a in comparison.arms
                               for s, v in zip(a.seeds, a.values)])
        base = alt.Chart(arms).encode(y=alt.Y("method:N", title=None, sort=None))
        bars = base.mark_errorbar(ticks=True).encode(x=alt.X("ci_low:Q", title="held-out loss change (nats)",
                                                             scale=alt.Scale(zero=False)), x2="ci_high:Q")
        mean = base.mark_point(filled=True, size=80, color="black").encode(
            x="mean:Q", tooltip=["method", "mean ± sd", "95% CI (seeds)"])
        seeds_dots = alt.Chart(points).mark_circle(opacity=0.5).encode(
            x="value:Q", y=alt.Y("method:N", sort=None), color="seed:N", tooltip=["method", "seed", "value"])
        st.altair_chart((bars + mean + seeds_dots).properties(
            title="Mean over seeds (black), 95% t interval (bars), each seed (dots)"), width="stretch")
        diffs = differences_table(comparison)
        if not diffs.empty:
            st.dataframe(diffs, hide_index=True, width="stretch")
        st.caption("Lower is better (a loss change < 0: the target language improved). Differences pair seed s of "
                   "one method with seed s of the other (same data order); the interval over evaluation tasks "
                   "resamples tasks of the per-task difference averaged over seeds. A difference whose interval "
                   f"covers 0 is called {INDISTINGUISHABLE}.")


def curve_frame(jobs, finished) -> pd.DataFrame:
    """The loss curves of the latest launch (the runs started together: every method and seed), one row per
    point: the training loss at each step, and the target's held-out loss before (step 0) and after (the last
    step) once a run has finished."""
    latest = jobs[0].params.get("comparison") or jobs[0].id
    rows = []
    for job in [j for j in jobs if (j.params.get("comparison") or j.id) == latest][:24]:
        method = METHOD_LABELS.get(job.params.get("method"), job.params.get("method", "?"))
        run = f"{method}, seed {job.params.get('seed', 0)} ({job.id[-6:]})"
        for point in job_metrics(job):
            if point.loss is not None:
                rows.append({"method": method, "run": run, "curve": TRAIN_CURVE, "step": point.step,
                             "loss": point.loss})
        result = finished.get(job.id)
        if result is not None and result.heldout_before.get(result.target) is not None:
            rows += [{"method": method, "run": run, "curve": EVAL_CURVE, "step": step, "loss": loss}
                     for step, loss in ((0, result.heldout_before[result.target]),
                                        (result.steps, result.heldout_after[result.target]))]
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- live jobs and results
@st.fragment(run_every=2.0)
def live_panel() -> None:
    jobs = list_jobs(kind="finetune")
    rerun_when_jobs_change(jobs, "ft_jobs_seen")  # a run that finished appears in the Export panel below
    if not jobs:
        st.info("No fine-tuning runs yet.")
        return
    for job in [j for j in jobs if j.active]:
        st.progress(job.fraction, text=job.progress_text())
    finished = finished_results(jobs, FINETUNE)
    curves = curve_frame(jobs, finished)
    if not curves.empty:
        st.altair_chart(loss_curves(curves, "Loss of the latest launch: training (solid) and the target's held-out "
                                            "loss before → after (dashed)"), width="stretch")
    latest = jobs[0].params.get("comparison") or jobs[0].id
    launch = {i: r for i, r in finished.items() if (r.config.comparison or i) == latest}
    if launch:
        st.markdown("**Latest launch, one row per method** (means over its seeds)")
        st.dataframe(method_table(launch).round(4), hide_index=True, width="stretch")
    seed_panel(finished)
    table = results_table(finished)
    st.subheader("Finished runs")
    if table.empty:
        st.caption("Results appear here when a run finishes.")
    else:
        st.dataframe(table.round(4), hide_index=True, width="stretch")
        st.caption("Losses: mean next-token cross-entropy on the evaluation side of each run's split (split: "
                   "its evaluated share and seed; evaluated: N of the M evaluation programs it scored). "
                   "target_delta = after - before (< 0: "
                   "the target language improved), paired per program; others_delta_mean: the other languages' "
                   "mean change; *_ci: "
                   "95 % bootstrap intervals over evaluation tasks. "
                   "Memory: peak during training (process RSS on a CPU, allocated memory on a GPU) and its "
                   "increase over the level before training; optimizer_state counts AdamW moment elements.")


mark_full_run("ft_jobs_seen")
live_panel()

# --------------------------------------------------------------------------- export
export_panel("finetune", "ft_export")
