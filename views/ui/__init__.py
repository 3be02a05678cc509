"""Streamlit glue shared by every page: the model and corpus pickers and their cached loaders.

Only UI code lives here; all computation is in `neuro/`. Defaults can be set from the environment
(NEURO_MODEL, NEURO_CORPUS), so a GPU box's results can be browsed with the same model id.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import streamlit as st

from neuro.code.corpus import CorpusError, Snippet, load_corpus
from neuro.code.split import DEFAULT_EVAL_FRACTION, CorpusSplit, SplitParams, split_corpus
from neuro.model.cards import list_cards
from neuro.model.errors import ModelLoadError, WeightsNotLoaded
from neuro.model.loading import LoadedModel, load_model
from neuro.model.plan import parse_max_memory, plan_here
from neuro.model.reference import ModelRef, model_ref
from neuro.paths import DEMO_MODEL_DIR, demo_corpus_available, demo_model_available

DEMO = "Embedded demo"

LOCAL = "Local folder"

HUB = "Hugging Face hub id"

CACHED = "Cached results only"

CHECKPOINT_HELP = ("A run stopped midway (process killed, machine restarted, cancelled) can be resumed from its "
                   "last checkpoint on the Jobs page. 0: only after the last step.")


@dataclass(frozen=True)
class Selection:
    model: LoadedModel | None
    corpus: list[Snippet] | None
    model_error: str | None
    corpus_error: str | None
    ref: ModelRef | None = None  # sidebar(load=False): the model's cache identity, read from its files

    @property
    def cache_model(self) -> LoadedModel | ModelRef | None:
        """What cached results are read with: the loaded model, else its reference."""
        return self.model or self.ref


@st.cache_resource(show_spinner="Loading the model (once per process, shared by every session)…")
def cached_model(source: str, trust_remote_code: bool, device_map: str | None = None,
                 max_memory: str | None = None) -> LoadedModel:
    return load_model(source, trust_remote_code=trust_remote_code, device_map=device_map or None,
                      max_memory=parse_max_memory(max_memory))


@st.cache_resource(show_spinner="Reading the model's files (a large model's weights are hashed once)…", max_entries=8)
def cached_ref(source: str) -> ModelRef | None:
    return model_ref(source)


@st.cache_data(show_spinner="Planning memory from config.json…", max_entries=8)
def cached_plan(source: str, trust_remote_code: bool) -> tuple[pd.DataFrame | None, str]:
    """Every command's memory on this machine, before the model loads (`python -m neuro plan`)."""
    try:
        plan = plan_here(source, trust_remote_code=trust_remote_code)
    except (ModelLoadError, ValueError, OSError) as err:
        return None, f"No memory plan: {err}"
    gib = 1 << 30
    rows = [{"command": name, "device GiB": round(c.device_bytes / gib, 1), "host GiB": round(c.host_bytes / gib, 1),
             "batch tokens": c.batch_tokens, "fits": "yes" if c.fits else "no",
             "checkpointed": "yes" if c.checkpointing else ""} for name, c in plan.commands.items()]
    where = f"one GPU of {plan.device_memory / gib:.0f} GiB" if plan.device_memory else "the CPU"
    return pd.DataFrame(rows), (f"{plan.model.parameters / 1e9:.2f}B parameters, "
                                f"{plan.model.weight_bytes / gib:.1f} GiB of {plan.model.dtype} weights, on {where} "
                                f"with {plan.host_memory / gib:.0f} GiB of RAM, {plan.programs} programs")


@st.cache_data(show_spinner="Loading the corpus…", max_entries=8)
def cached_corpus(spec: str | None) -> list[Snippet]:
    return load_corpus(spec)


def _init_state() -> None:
    env_model, env_corpus = os.environ.get("NEURO_MODEL"), os.environ.get("NEURO_CORPUS")
    defaults = {
        "model_kind": LOCAL if env_model else DEMO,
        "model_path": env_model or "",
        "model_hub": "",
        "model_card": "",
        "trust_remote_code": False,
        "device_map": "",
        "max_memory": "",
        "corpus_kind": "Path" if env_corpus else DEMO,
        "corpus_path": env_corpus or "",
        "eval_fraction": DEFAULT_EVAL_FRACTION,
        "split_seed": 0,
    }
    for key, value in defaults.items():
        st.session_state.setdefault(key, value)
        # Streamlit drops a widget's state when another page renders "the same" widget, so the choice
        # lives under a plain key and is copied into the widget's key before every render.
        widget = _widget(key)
        if widget in st.session_state:
            st.session_state[key] = st.session_state[widget]
        st.session_state[widget] = st.session_state[key]


def _widget(key: str) -> str:
    return f"_w_{key}"


def model_source() -> str | None:
    kind = st.session_state.model_kind
    if kind == DEMO:
        return str(DEMO_MODEL_DIR) if demo_model_available() else None
    text = {LOCAL: st.session_state.model_path, HUB: st.session_state.model_hub,
            CACHED: st.session_state.model_card}[kind].strip()
    return text or None


def _load(source: str) -> tuple[LoadedModel | None, str | None]:
    try:
        device_map = st.session_state.device_map if st.session_state.model_kind in (LOCAL, HUB) else ""
        return cached_model(source, bool(st.session_state.trust_remote_code), device_map or None,
                            (st.session_state.max_memory or None) if device_map else None), None
    except (ModelLoadError, ValueError) as err:
        return None, str(err)


def with_model(selection: Selection) -> Selection:
    """`selection` with its model loaded (a page that drew from `sidebar(load=False)` first)."""
    if selection.model is not None or selection.model_error is not None or selection.ref is None:
        return selection
    model, error = _load(model_source())  # the sidebar's source (a card's ref names where it was computed)
    return dataclasses.replace(selection, model=model, model_error=error)


def sidebar(load: bool = True) -> Selection:
    """Draw the pickers and return the loaded model and corpus (or why they could not be loaded).
    `load=False`: where the model's files say enough, return its reference instead of loading it (a page
    that first only reads cached results draws them before the model is ready, then calls `with_model`)."""
    _init_state()
    with st.sidebar:
        st.subheader("Model")
        st.radio("Model source", [DEMO, LOCAL, HUB, CACHED], key=_widget("model_kind"), label_visibility="collapsed",
                 help="Cached results only: browse what was computed (here, or on a GPU box whose cache/ was "
                      "copied here) without loading the weights.")
        if st.session_state.model_kind == LOCAL:
            st.text_input("Folder with config.json and weights", key=_widget("model_path"),
                          placeholder="/models/Llama-3.1-8B")
        elif st.session_state.model_kind == HUB:
            st.text_input("Hub id (must be in the local cache when offline)", key=_widget("model_hub"),
                          placeholder="Qwen/Qwen2.5-Coder-32B")
        elif st.session_state.model_kind == CACHED:
            cards = {str(c.folder): c.label for c in list_cards()}
            if cards:
                if st.session_state[_widget("model_card")] not in cards:
                    st.session_state[_widget("model_card")] = next(iter(cards))
                st.selectbox("Model with cached results", list(cards), format_func=cards.get,
                             key=_widget("model_card"))
                st.session_state.model_card = st.session_state[_widget("model_card")]  # used below, this run
            else:
                st.caption("No cached results yet: run an analysis, or copy `cache/` from another machine.")
        if st.session_state.model_kind not in (DEMO, CACHED):
            st.checkbox("Trust remote code", key=_widget("trust_remote_code"),
                        help="Runs Python code shipped with the model. Leave off unless you trust its source.")
            with st.expander("Devices"):
                st.selectbox("Device map", ["", "auto", "balanced", "balanced_low_0", "sequential"],
                             key=_widget("device_map"), format_func=lambda v: v or "one device (default)",
                             help="accelerate's device_map: split the model over the visible GPUs (and the CPU). "
                                  "'auto' is also the default when more than one GPU is visible.")
                st.text_input("Max memory per device", key=_widget("max_memory"),
                              placeholder="0=70GiB,1=70GiB,cpu=200GiB",
                              help="accelerate's max_memory, used with a device map (python -m neuro --max-memory)")
            if model_source():
                with st.expander("Will it fit? (memory plan)"):
                    table, caption = cached_plan(model_source(), bool(st.session_state.trust_remote_code))
                    st.caption(caption)
                    if table is not None:
                        st.dataframe(table, hide_index=True, width="stretch")
        st.subheader("Corpus")
        st.radio("Corpus source", [DEMO, "Path"], key=_widget("corpus_kind"), label_visibility="collapsed")
        if st.session_state.corpus_kind == "Path":
            st.text_input("Snippet JSONL, folder of sources, or folder of HumanEval-X files",
                          key=_widget("corpus_path"))
        with st.expander("Selection / evaluation split"):
            st.slider("Evaluated share of tasks", 0.1, 0.5, step=0.05, key=_widget("eval_fraction"),
                      help="Neurons, concept layers and centring means are chosen on the other tasks; ablation "
                           "effects, clone scores, fine-tuning and transfer are measured on these. A corpus "
                           "without parallel tasks is split by program.")
            st.number_input("Split seed", min_value=0, step=1, key=_widget("split_seed"))

    model, ref, model_error = None, None, None
    source = model_source()
    if source is None:
        model_error = {DEMO: "The embedded demo model is not in this checkout.",
                       CACHED: "No model has cached results yet."}.get(
            st.session_state.model_kind, "Enter a model folder or hub id in the sidebar.")
    elif not load:
        try:
            ref = cached_ref(source)
        except ModelLoadError as err:
            model_error = str(err)
        if ref is None and model_error is None:  # the files do not say enough: load it
            model, model_error = _load(source)
    else:
        model, model_error = _load(source)

    corpus, corpus_error = None, None
    if st.session_state.corpus_kind == DEMO:
        spec = None if demo_corpus_available() else ""
    else:
        spec = st.session_state.corpus_path.strip()
    if spec == "":
        corpus_error = ("The embedded demo corpus is not in this checkout." if st.session_state.corpus_kind == DEMO
                        else "Enter a corpus path in the sidebar.")
    else:
        try:
            corpus = cached_corpus(spec)
        except (CorpusError, OSError) as err:
            corpus_error = str(err)
    return Selection(model, corpus, model_error, corpus_error, ref)


def corpus_split(corpus: list[Snippet]) -> CorpusSplit:
    """The selection / evaluation split chosen in the sidebar (shared by every page); stops the page with
    the reason when the corpus cannot be split."""
    params = SplitParams(eval_fraction=float(st.session_state.get("eval_fraction", DEFAULT_EVAL_FRACTION)),
                         seed=int(st.session_state.get("split_seed", 0)))
    try:
        return split_corpus(corpus, params)
    except ValueError as err:
        st.error(f"This corpus cannot be split into selection and evaluation programs: {err}")
        st.stop()


def corpus_key(corpus: list[Snippet]) -> str:
    from neuro.code.corpus import corpus_hash
    return corpus_hash(corpus)


@st.cache_data(show_spinner=False, max_entries=16)
def _truncation_note(model_identity: str, corpus_hash: str, max_length: int, _model: LoadedModel,
                     _corpus: list[Snippet]) -> str | None:
    from neuro.instrument.tokens import truncation
    return truncation(_model, _corpus, max_length).caption()


def truncation_caption(model: LoadedModel, corpus: list[Snippet], max_length: int = 512) -> None:
    """A caption saying how many of the analysed programs are cut at `max_length` tokens (nothing when none
    are): a tokenization pass, once per model and corpus."""
    if note := _truncation_note(model.identity, corpus_key(corpus), max_length, model, corpus):
        st.caption(note)


@st.cache_resource(show_spinner=False, max_entries=4)
def stats_from_cache(model_identity: str, corpus_hash: str, _model: LoadedModel, _corpus: list[Snippet]):
    """Cached statistics (or the shipped ones of the embedded demo, without their per-program arrays) or
    None: never computes (that is a user's explicit action)."""
    from neuro.results.statistics import STATS
    return STATS.get(_model, _corpus, compute=False)


def compute_stats(model: LoadedModel, corpus: list[Snippet]):
    """Run the statistics pass with a progress bar, then refresh the cached lookup."""
    from neuro.results.statistics import STATS

    from views.ui.progress import progress_bar

    with progress_bar("Capturing activations and gradients") as progress:
        stats = STATS.get(model, corpus, progress=progress)
    stats_from_cache.clear()
    return stats


def small_enough_to_auto_run(model: LoadedModel, corpus: list[Snippet]) -> bool:
    """Small model and corpus: compute on first view instead of asking (a couple of minutes on a CPU)."""
    if not model.weights_loaded:
        return False  # cached results only: nothing can be computed
    params = sum(p.numel() for p in model.model.parameters())
    return params < 50_000_000 and len(corpus) <= 1000


def statistics(model: LoadedModel, corpus: list[Snippet]):
    """The statistics for the selected model and corpus: from the cache, computed on first view for
    small setups, or after a click for large ones. None while not available."""
    stats = stats_from_cache(model.identity, corpus_key(corpus), model, corpus)
    if stats is not None:
        return stats
    if not model.weights_loaded:
        st.info(f"No cached statistics for {model.source} on this corpus ({len(corpus)} programs), and this "
                "session has no weights to compute them (cached results only). Compute them where the model "
                "is (`python -m neuro capture`) and copy `cache/` here, or pick the corpus they were computed on.")
        return None
    if small_enough_to_auto_run(model, corpus):
        return compute_stats(model, corpus)
    st.info(f"No cached statistics for {model.source} on this corpus ({len(corpus)} programs). "
            "Computing them runs one forward and backward pass per batch; on a large model use a GPU "
            "(`python -m neuro capture`) and browse the cache here.")
    if st.button("Capture statistics now", type="primary"):
        return compute_stats(model, corpus)
    return None


def page_header(title: str, caption: str) -> tuple[LoadedModel, list[Snippet]]:
    """Sidebar, title and caption of a page; stops the page with the reason when the selected model
    or corpus could not be loaded."""
    selection = sidebar()
    st.title(title)
    st.caption(caption)
    if selection.model is None or selection.corpus is None:
        st.warning(selection.model_error or selection.corpus_error)
        st.stop()
    return selection.model, selection.corpus


def pls_statistics(model: LoadedModel, corpus: list[Snippet]):
    """The corpus statistics with gradients (PLS), or stop the page saying why they are missing."""
    stats = statistics(model, corpus)
    if stats is None:
        st.stop()
    if stats.pls_sum is None:
        st.error("These statistics have no gradients, so no PLS; recapture with gradients.")
        st.stop()
    return stats


def lazy_tabs(tabs: dict[str, Callable[[], None]]) -> None:
    """Tabs whose open one lives in the URL (?tab=...): a rerun (pasted code, a moved slider) stays on
    it, a view can be linked, and only the open tab's content runs."""
    for tab, show in zip(st.tabs(list(tabs), key="tab", bind="query-params"), tabs.values()):
        with tab:
            if tab.open is not False:
                try:
                    show()
                except WeightsNotLoaded as err:
                    st.info(str(err))


def jobs_signature(jobs) -> tuple:
    """What a page's job-dependent widgets show of the jobs: each job's id and state."""
    return tuple((j.id, j.state) for j in jobs)


def needs_app_rerun(state, key: str, jobs) -> bool:
    """True when a fragment-only rerun (a live panel polling the jobs) sees the jobs' states differ from what
    the last full run drew: the page's other job widgets (pickers, the Export panel) are then stale. A full
    run (marked by `mark_full_run` above the fragment) only records what it drew. `state`: session state."""
    signature = jobs_signature(jobs)
    full = state.pop(f"{key}_full", False)
    previous = state.get(key)
    state[key] = signature
    return not full and previous is not None and previous != signature


def mark_full_run(key: str) -> None:
    """Call in the page body (outside its live fragment) before the fragment runs: see `needs_app_rerun`."""
    st.session_state[f"{key}_full"] = True


def rerun_when_jobs_change(jobs, key: str) -> None:
    """In a live fragment: rerun the whole page when a job changed state since the page was drawn, so a job
    that finished appears in the Export panel and a cancelled one reads "cancelled" in every picker."""
    if needs_app_rerun(st.session_state, key, jobs):
        st.rerun(scope="app")


def export_panel(kind: str, key: str) -> None:
    """Export a finished `kind` job's adapted model as a Hugging Face folder (in the background, as an
    "export" job); the same panel on the Fine-tuning and Transfer pages."""
    from neuro.jobs.folders import JobRefused, list_jobs
    from neuro.jobs.kinds import EXPORT, export_config, job_config
    from neuro.jobs.runner import start_job

    st.subheader("Export")
    jobs = list_jobs(kind=kind)  # read now, never cached: a run that just finished is listed
    done = [j for j in jobs if j.state == "finished"]
    if not done:
        running = sum(j.active for j in jobs)
        st.caption("Finish a run to export its weights as a Hugging Face folder."
                   + (f" {running} run(s) in progress: they are listed here when they finish." if running else ""))
        return
    pick = st.selectbox("Run", done, format_func=lambda j: f"{j.id}: {j.label}", key=f"{key}_job")
    out = st.text_input("Folder (empty: inside the job's folder)", key=f"{key}_out")
    if st.button("Export as a Hugging Face folder", key=key):
        try:
            config = export_config(pick, out.strip() or None)
            info = start_job(EXPORT, config)
            st.success(f"Exporting in the background (job `{info.id}`) to `{config.out}`; "
                       "load it with any Hugging Face loader or as a local model in the sidebar.")
        except JobRefused as err:
            st.error("; ".join(err.reasons))
    exports = [j for j in list_jobs(kind="export") if job_config(j).kind == kind]
    for job in exports[:5]:
        st.caption(f"{job.label}: **{job.state}**" + (f" ({job.error})" if job.error else ""))
