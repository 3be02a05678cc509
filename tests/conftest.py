"""Shared fixtures: tiny random models built from configs, a tiny byte-level BPE tokenizer, snippets."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from neuro.code.corpus import Snippet  # noqa: E402
from neuro.model.loading import prepare  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
HUMANEVAL_X = SHARED_DATA / "humaneval-x"

SNIPPETS = [
    Snippet("add/python", "python", "add", "def add(a, b):\n    return a + b\n", "Add two numbers."),
    Snippet("add/go", "go", "add", "package main\n\nfunc Add(a int, b int) int {\n\treturn a + b\n}\n",
            "Add two numbers."),
    Snippet("add/java", "java", "add", "class Solution {\n    int add(int a, int b) { return a + b; }\n}\n",
            "Add two numbers."),
    Snippet("rev/python", "python", "rev", "def rev(s):\n    return s[::-1]  # reverse 'héllo'\n",
            "Reverse a string."),
    Snippet("rev/go", "go", "rev", "package main\n\nfunc Rev(s string) string {\n\tr := []rune(s)\n"
            "\tfor i, j := 0, len(r)-1; i < j; i, j = i+1, j-1 {\n\t\tr[i], r[j] = r[j], r[i]\n\t}\n"
            "\treturn string(r)\n}\n", "Reverse a string."),
    Snippet("rev/java", "java", "rev", "class Solution {\n    String rev(String s) {\n"
            "        return new StringBuilder(s).reverse().toString();\n    }\n}\n", "Reverse a string."),
    Snippet("sum/python", "python", "sum", "def total(xs):\n    s = 0\n    for x in xs:\n        s += x\n"
            "    return s\n", "Sum a list."),
]


def make_tokenizer(vocab_size: int = 300):
    """A byte-level BPE tokenizer trained in milliseconds on the test snippets."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|bos|>", "<|eos|>", "<|pad|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([s.code for s in SNIPPETS] * 3, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|bos|>", eos_token="<|eos|>",
                                   pad_token="<|pad|>")


def word_tokenizer(langs, words: int, junk: int):
    """A whole-word tokenizer for hand-built models: <bos>, <unk>, then `words` words per language (named by
    its first two letters: py0, py1, ...) and `junk` shared words (junk0, ...), in that order."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    names = [f"{lang[:2]}{i}" for lang in langs for i in range(words)] + [f"junk{i}" for i in range(junk)]
    vocab = {"<bos>": 0, "<unk>": 1, **{w: i + 2 for i, w in enumerate(names)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", unk_token="<unk>", pad_token="<unk>")


def tiny_config(kind: str, vocab: int):
    import transformers as T

    common = dict(vocab_size=vocab, num_hidden_layers=3, num_attention_heads=4)
    llama_like = dict(common, hidden_size=32, intermediate_size=48, num_key_value_heads=2)
    if kind == "llama":
        return T.LlamaConfig(**llama_like)
    if kind == "mistral":
        return T.MistralConfig(**llama_like)
    if kind == "qwen2":
        return T.Qwen2Config(**llama_like)
    if kind == "qwen3":
        return T.Qwen3Config(**llama_like, head_dim=8)
    if kind == "gemma":
        return T.GemmaConfig(**llama_like, head_dim=8)
    if kind == "gemma2":
        return T.Gemma2Config(**llama_like, head_dim=8)
    if kind == "phi3":
        return T.Phi3Config(**llama_like, pad_token_id=0)
    if kind == "gpt_neox":
        return T.GPTNeoXConfig(**dict(common, hidden_size=32, intermediate_size=48))
    if kind == "starcoder2":
        return T.Starcoder2Config(**llama_like)
    if kind == "gpt2":
        return T.GPT2Config(vocab_size=vocab, n_embd=32, n_layer=3, n_head=4, n_inner=40)
    if kind == "gpt_bigcode":
        return T.GPTBigCodeConfig(vocab_size=vocab, n_embd=32, n_layer=3, n_head=4)
    raise ValueError(kind)


ARCHITECTURES = ["llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "phi3", "gpt2", "gpt_bigcode",
                 "gpt_neox", "starcoder2"]


def tiny_model(kind: str, seed: int = 0):
    from transformers import AutoModelForCausalLM

    tokenizer = make_tokenizer()
    torch.manual_seed(seed)
    config = tiny_config(kind, len(tokenizer))
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=torch.float32)
    return prepare(model, tokenizer, source=f"tiny-{kind}")


def save_tiny(folder: Path, kind: str = "llama", seed: int = 0) -> Path:
    """Write `tiny_model(kind, seed)` (weights + tokenizer) into `folder`, as a user's model folder would be."""
    loaded = tiny_model(kind, seed=seed)
    loaded.model.save_pretrained(folder)
    loaded.tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def saved_tiny(tmp_path_factory):
    """`saved_tiny(kind)`: a tiny model folder written once per session and shared by every test: read it only
    (a test that writes into its model folder takes a copy from `tiny_env`)."""
    made: dict[str, Path] = {}

    def get(kind: str = "llama") -> Path:
        if kind not in made:
            made[kind] = save_tiny(tmp_path_factory.mktemp(f"saved-{kind}") / "model", kind)
        return made[kind]
    return get


@pytest.fixture(scope="session")
def tiny_env(tmp_path_factory, saved_tiny):
    """`tiny_env(name)` -> a fresh folder holding `model/` (a copy of the session's saved tiny model) and
    `corpus.jsonl` (the test snippets, or `corpus`), the layout the app and the CLI read through NEURO_MODEL /
    NEURO_CORPUS; the caller's cache goes in `folder / "cache"`, so modules never share results. `folder=` fills a
    folder the test already has (its tmp_path) instead of making one."""
    from neuro.code.corpus import save_jsonl

    def make(name: str = "env", kind: str = "llama", corpus=None, folder: Path | None = None) -> Path:
        folder = tmp_path_factory.mktemp(name) if folder is None else Path(folder)
        shutil.copytree(saved_tiny(kind), folder / "model")
        save_jsonl(list(SNIPPETS if corpus is None else corpus), folder / "corpus.jsonl")
        return folder
    return make


@pytest.fixture(scope="session")
def tokenizer():
    return make_tokenizer()


@pytest.fixture(scope="session", params=["llama", "qwen2", "gpt2"])
def tiny(request):
    return tiny_model(request.param)


@pytest.fixture(scope="session")
def tiny_llama():
    return tiny_model("llama")


@pytest.fixture()
def snippets():
    return list(SNIPPETS)


@pytest.fixture()
def mounted(tmp_path):
    """Mount helper (root only; skipped where mounting is not allowed); unmounts afterwards."""
    mounts = []

    def mount(*args):
        result = subprocess.run(["mount", *args], capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"cannot mount here: {result.stderr.strip()}")
        mounts.append(args[-1])
    yield mount
    for target in reversed(mounts):
        subprocess.run(["umount", target], capture_output=True)


# --------------------------------------------------------------------------- the paper's real tokenizers
# Built once per session from the files registry packages ship (tests/real_tokenizers.py); skipped with the
# reason when a package is missing.
def _real_tokenizer(name: str):
    import real_tokenizers as R

    spec = {"llama3": R.LLAMA3, "qwen2.5": R.QWEN25}[name]
    reason = R.missing(spec)
    if reason:
        pytest.skip(reason)
    return spec, R.build_tokenizer(spec)


@pytest.fixture(scope="session")
def llama3_tokenizer():
    """Llama-3's tokenizer (128,000 ranks + 256 special tokens, BOS <|begin_of_text|> = 128000)."""
    return _real_tokenizer("llama3")[1]


@pytest.fixture(scope="session")
def qwen25_tokenizer():
    """Qwen2.5's tokenizer (151,643 ranks + 22 special tokens from 151643 on, no BOS)."""
    return _real_tokenizer("qwen2.5")[1]


@pytest.fixture(scope="session", params=["llama3", "qwen2.5"])
def real_model(request):
    """(spec, tiny random model of the paper's architecture with that tokenizer's full vocabulary, tiktoken's
    reference encoder) for Llama-3 and Qwen2.5."""
    import real_tokenizers as R

    name = request.param
    tokenizer = request.getfixturevalue("llama3_tokenizer" if name == "llama3" else "qwen25_tokenizer")
    spec = R.LLAMA3 if name == "llama3" else R.QWEN25
    return spec, R.tiny_model(spec, tokenizer), R.reference_encoding(spec)


# --------------------------------------------------------------------------- test tiers
# Markers (registered in pyproject.toml, --strict-markers) are applied here, in one place, so a test module never
# carries them. The quick tier for the edit-test loop: pytest -m "not slow and not browser and not sandbox".
#   browser: tests/browser (Chromium driving the real app).
#   sandbox: tests that compile or run programs (toolchains, bubblewrap).
#   slow:    tests over ~5 s on 2 shared cores. The list was made from a full run with `--durations=0`
#            (`pytest --ignore=tests/browser --durations=0`, sorted, every call or setup >= ~5 s), then the quick
#            tier's own `--durations=25` was read until nothing in it took more than ~5 s; a module is listed whole
#            where most of its tests are slow. Refresh it the same way when a test grows slow.
SANDBOX_MODULES = {"test_sandbox.py", "test_execution.py", "test_demo_corpus.py", "test_parallel_programs.py"}
SANDBOX_TESTS = {"test_generation.py::test_true_completion_passes_the_test",
                 "test_generation.py::test_pass_at_k_plumbing_with_and_without_ablation"}
SLOW_MODULES = {"test_demo_ground_truth.py", "test_cli.py", "test_distributed.py", "test_real_tokenizers.py",
                "test_typecheck.py"}
SLOW_TESTS = {
    "test_jobs.py::test_a_killed_job_resumes_from_its_checkpoint",
    "test_jobs.py::test_cli_finetune_compares_methods_and_refuses_bad_input",
    "test_jobs.py::test_jobs_page_lists_cancels_and_resumes",
    "test_jobs.py::test_a_job_subprocess_runs_to_completion",
    "test_jobs.py::test_cancel_leaves_a_clean_state",
    "test_jobs.py::test_a_killed_worker_is_shown_as_failed",
    "test_steering.py::test_steer_command",
    "test_steering.py::test_ablate_gen_command_uses_matched_controls",
    "test_transfer.py::test_transfer_page_runs_a_job_and_shows_scores",
    "test_token_effects.py::test_intervene_command",
    "test_finetune.py::test_finetune_page_refuses_then_runs_and_exports",
    "test_precomputed.py::test_the_shipped_numbers_match_a_fresh_computation",
    "test_faults.py::test_sigkill_of_a_cli_capture_then_a_rerun_resumes",
    "test_faults.py::test_two_cli_captures_of_the_same_entry_at_once",
    "test_app.py::test_embeddings_page",
    "test_neuron_card.py::test_cli_neuron_json",
    "test_layers.py::test_probe_converges_on_collinear_states",
    "test_app_cost.py::test_a_cancelled_ablation_job_is_said_and_can_be_started_again",
    "test_app_cost.py::test_a_long_per_program_statistics_run_becomes_a_job_the_page_follows",
    "test_app_cost.py::test_ablation_says_its_cost_and_runs_as_a_background_job",
    "test_path_attribution.py::test_cli_attribution_check_json",
    "test_job_progress.py::test_cli_transfer_evaluates_on_n_programs",
    "test_clones.py::test_cli_eval_and_search_json",
    "test_clones.py::test_no_real_program_is_called_prose",
    "test_app_cost.py::test_every_page_that_computes_says_its_cost_first",
    "test_architecture.py::test_adding_an_architecture_is_one_adapter_entry",
    "test_bench.py::test_tiny_cpu_run_reports_every_figure",
    # every user of test_jobs.py's `finished` fixture, which runs a whole fine-tuning job first
    "test_jobs.py::test_jobs_survive_an_app_restart",
    "test_jobs.py::test_every_kind_reads_back_what_it_writes",
    "test_jobs.py::test_resume_is_refused_without_a_checkpoint_or_when_finished",
}
TESTS_DIR = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    for item in items:
        path = Path(str(item.path)).resolve()
        if TESTS_DIR / "browser" in path.parents:
            item.add_marker(pytest.mark.browser)
            continue
        key = f"{path.name}::{getattr(item, 'originalname', item.name)}"
        if path.name in SANDBOX_MODULES or key in SANDBOX_TESTS:
            item.add_marker(pytest.mark.sandbox)
        if path.name in SLOW_MODULES or key in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)


def open_page(monkeypatch, folder, page: str, query: dict | None = None, **state):
    """The app on `folder`'s model, corpus and cache (a `tiny_env` folder) under AppTest, run once on `page`,
    with `state` put in session state and `query` in the URL first."""
    from streamlit.testing.v1 import AppTest

    from neuro.paths import REPO_DIR

    monkeypatch.setenv("NEURO_MODEL", str(folder / "model"))
    monkeypatch.setenv("NEURO_CORPUS", str(folder / "corpus.jsonl"))
    monkeypatch.setenv("NEURO_CACHE", str(folder / "cache"))
    at = AppTest.from_file(str(REPO_DIR / "app.py"), default_timeout=300)
    for key, value in state.items():
        at.session_state[key] = value
    at.query_params.update(query or {})
    at.switch_page(page)
    return at.run()
