"""Transfer: concept-layer-guided summarization transfer from one language to the others, as background
jobs. Thin: widgets and charts here; the experiment in neuro/experiments/transfer.py, jobs in neuro/jobs."""

import math

import altair as alt
import pandas as pd
import streamlit as st

from neuro.analysis.uncertainty import Interval
from neuro.cost import training_estimate
from neuro.experiments.seeds import DEFAULT_SEEDS, INDISTINGUISHABLE, arms_table, cost, differences_table
from neuro.experiments.transfer import (
    LAYER_CHOICES,
    METHODS,
    TransferConfig,
    compare_transfer,
    comparison_table,
    evaluation_total,
    plan_transfer_runs,
    trainable_count,
)
from neuro.jobs.folders import JobRefused, job_metrics, list_jobs
from neuro.jobs.kinds import TRANSFER, finished_results
from neuro.jobs.runner import start_job
from neuro.params import spec
from views.ui import CHECKPOINT_HELP, corpus_split, export_panel, mark_full_run, page_header, rerun_when_jobs_change
from views.ui.params import number_input
from views.ui.progress import progress_bar
from views.ui.state import scoped_state

model, corpus = page_header(
    "Summarization transfer",
    "Teach the model to write a one-sentence summary of code in ONE language, changing only chosen "
    "layers, then ask it to summarize the other languages it never saw summarized. The paper's claim: "
    "adapting the concept layers (where languages share semantics) transfers best. Scores: smoothed "
    "BLEU-4 (CodeXGLUE) and ROUGE-L on the evaluation side of the split. Every language gets the same "
    "prompt: the code, then a plain `Summary:` line (no comment marker), so the cue itself is never new.")
languages = sorted({s.lang for s in corpus if s.summary.strip()})
if not languages:
    st.warning("No program in this corpus has a summary. Use the demo corpus or HumanEval-X (docstring first "
               "sentences).")
    st.stop()
split = corpus_split(corpus)
st.caption(f"**Split** (sidebar): {split.caption()}. The concept layers are found and the model adapts on the "
           "selection side (source language only); summaries are scored on the evaluation side.")

c1, c2, c3 = st.columns(3)
source = c1.selectbox("Source language (trained on)", languages, key="tr_source")
choice = c2.radio("Layers to adapt", LAYER_CHOICES, key="tr_layers", horizontal=True,
                  format_func={"concept": "Concept", "all": "All", "lower": "Lower", "custom": "Custom"}.get)
method = c3.radio("Adaptation", METHODS, key="tr_method", horizontal=True,
                  format_func={"lora": "LoRA on the layers", "full": "All weights of the layers"}.get)
custom = []
if choice == "custom":
    custom = st.multiselect("Layers", list(range(model.n_layers)), default=[model.n_layers // 2], key="tr_custom")
c4, c5, c6, c7 = st.columns(4)
steps = number_input(spec(TransferConfig, "steps"), key="tr_steps", container=c4)
lr = number_input(spec(TransferConfig, "lr"), key="tr_lr", container=c5)
rank = number_input(spec(TransferConfig, "rank"), key="tr_rank", container=c6)
n_seeds = int(c7.number_input("Seeds per choice", min_value=1, max_value=20, value=len(DEFAULT_SEEDS), key="tr_seeds",
                              help="Seeds 0, 1, ...: each decides which pairs share a batch, the batch order and "
                                   "LoRA's initialisation. 1 is the quick option."))
seeds = list(range(n_seeds))
c8, c9, c10 = st.columns([2, 1, 1])
strip = c8.checkbox("Remove comments and docstrings from the code", value=True, key="tr_strip",
                    help="The demo corpus states each summary in a comment; without this the model learns to copy.")
every = int(c9.number_input("Checkpoint every (steps)", min_value=0, max_value=1_000_000, value=50, key="tr_ckpt",
                            help=CHECKPOINT_HELP))
n_eval = evaluation_total(corpus, TransferConfig(model=model.source, source=source), split)
eval_programs = int(c10.number_input(
    "Evaluate on N programs", min_value=0, max_value=max(n_eval, 1), value=0, key="tr_eval_n",
    help=f"0: all {n_eval} evaluation-side programs, each summarized before and after training (most of a short "
         "run's time). A smaller N is a quick run: a fixed subset that keeps each language's share and takes the "
         "same tasks in every language; the results say 'evaluated on N of M'."))
options = dict(method=method, rank=rank, steps=steps, lr=lr, strip_comments=strip, eval_programs=eval_programs,
               checkpoint_every=every, trust_remote_code=bool(st.session_state.get("trust_remote_code")))


def plan(layer_choices: list[str]) -> list[TransferConfig]:
    with (st.spinner("Finding the concept layers (cached after the first time)…"),
          progress_bar("Layer scores for the concept layers", lazy=True) as progress):
        return plan_transfer_runs(model, split, source, layer_choices, seeds, custom, **options, progress=progress,
                                  concept_override=scoped_state(model, corpus).concept_layers)  # the Layers page


config = plan([choice])[0]
st.markdown(f"**Layers {config.layers}** — {config.layer_note}. "
            f"**{trainable_count(model, config):,} trainable parameters.**")
compared = [plan([c])[0] for c in ("concept", "all", "lower")]
st.caption("Trainable parameters of each choice (they are not matched: compare them beside the scores): "
           + "; ".join(f"{c.layer_choice} {c.layers}: {trainable_count(model, c):,}" for c in compared)
           + ". The lower layers lie below the concept layers, never among them.")


def start(configs: list[TransferConfig]) -> None:
    for cfg in configs:
        try:
            info = start_job(TRANSFER, cfg, model, corpus)
            st.success(f"Started job `{info.id}`: {info.label}")
        except JobRefused as err:
            st.error(f"Not started ({cfg.layer_choice} layers, seed {cfg.seed}):\n"
                     + "\n".join(f"- {r}" for r in err.reasons))
            return


st.caption("Cost of one run: " + training_estimate(
    model, steps=config.steps, batch_tokens=config.batch_size * (config.max_code_tokens + config.max_summary_tokens),
    eval_programs=len(split.evaluation), eval_kind="generation", eval_passes=2 if config.eval_before else 1).text()
    + f". Start transfer: {cost([choice], seeds)}; Compare: {cost(['concept', 'all', 'lower'], seeds)}.")
b1, b2 = st.columns(2)
if b1.button("Start transfer", type="primary", key="tr_start", help=f"{cost([choice], seeds)} jobs"):
    start(plan([choice]))
if b2.button("Compare concept / all / lower layers", key="tr_compare",
             help=f"{cost(['concept', 'all', 'lower'], seeds)} jobs with the same settings; on a CPU they share the "
                  "cores."):
    start(plan(["concept", "all", "lower"]))
st.caption(f"Cost: one layer choice is {cost([choice], seeds)} jobs; the comparison "
           f"{cost(['concept', 'all', 'lower'], seeds)}.")


def seed_panel(results, metric: str, label: str) -> None:
    """Per comparison: the zero-shot score per layer choice over seeds (mean ± sd, per seed, trainable
    parameters), and concept minus each other choice, with intervals over seeds and evaluation tasks."""
    for comparison in list(compare_transfer(results, metric).values())[:2]:
        st.markdown(f"**{comparison.metric}** · {comparison.cost}")
        arms = arms_table(comparison, digits=2)
        st.dataframe(arms.drop(columns=["mean", "ci_low", "ci_high"]).rename(columns={"method": "layers"}),
                     hide_index=True, width="stretch")
        points = pd.DataFrame([{"layers": a.arm, "seed": s, label: v} for a in comparison.arms
                               for s, v in zip(a.seeds, a.values)])
        base = alt.Chart(arms.rename(columns={"method": "layers"})).encode(y=alt.Y("layers:N", title=None, sort=None))
        bars = base.mark_errorbar(ticks=True).encode(x=alt.X("ci_low:Q", title=f"zero-shot {label}"), x2="ci_high:Q")
        mean = base.mark_point(filled=True, size=80, color="black").encode(x="mean:Q",
                                                                           tooltip=["layers", "mean ± sd"])
        dots = alt.Chart(points).mark_circle(opacity=0.5).encode(x=f"{label}:Q", y=alt.Y("layers:N", sort=None),
                                                                  color="seed:N", tooltip=["layers", "seed", label])
        st.altair_chart((bars + mean + dots).properties(
            title=f"Zero-shot {label}: mean over seeds (black), 95% t interval (bars), each seed (dots)"),
            width="stretch")
        diffs = differences_table(comparison, digits=2)
        if not diffs.empty:
            st.dataframe(diffs, hide_index=True, width="stretch")


def _ends(ci: Interval | None) -> dict[str, float | None]:
    """An interval's ends for a chart; None without one (none kept, or NaN: a single evaluation task)."""
    if ci is None or math.isnan(ci.low):
        return {"low": None, "high": None}
    return {"low": ci.low, "high": ci.high}


# --------------------------------------------------------------------------- live jobs and results
@st.fragment(run_every=2.0)
def live_panel() -> None:
    jobs = list_jobs(kind="transfer")
    rerun_when_jobs_change(jobs, "tr_jobs_seen")  # a run that finished appears in Examples and Export below
    if not jobs:
        st.info("No transfer runs yet.")
        return
    for job in [j for j in jobs if j.active]:
        st.progress(job.fraction, text=job.progress_text())
        losses = [p for p in job_metrics(job) if p.loss is not None]
        if losses:
            st.caption(f"last training loss {losses[-1].loss:.4f} at step {losses[-1].step}")
    st.subheader("Comparison")
    results = finished_results(jobs, TRANSFER)
    bleu, rouge = comparison_table(results, "bleu4"), comparison_table(results, "rouge_l")
    if bleu.empty:
        st.caption("Scores appear here when a run finishes.")
        return
    left, right = st.columns(2)
    left.markdown("**BLEU-4** (after training)")
    left.dataframe(bleu, hide_index=True, width="stretch")
    right.markdown("**ROUGE-L** (after training)")
    right.dataframe(rouge, hide_index=True, width="stretch")
    st.caption("zero-shot Δ (after - before): the change of the zero-shot mean over training, paired per program "
               "(each program's score after minus its own before); Δ CI: its 95 % bootstrap interval over evaluation "
               "tasks (empty when the run skipped the evaluation before training). evaluated: N of the M "
               "evaluation-side programs the run summarized.")
    long = pd.DataFrame([{"run": f"{r.layer_choice} {r.layers} seed {r.config.seed}", "language": lang,
                          "BLEU-4": v.bleu4, **_ends(v.bleu4_ci)}
                         for r in list(results.values())[:6] for lang, v in r.scores.items()])
    base = alt.Chart(long).encode(x=alt.X("run:N", title=None, axis=alt.Axis(labels=False)))
    layers = alt.layer(base.mark_bar().encode(y="BLEU-4:Q", color="run:N",
                                              tooltip=["run", "language", "BLEU-4", "low", "high"]),
                       base.mark_errorbar(ticks=True).encode(y=alt.Y("low:Q", title="BLEU-4"), y2="high:Q"))
    st.altair_chart(layers.facet(column=alt.Column("language:N", title=None)).properties(
        title="BLEU-4 per language (latest runs), 95% interval over evaluation tasks"))
    st.subheader("Layer choices over seeds")
    seed_panel(results, "bleu4", "BLEU-4")
    seed_panel(results, "rouge_l", "ROUGE-L")
    st.caption("Intervals over seeds: Student t on the per-seed values; over evaluation tasks: a bootstrap of "
               "the per-task difference averaged over the paired seeds (BLEU-4 is CodeXGLUE's mean of sentence "
               f"scores, so tasks resample exactly what it averages). A difference whose interval covers 0 is "
               f"called {INDISTINGUISHABLE}.")


mark_full_run("tr_jobs_seen")
live_panel()

st.subheader("Examples")
jobs = list_jobs(kind="transfer")
finished = finished_results(jobs, TRANSFER)
if finished:
    labels = {j.id: j.label for j in jobs}
    pick = st.selectbox("Run", list(finished), format_func=lambda i: f"{i}: {labels[i]}", key="tr_examples_job")
    result = finished[pick]
    samples = result.samples
    if samples:
        shown = [{"lang": s.lang, "task": s.task, "reference": s.reference, "prediction": s.prediction,
                  "before": s.before, "bleu4": s.bleu4, "rouge_l": s.rouge_l} for s in samples]
        st.dataframe(pd.DataFrame(shown), hide_index=True, width="stretch")
        row = st.selectbox("Show code of", range(len(samples)), key="tr_examples_row",
                           format_func=lambda i: f"{samples[i].lang} {samples[i].task}")
        st.code(samples[row].code, language=samples[row].lang)
    before = {lang: (v.bleu4_before, v.rouge_l_before) for lang, v in result.scores.items()}
    if any(b[0] is not None for b in before.values()):
        st.caption("Before training (same prompts): " + "; ".join(
            f"{lang} BLEU-4 {b:.1f} / ROUGE-L {r:.1f}" for lang, (b, r) in before.items() if b is not None))
else:
    st.caption("Sample summaries appear here when a run finishes.")

export_panel("transfer", "tr_export")
