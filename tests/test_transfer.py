"""Summarization transfer: metrics against hand-computed values, comment stripping, adaptation confined
to the chosen layers (LoRA and full), the export of the adapted model, resuming from a checkpoint, the
evaluation loop, layer choices and refusals, one prompt for every language, and disjoint training and
evaluation tasks."""

import json
import math
from dataclasses import replace

import pytest
import torch
from conftest import SNIPPETS, tiny_model

from neuro.code.comments import strip_comments
from neuro.code.split import SplitParams, split_corpus
from neuro.experiments.metrics import bleu_tokens, lcs_length, rouge_l, sentence_bleu, sentence_rouge_l, smoothed_bleu4
from neuro.experiments.transfer import (
    PROMPT_CUE,
    SummaryPair,
    TransferConfig,
    adapt_layers,
    middle_layers,
    prompt_ids,
    resolve_layers,
    summary_pairs,
    training_sequence,
    transfer,
    validate_transfer,
)
from neuro.jobs.folders import JobContext, JobRefused, list_jobs, write_json
from neuro.jobs.kinds import TRANSFER, export_model
from neuro.jobs.runner import start_job
from neuro.model.loading import load_model
from neuro.training.context import JobCancelled, NullContext

# --------------------------------------------------------------------------- metrics


def test_bleu_tokenization_matches_codexglue():
    assert bleu_tokens("Return the sum of two numbers.") == ["return", "the", "sum", "of", "two", "numbers", "."]
    assert bleu_tokens("x.y, 3.5") == ["x", ".", "y", ",", "3", ".", "5"]


def test_smoothed_bleu_hand_computed():
    ref = "Return the sum of two numbers."
    # 7 reference tokens, 4 candidate tokens; matches 4/4, 2/3, 1/2, 0/1; n >= 2 smoothed by +1:
    # exp(mean(log 1, log 3/4, log 2/3, log 1/2) + min(0, 1 - 8/5)) = 0.25 ** 0.25 * exp(-0.6)
    assert sentence_bleu(ref, "Return the sum.") == pytest.approx(0.25 ** 0.25 * math.exp(-0.6))
    assert sentence_bleu(ref, "Return the sum.") == pytest.approx(0.388068, abs=1e-6)
    # bigram miss, no trigram/4-gram to guess: (1 * 1/2 * 1/1 * 1/1) ** 0.25, no brevity penalty
    assert sentence_bleu("two numbers", "numbers two") == pytest.approx(0.5 ** 0.25)
    assert sentence_bleu(ref, ref) == pytest.approx(1.0)
    # an empty candidate scores exp(1 - (7 + 1) / 1) under this smoothing, as in CodeXGLUE
    assert sentence_bleu(ref, "") == pytest.approx(math.exp(-7))
    assert smoothed_bleu4([ref, "two numbers"], ["Return the sum.", "numbers two"]) == pytest.approx(
        50 * (0.25 ** 0.25 * math.exp(-0.6) + 0.5 ** 0.25))


def test_rouge_l_hand_computed():
    assert lcs_length("a b c d e f".split(), "a c f z".split()) == 3
    # P = 3/4, R = 3/6: F1 = 2 * 0.375 / 1.25
    assert sentence_rouge_l("a b c d e f", "a c f z") == pytest.approx(0.6)
    assert sentence_rouge_l("Return the sum of two numbers.", "return THE sum") == pytest.approx(2 / 3)
    assert sentence_rouge_l("abc", "") == 0.0
    assert rouge_l(["a b", "a b"], ["a b", "c"]) == pytest.approx(50.0)


# --------------------------------------------------------------------------- data

def test_summary_pairs_strip_comments():
    """Transfer strips with neuro.code.comments (clone detection's rules): no summary left to copy."""
    py = 'def f(x):\n    """Add one."""\n    # the answer\n    return x + 1  # done\n'
    assert strip_comments(py, "python") == "def f(x):\n    return x + 1\n"
    java = "class A {\n    // Return s reversed.\n    /* block */ int f() { return 1; }\n}\n"
    assert strip_comments(java, "java") == "class A {\n     int f() { return 1; }\n}\n"  # the space after */ stays
    assert "Summary" not in strip_comments("// Summary here\nint x;\n", "cpp")
    commented = [replace(s, code=f"// {s.summary}\n{s.code}" if s.lang != "python" else f"# {s.summary}\n{s.code}")
                 for s in SNIPPETS]
    assert [p.code for p in summary_pairs(commented)] == [strip_comments(s.code, s.lang) for s in SNIPPETS]
    assert [p.code for p in summary_pairs(commented, strip=False)] == [s.code for s in commented]


def test_loss_targets_are_the_summary_tokens_only(tiny_llama):
    pair = summary_pairs(SNIPPETS[:1])[0]
    ids, flags = training_sequence(tiny_llama, pair, 384, 48)
    tok = tiny_llama.tokenizer
    target = [i for i, f in zip(ids, flags) if f]
    assert tok.decode(target, skip_special_tokens=True) == " " + pair.summary
    assert target[-1] == tok.eos_token_id and flags.count(1) == len(target)
    assert tok.decode([i for i, f in zip(ids, flags) if not f], skip_special_tokens=True).endswith("\n\nSummary:")


def test_the_prompt_is_the_same_for_every_language(tiny_llama):
    """The same code labelled as different languages gives identical prompts and training sequences: the
    cue reveals nothing about the language, so zero-shot languages meet the cue the source trained on."""
    code = "int add(int a, int b) { return a + b; }\n"
    pairs = [SummaryPair(f"add/{lang}", lang, "add", code, "Add two numbers.")
             for lang in ("python", "go", "java", "cpp", "javascript", "rust")]
    prompts = {tuple(prompt_ids(tiny_llama, p, 384)) for p in pairs}
    sequences = {tuple(map(tuple, training_sequence(tiny_llama, p, 384, 48))) for p in pairs}
    assert len(prompts) == 1 and len(sequences) == 1
    assert "#" not in PROMPT_CUE and "//" not in PROMPT_CUE
    other = SummaryPair("x", "python", "add", "def add(a, b):\n    return a + b\n", "Add two numbers.")
    cue = tiny_llama.tokenizer(PROMPT_CUE, add_special_tokens=False)["input_ids"]
    assert prompt_ids(tiny_llama, other, 384)[-len(cue):] == prompt_ids(tiny_llama, pairs[0], 384)[-len(cue):] == cue


# --------------------------------------------------------------------------- adaptation

def _state(loaded):
    return {k: v.detach().clone() for k, v in loaded.model.state_dict().items()}


def _changed_layers(before, after, blocks="model.layers"):
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    layers = set()
    for name in changed:
        assert name.startswith(blocks + "."), f"{name} changed outside the chosen layers"
        layers.add(int(name.split(".")[2]))
    return layers


def _config(**changes):
    base = dict(model="x", source="python", layers=[1], steps=4, lr=5e-2, batch_size=4, max_new_tokens=6,
                eval_fraction=0.34, rank=2, eval_before=False)
    return TransferConfig(**{**base, **changes})


@pytest.fixture(scope="module")
def base_folder(tiny_env):
    return tiny_env("transfer-base") / "model"


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.mark.parametrize("method, layers", [("lora", [1]), ("lora", [0, 1, 2]), ("full", [0, 2])])
def test_transfer_trains_only_the_chosen_layers_and_exports_them(base_folder, tmp_path, method, layers):
    """The export (weights merged) reloads with plain transformers and gives the in-memory adapted model's
    logits; against the base, only the chosen layers differ."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    loaded = load_model(base_folder, device="cpu")
    before = _state(loaded)
    config = _config(model=str(base_folder), method=method, layers=layers)
    job = tmp_path / "job"
    job.mkdir()
    write_json(job / "spec.json", {"kind": "transfer", "params": config.to_json()})
    result = transfer(loaded, SNIPPETS, config, NullContext(), checkpoint=JobContext(job).save_checkpoint)
    trainable = [(n, p) for n, p in loaded.model.named_parameters() if p.requires_grad]
    assert trainable and all(any(f"layers.{layer}." in n for layer in layers) for n, _ in trainable)
    assert result.trainable_params == sum(p.numel() for _, p in trainable)
    assert set(result.scores) >= {"go", "java"} and all(
        0 <= v.bleu4 <= 100 and 0 <= v.rouge_l <= 100 for v in result.scores.values())
    assert result.samples and result.samples[0].reference and result.samples[0].code

    out = export_model(job, tmp_path / "export")
    model, tokenizer = AutoModelForCausalLM.from_pretrained(out), AutoTokenizer.from_pretrained(out)
    text = SNIPPETS[0].code
    assert tokenizer(text)["input_ids"] == loaded.tokenizer(text)["input_ids"]
    ids = torch.tensor([loaded.tokenizer(text)["input_ids"]])
    adapted = _logits(loaded.model, ids)  # LoRA stays injected; full: the layers' weights changed in place
    assert not torch.allclose(adapted, _logits(load_model(base_folder, device="cpu").model, ids))
    torch.testing.assert_close(_logits(model, ids), adapted, atol=1e-5, rtol=1e-4)
    assert _changed_layers(before, model.state_dict()) == set(layers)
    with pytest.raises(FileExistsError):
        export_model(job, out)


class _StopAfter(NullContext):
    """Stops as a cancel would, at the first check after training step `step`."""

    def __init__(self, step: int):
        self.stop, self.step = step, 0

    def metric(self, **values) -> None:
        self.step = values["step"]

    def check(self) -> None:
        if self.step >= self.stop:
            raise JobCancelled()


def test_a_stopped_transfer_resumes_to_the_uninterrupted_result(tmp_path):
    config = _config(steps=6, checkpoint_every=2, batch_size=1, eval_before=True)
    whole = transfer(tiny_model("llama"), SNIPPETS, config, NullContext())
    ctx = JobContext(tmp_path)
    with pytest.raises(JobCancelled):
        transfer(tiny_model("llama"), SNIPPETS, config, _StopAfter(3), checkpoint=ctx.save_checkpoint)
    state = json.loads((tmp_path / "checkpoint" / "train_state.json").read_text())
    assert state["step"] == 2 and (tmp_path / "checkpoint" / "optimizer.pt").is_file()
    resumed = transfer(tiny_model("llama"), SNIPPETS, config, NullContext(), checkpoint=ctx.save_checkpoint,
                       resume=tmp_path / "checkpoint")
    assert resumed.steps == 6 and resumed.optimizer_state == whole.optimizer_state
    assert resumed.train_loss_first == pytest.approx(whole.train_loss_first, rel=1e-5)
    assert resumed.train_loss_last == pytest.approx(whole.train_loss_last, rel=1e-5)
    assert {k: v.to_json() for k, v in resumed.scores.items()} == {k: v.to_json() for k, v in whole.scores.items()}
    assert resumed.samples == whole.samples
    # the last checkpoint needs no optimizer state: nothing is left to train
    assert not (tmp_path / "checkpoint" / "optimizer.pt").exists()


def test_full_transfer_trains_only_the_chosen_layers():
    loaded = tiny_model("llama")
    before = _state(loaded)
    params, peft = adapt_layers(loaded, _config(method="full", layers=[0, 2]))
    assert peft is None
    optimizer = torch.optim.SGD(params, lr=0.1)
    from neuro.training.batches import batch_loss, make_batches
    seqs = [training_sequence(loaded, p, 64, 16) for p in summary_pairs(SNIPPETS)]
    batch = make_batches(seqs, loaded.tokenizer.pad_token_id, loaded.device, 4096)[0]
    batch_loss(loaded.model, batch).backward()
    optimizer.step()
    assert _changed_layers(before, _state(loaded)) == {0, 2}


def test_layer_choices(tiny_llama, tmp_path):
    assert middle_layers(8) == [2, 3, 4, 5] and middle_layers(3) == [1] and middle_layers(1) == [0]
    from neuro.results.store import Store
    store = Store(tmp_path)
    concept, note = resolve_layers("concept", tiny_llama, SNIPPETS, store=store)
    assert concept and all(0 <= x < 3 for x in concept) and note
    assert "fallen" not in note  # the rule may rest on alignment alone (language ID never falls on the demo)
    lower, _ = resolve_layers("lower", tiny_llama, SNIPPETS, store=store)
    assert lower == list(range(min(len(concept), min(concept)))) and not set(lower) & set(concept)
    assert resolve_layers("all", tiny_llama, SNIPPETS)[0] == [0, 1, 2]
    assert resolve_layers("custom", tiny_llama, SNIPPETS, [2, 0, 2])[0] == [0, 2]
    # concept layers the user set on the Layers page: the same rule for "lower", no cache needed
    assert resolve_layers("concept", tiny_llama, SNIPPETS, concept=[2, 1]) == ([1, 2], "concept layers as set on "
                                                                                     "the Layers page")
    # "lower" never overlaps the concept layers: as many below them as there are, else all that lie below
    assert resolve_layers("lower", tiny_llama, SNIPPETS, concept=[2, 1])[0] == [0]
    assert resolve_layers("lower", tiny_llama, SNIPPETS, concept=[2])[0] == [0]
    assert resolve_layers("lower", tiny_llama, SNIPPETS, concept=[0, 1])[0] == []


@pytest.mark.parametrize("change, message", [
    (dict(layers=[]), "no layers"),
    (dict(layers=[5]), "outside"),
    (dict(lr=math.nan), "learning rate"),
    (dict(steps=0), "steps"),
    (dict(source="cpp"), "empty training set"),
    (dict(rank=0), "rank"),
    (dict(eval_fraction=0.0), "evaluation fraction"),
])
def test_bad_transfer_parameters_are_refused(tiny_llama, tmp_path, change, message):
    config = _config(**change)
    assert any(message in r for r in validate_transfer(config, tiny_llama, SNIPPETS)), \
        validate_transfer(config, tiny_llama, SNIPPETS)
    with pytest.raises(JobRefused):
        start_job(TRANSFER, config, tiny_llama, SNIPPETS, root=tmp_path)
    assert list_jobs(tmp_path) == []


def test_a_transfer_run_trains_and_evaluates_on_disjoint_tasks(monkeypatch):
    import neuro.experiments.transfer as tr

    trained, evaluated = [], []
    real_sequence, real_summarize = tr.training_sequence, tr.summarize

    def sequence(loaded, pair, *args):
        trained.append(pair)
        return real_sequence(loaded, pair, *args)

    def summarize(loaded, pairs, **kwargs):
        evaluated.extend(pairs)
        return real_summarize(loaded, pairs, **kwargs)

    monkeypatch.setattr(tr, "training_sequence", sequence)
    monkeypatch.setattr(tr, "summarize", summarize)
    result = transfer(tiny_model("llama"), SNIPPETS, _config(steps=1, eval_before=True), NullContext())
    split = split_corpus(SNIPPETS, SplitParams(0.34, 0))
    assert trained and evaluated and {p.lang for p in trained} == {"python"}
    assert not {p.task for p in trained} & {p.task for p in evaluated}
    assert {p.id for p in trained} == {s.id for s in split.selection if s.lang == "python"}
    assert {p.id for p in evaluated} == {s.id for s in split.evaluation}
    assert {p.lang for p in evaluated} >= {"go", "java"}
    assert result.split == split.summary() and "Summary:" in result.prompt


def test_a_valid_transfer_passes_validation(tiny_llama):
    assert validate_transfer(_config(), tiny_llama, SNIPPETS) == []
    assert "does not fit" in validate_transfer(_config(), tiny_llama, SNIPPETS, memory_budget=1000)[0]


def test_transfer_page_runs_a_job_and_shows_scores(monkeypatch, tiny_env):
    import time

    from streamlit.testing.v1 import AppTest

    from neuro.paths import REPO_DIR

    env = tiny_env("trpage")
    monkeypatch.setenv("NEURO_MODEL", str(env / "model"))
    monkeypatch.setenv("NEURO_CORPUS", str(env / "corpus.jsonl"))
    monkeypatch.setenv("NEURO_CACHE", str(env / "cache"))
    root = env / "cache" / "jobs"
    at = AppTest.from_file(str(REPO_DIR / "views" / "transfer.py"), default_timeout=180).run()
    assert not at.exception, at.exception
    at.number_input(key="tr_steps").set_value(0).run()
    at.button(key="tr_start").click().run()
    assert any("Not started" in e.value for e in at.error) and list_jobs(root) == []
    at.number_input(key="tr_steps").set_value(3)
    at.number_input(key="tr_seeds").set_value(1)
    at.radio(key="tr_layers").set_value("all").run()
    assert any("selection: 4 programs, evaluation: 3 programs" in c.value for c in at.caption)
    at.button(key="tr_start").click().run()
    assert not at.exception, at.exception
    assert any("Started job" in s.value for s in at.success)
    deadline = time.time() + 240
    while any(j.active for j in list_jobs(root)) and time.time() < deadline:
        time.sleep(0.5)
    job = list_jobs(root)[0]
    assert job.state == "finished", (job.path / "log.txt").read_text()
    at.run()
    assert not at.exception, at.exception
    bleu = [d.value for d in at.dataframe if "zero-shot mean" in getattr(d.value, "columns", [])]
    assert bleu and bleu[0]["layers"].tolist() == ["all [0, 1, 2]"]
    samples = [d.value for d in at.dataframe if "prediction" in getattr(d.value, "columns", [])]
    assert samples and len(samples[0]) >= 2
    at.button(key="tr_export").click().run()
    assert not at.exception, at.exception
    assert any("Exporting" in s.value for s in at.success)
    deadline = time.time() + 240
    while any(j.active for j in list_jobs(root, kind="export")) and time.time() < deadline:
        time.sleep(0.5)
    export = list_jobs(root, kind="export")[0]
    assert export.state == "finished", (export.path / "log.txt").read_text()
    assert load_model(job.path / "export", device="cpu").n_layers == 3
