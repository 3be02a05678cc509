"""Generation plumbing: prompts from code, truncation of completions, pass@k with and without ablation."""

import pytest

from neuro.analysis.generation import GenerationParams, evaluate_pass_at_k, prompt_of, truncate_completion
from neuro.code.corpus import LANGS, load_corpus
from neuro.code.sandbox import toolchains
from neuro.paths import DEMO_CORPUS_FILE

DEMO = load_corpus(DEMO_CORPUS_FILE)


@pytest.mark.parametrize("lang", LANGS)
def test_prompt_plus_true_rest_survives_truncation(lang):
    snippets = [s for s in DEMO if s.lang == lang][:12]
    for s in snippets:
        prompt = prompt_of(s)
        assert s.code.startswith(prompt.rstrip("\n")), s.id
        rest = s.code[len(prompt):] if s.code.startswith(prompt) else s.code[len(prompt.rstrip("\n")):]
        junk = "\n\ndef junk():\n    pass\n" if lang == "python" else "\n\nint junk() { return 0; }\n"
        cut = truncate_completion(prompt, rest + junk, lang)
        assert "junk" not in cut, s.id


@pytest.mark.skipif(not toolchains().get("python"), reason="python3 not available")
def test_true_completion_passes_the_test():
    from neuro.code.sandbox import run_program
    for s in [x for x in DEMO if x.lang == "python"][:5]:
        prompt = prompt_of(s)
        rest = s.code[len(prompt):]
        program = prompt + truncate_completion(prompt, rest, "python")
        assert run_program("python", program, s.test).passed, s.id


def test_humaneval_style_prompt_is_used_verbatim():
    from neuro.code.corpus import Snippet
    s = Snippet("t/go", "go", "t", "func F() int {\n\treturn 1\n}\n", prompt="func F() int {\n")
    assert prompt_of(s) == "func F() int {\n"
    assert truncate_completion(s.prompt, "\treturn 1\n}\n\nfunc G() {}\n", "go") == "\treturn 1\n}\n"


def test_params_are_checked():
    with pytest.raises(ValueError):
        GenerationParams(samples=3, temperature=0)
    with pytest.raises(ValueError):
        GenerationParams(max_new_tokens=0)


def test_pass_at_k_plumbing_with_and_without_ablation(tiny_llama):
    snippets = [s for s in DEMO if s.lang == "python"][:2]
    calls = []

    def recording_runner(lang, program, test):  # the real executor, recording each program
        from neuro.code.sandbox import run_program
        calls.append(program)
        return run_program(lang, program, test, timeout=5)
    params = GenerationParams(max_new_tokens=8)
    plain = evaluate_pass_at_k(tiny_llama, snippets, params, run=recording_runner)
    everything = {layer: range(tiny_llama.n_neurons) for layer in range(tiny_llama.n_layers)}
    silenced = evaluate_pass_at_k(tiny_llama, snippets, params, ablate=everything, run=recording_runner)
    assert set(plain.by_language) == {"python"} and 0.0 <= plain.by_language["python"][1] <= 1.0
    assert len(plain.samples) == len(silenced.samples) == 2
    assert all(p.startswith(prompt_of(s)) for p, s in zip(calls[:2], snippets))
    assert [r["completion"] for r in plain.samples] != [r["completion"] for r in silenced.samples]


def test_braces_in_strings_and_comments_do_not_count():
    prompt = "int f() {\n"
    body = '    char c = \'}\'; // a } here\n    /* { */ return "}" == 0;\n}\nint g() {}\n'
    assert truncate_completion(prompt, body, "cpp") == body[: body.index("}\nint g") + 1] + "\n"


# --------------------------------------------------------------------------- batched generation

def _prompts(n: int = 5) -> list[str]:
    """Prompts of different lengths from the demo corpus (several languages)."""
    chosen = [prompt_of(s) for s in DEMO[::41]][:n]
    assert len({len(p) for p in chosen}) == len(chosen)
    return chosen


def _demo_or_tiny(kind: str):
    from conftest import tiny_model

    from neuro.model.loading import load_model
    from neuro.paths import DEMO_MODEL_DIR, demo_model_available

    if kind == "demo":
        if not demo_model_available():
            pytest.skip("no demo model")
        return load_model(DEMO_MODEL_DIR, device="cpu")
    return tiny_model(kind)


@pytest.mark.parametrize("kind", ["demo", "llama", "gpt2", "gpt_neox"])
def test_batched_greedy_generation_equals_one_prompt_at_a_time(kind):
    from neuro.analysis.generation import complete

    loaded = _demo_or_tiny(kind)
    prompts, params = _prompts(), GenerationParams(max_new_tokens=10)
    alone = [complete(loaded, [p], params)[0] for p in prompts]
    assert complete(loaded, prompts, params) == alone  # one left-padded batch
    assert complete(loaded, prompts, params, max_batch=2) == alone  # several batches, answers in prompt order
    assert len({a[0] for a in alone}) > 1  # the prompts do lead to different text


def test_a_row_that_stops_early_in_a_batch_ends_where_it_ends_alone():
    """EOS in one row while the others go on: the batch pads the finished row; its completion is cut there."""
    from conftest import tiny_model

    import torch

    from neuro.analysis.generation import complete
    from neuro.instrument.tokens import encode

    loaded = tiny_model("llama", seed=1)
    prompts, params = _prompts(), GenerationParams(max_new_tokens=12)
    free = [complete(loaded, [p], params)[0][0] for p in prompts]
    # stop at the token the first prompt produces fourth (an EOS that some rows reach early)
    ids = torch.tensor([encode(loaded, prompts[0], 1024).ids])
    with torch.no_grad():
        first = loaded.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=4, do_sample=False,
                                      pad_token_id=loaded.pad_id)
    loaded.model.generation_config.eos_token_id = int(first[0, -1])
    loaded.model.generation_config.pad_token_id = loaded.pad_id
    try:
        alone = [complete(loaded, [p], params)[0] for p in prompts]
        batched = complete(loaded, prompts, params)
    finally:
        loaded.model.generation_config.eos_token_id = None
    stopped = [a[0] != f for a, f in zip(alone, free)]
    assert any(stopped) and batched == alone
