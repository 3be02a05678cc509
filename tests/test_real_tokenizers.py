"""The analyses with the paper's real tokenizers (Llama-3, Qwen2.5: built from the files registry packages ship,
tests/real_tokenizers.py) on tiny random models of the paper's architectures with those full vocabularies,
over demo-corpus programs. Ground truths: tiktoken reading the same file, the source text, plain forward
passes of the model, and activations planted at the first position.

The first position rule (neuro/instrument/tokens.py): Llama-3 puts its BOS there, Qwen2.5 adds none and puts
the first code token there; either way it enters no statistic that describes what a neuron does on code."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from neuro.code.corpus import Snippet, load_corpus
from neuro.instrument.statistics import POSITION_BITS, capture_statistics, trace_tokens
from neuro.instrument.tokens import collate, encode, real_token_mask, truncation
from neuro.paths import DEMO_CORPUS_FILE

LONG = 4096  # no demo program comes near it: nothing is cut unless a test asks


@pytest.fixture(scope="module")
def corpus():
    return load_corpus(str(DEMO_CORPUS_FILE))


@pytest.fixture(scope="module")
def programs(corpus):
    """Two tasks in all five languages (the two shortest such tasks): 10 programs."""
    by_task: dict[str, list[Snippet]] = {}
    for s in corpus:
        by_task.setdefault(s.task, []).append(s)
    langs = {s.lang for s in corpus}
    complete = [t for t, group in by_task.items() if {s.lang for s in group} == langs]
    shortest = sorted(complete, key=lambda t: sum(len(s.code) for s in by_task[t]))[:2]
    return [s for t in shortest for s in sorted(by_task[t], key=lambda s: s.lang)]


def code_tokens(spec, reference, code: str) -> list[int]:
    """The ids a program's text becomes, by tiktoken (special-token text split out as the fast tokenizer
    does, each as its id)."""
    ids, rest = [], code
    while True:
        at = [(rest.find(t), t) for t in spec.special if t in rest]
        if not at:
            return ids + reference.encode(rest)
        i, token = min(at)
        ids += reference.encode(rest[:i]) + [spec.ranks + spec.special.index(token)]
        rest = rest[i + len(token):]


def real_positions(spec, ids: list[int]) -> list[int]:
    """Positions that describe the program: not the first (BOS, or the first code token), not a special token."""
    return [t for t, i in enumerate(ids) if t > 0 and i < spec.ranks]


# --------------------------------------------------------------------------- the tokenizers themselves
def test_llama3_tokenizer_is_the_models(llama3_tokenizer):
    tok = llama3_tokenizer
    assert len(tok) == 128_256 and tok.bos_token_id == 128_000 and tok.eos_token_id == 128_001
    assert tok("def add(a, b):", add_special_tokens=False)["input_ids"][:3] == [755, 923, 2948]
    assert sorted(tok.all_special_ids) == list(range(128_000, 128_256))
    assert tok.convert_ids_to_tokens(128_009) == "<|eot_id|>"


def test_qwen25_tokenizer_is_the_models(qwen25_tokenizer):
    tok = qwen25_tokenizer
    assert len(tok) == 151_665 and tok.bos_token_id is None
    assert tok.eos_token_id == tok.pad_token_id == tok.convert_tokens_to_ids("<|endoftext|>") == 151_643
    assert sorted(tok.all_special_ids) == list(range(151_643, 151_665))
    assert tok.convert_ids_to_tokens(151_664) == "<|file_sep|>"


def test_each_model_splits_digits_its_own_way(llama3_tokenizer, qwen25_tokenizer):
    """Llama-3's regex groups up to three digits, Qwen2's takes each digit alone."""
    pieces = lambda tok: [tok.decode([i]) for i in tok("x = 1234567", add_special_tokens=False)["input_ids"]]  # noqa: E731
    assert pieces(llama3_tokenizer)[-3:] == ["123", "456", "7"]
    assert pieces(qwen25_tokenizer)[-7:] == list("1234567")


def test_encode_agrees_with_tiktoken_on_the_whole_demo_corpus(real_model, corpus):
    """Every demo program: the fast tokenizer built by TikTokenConverter gives tiktoken's ids, with a BOS
    first for Llama-3 and nothing added for Qwen2.5; the offsets map every token back to its source text."""
    spec, loaded, reference = real_model
    bos = [128_000] if spec.bos else []
    for s in corpus:
        enc = encode(loaded, s.code, LONG)
        assert enc.ids == bos + reference.encode(s.code), s.id
        assert not enc.truncated
        text, end = "", 0
        for t, (a, b) in enumerate(enc.offsets[len(bos):], start=len(bos)):
            # byte-level BPE may split one character over two tokens that both point at it
            assert reference.decode_single_token_bytes(enc.ids[t]) in s.code[a:b].encode("utf-8"), (s.id, t)
            assert a <= b and b >= end
            text += s.code[max(a, end):b]
            end = max(end, b)
        assert text == s.code, s.id


# --------------------------------------------------------------------------- the first position rule
def test_the_first_position_is_never_a_real_token(real_model):
    """real_token_mask on a padded batch: padding, special tokens and each row's first position are out;
    with Llama-3 that first position is the BOS, with Qwen2.5 the first code token."""
    spec, loaded, reference = real_model
    codes = ["def f(x):\n    return x\n", f"s = '{spec.eos}'\nprint(s)\n", "x = 1\n"]
    encoded = [encode(loaded, c, LONG) for c in codes]
    ids, mask = collate(encoded, loaded.pad_id, "cpu")
    real = real_token_mask(loaded, ids, mask)
    for row, (c, e) in enumerate(zip(codes, encoded)):
        expected = np.zeros(ids.shape[1], dtype=int)
        expected[real_positions(spec, e.ids)] = 1
        assert real[row].tolist() == expected.tolist(), c
        first = e.ids[0]
        assert (first == 128_000) if spec.bos else (first == reference.encode(c)[0])


@contextlib.contextmanager
def planted(loaded, layer: int, value: float = 1e3):
    """Huge FFN activations at position 0 of block `layer`: every neuron fires (act_fn(gate) = 5) and the up
    projection is `value`, so a = 5 * value there; the block's output at position 0 is `value` too. Hooks
    registered before the analysis's own, so those see the planted tensors."""
    site = loaded.sites()[layer]

    def set_first(tensor, new):
        out = tensor.clone()
        out[:, 0] = new
        return out

    def on_block(module, args, output):
        if isinstance(output, tuple):
            return (set_first(output[0], value), *output[1:])
        return set_first(output, value)

    handles = [site.act.register_forward_hook(lambda m, a, out: set_first(out, 5.0)),
               site.up.register_forward_hook(lambda m, a, out: set_first(out, value)),
               site.block.register_forward_hook(on_block)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def test_an_activation_planted_at_the_first_position_leaves_the_statistics_unchanged(real_model, programs):
    """Qwen2.5 (no BOS) and Llama-3 (BOS): huge activations planted at position 0 of the last block change
    neither its PLS, LAPE counts, |a| sums, syntax profile and top-k (the last block's FFN works per position,
    so only position 0's activation and gradient change), nor its pooled states; the attribution, which covers
    every position ablation zeroes, does change: the plant reached the capture."""
    from neuro.instrument.states import pooled_states

    spec, loaded, _ = real_model
    last = loaded.n_layers - 1
    args = dict(gradients=True, syntax=True, top_k=8, max_length=LONG, batch_tokens=1024, max_batch=4)
    clean = capture_statistics(loaded, programs, **args)
    pooled = pooled_states(loaded, programs, batch_tokens=1024)
    with planted(loaded, last):
        dirty = capture_statistics(loaded, programs, **args)
        pooled_dirty = pooled_states(loaded, programs, batch_tokens=1024)
    np.testing.assert_array_equal(dirty.tokens, clean.tokens)
    np.testing.assert_array_equal(dirty.active_count[:, last], clean.active_count[:, last])
    for name in ("act_abs_sum", "pls_sum"):
        np.testing.assert_allclose(getattr(dirty, name)[:, last], getattr(clean, name)[:, last], rtol=1e-4,
                                   atol=1e-7, err_msg=name)
    np.testing.assert_allclose(dirty.type_sum[last], clean.type_sum[last], rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(dirty.top_ids[last], clean.top_ids[last])
    np.testing.assert_allclose(pooled_dirty[:, last], pooled[:, last], rtol=1e-4, atol=1e-6)
    assert not np.allclose(dirty.attribution_sum[:, last], clean.attribution_sum[:, last], rtol=0.01, atol=0)
    with planted(loaded, last):  # what a capture hook at the neuron site reads at position 0
        trace = trace_tokens(loaded, programs[0].code, layers=[last], max_length=LONG)
    np.testing.assert_allclose(trace.activations[0, 0], 5e3, rtol=1e-6)
    assert np.abs(trace.activations[0, 1:]).max() < 100


# --------------------------------------------------------------------------- capture
def test_capture_reads_each_program_s_own_tokens(real_model, programs):
    """Token counts equal tiktoken's count less the first position and special tokens; |a| sums equal a
    hand sum over traced activations at those positions; no top-k example is a first position or a special
    token, and each points into its program."""
    spec, loaded, reference = real_model
    special = next(s for s in programs if s.lang == "python")
    odd = Snippet("odd/python", "python", "odd", f'END = "{spec.eos}"\n' + special.code)  # a special token inside
    snippets = [*programs, odd]
    stats = capture_statistics(loaded, snippets, gradients=True, syntax=True, top_k=8, max_length=LONG,
                               batch_tokens=1024, max_batch=4)
    act_abs = np.zeros((len(stats.languages), loaded.n_layers, loaded.n_neurons))
    tokens = np.zeros(len(stats.languages))
    for s in snippets:
        li = stats.languages.index(s.lang)
        ids = ([128_000] if spec.bos else []) + code_tokens(spec, reference, s.code)
        keep = real_positions(spec, ids)
        tokens[li] += len(keep)
        trace = trace_tokens(loaded, s.code, max_length=LONG)
        assert trace.token_ids == ids
        act_abs[li] += np.abs(trace.activations[:, keep]).sum(1)
    assert sum(i >= spec.ranks for i in code_tokens(spec, reference, odd.code)) == 1
    np.testing.assert_array_equal(stats.tokens, tokens)
    np.testing.assert_allclose(stats.act_abs_sum, act_abs, rtol=1e-4, atol=1e-6)
    assert np.isfinite(stats.pls_sum).all() and (stats.pls_sum >= 0).all() and np.isfinite(stats.attribution_sum).all()
    assert stats.type_count.sum() <= tokens.sum() and stats.type_count.sum() > 0.5 * tokens.sum()
    seen = 0
    for gid in stats.top_ids.reshape(-1):
        if gid < 0:
            continue
        i, t = int(gid) >> POSITION_BITS, int(gid) & ((1 << POSITION_BITS) - 1)
        ids = encode(loaded, snippets[i].code, LONG).ids
        assert 0 < t < len(ids) and ids[t] < spec.ranks, (snippets[i].id, t)
        seen += 1
    assert seen == stats.top_ids.size  # k examples for every neuron
    assert stats.meta["truncated_programs"] == {"count": 0, "of": len(snippets), "max_length": LONG}


# --------------------------------------------------------------------------- states, clones, lens, layers
def test_pooled_states_and_clone_search(real_model, programs):
    """Pooled states are the mean of a plain forward's hidden states over positions 1..; a program searched
    against the corpus finds itself first (cosine 1)."""
    from neuro.analysis.clones.index import CloneIndex, VectorIndex
    from neuro.instrument.states import pooled_states

    spec, loaded, _ = real_model
    pooled = pooled_states(loaded, programs, batch_tokens=1024)
    for i, s in enumerate(programs):
        ids = torch.tensor([encode(loaded, s.code, LONG).ids])
        with torch.no_grad():
            hidden = loaded.model(ids, output_hidden_states=True).hidden_states
        for layer in range(loaded.n_layers):
            expected = hidden[layer + 1][0][1:].mean(0).numpy()
            if layer == loaded.n_layers - 1:  # the model's last hidden state has the final norm applied
                continue
            np.testing.assert_allclose(pooled[i, layer], expected, rtol=1e-4, atol=1e-5)
    layer = 0
    index = CloneIndex(loaded, layer, VectorIndex(pooled[:, layer], programs, center="none"), max_length=LONG)
    for s in programs[:3]:
        hits = index.search(s.code, k=1, lang=s.lang)
        assert hits[0].id == s.id and hits[0].score == pytest.approx(1.0, abs=1e-4)


def test_logit_lens_reads_the_real_vocabulary(real_model, programs):
    """The lens's last layer is the model's own prediction, its tokens are the program's, its top
    predictions are real vocabulary entries decoded to text, and a cut program says how long it was."""
    from neuro.analysis.lens import logit_lens

    spec, loaded, reference = real_model
    code = programs[0].code
    lens = logit_lens(loaded, code, top_k=3, max_length=LONG)
    ids = ([128_000] if spec.bos else []) + reference.encode(code)
    assert lens.token_ids == ids and lens.truncated_from == 0
    with torch.no_grad():
        logits = loaded.model(torch.tensor([ids])).logits[0]
    np.testing.assert_array_equal(lens.top_ids[-1, :, 0], logits.argmax(-1).numpy())
    np.testing.assert_array_equal(lens.output_top, logits.argmax(-1).numpy())
    for t in (1, len(ids) - 1):
        top = int(lens.top_ids[-1, t, 0])
        assert lens.top_texts[-1][t][0] == (reference.decode([top]) if top < spec.ranks
                                            else loaded.tokenizer.convert_ids_to_tokens(top))
    short = logit_lens(loaded, code, top_k=3, max_length=8)
    assert len(short.token_ids) == 8 and short.truncated_from == len(ids)


def test_layer_report_and_its_truncation_count(real_model, programs):
    """The layer report runs on the real vocabularies: its syntax probe samples no first position, and its
    meta counts the programs cut at max_length as tiktoken's lengths say."""
    from neuro.analysis.layers import layer_report
    from neuro.instrument.states import layer_states

    spec, loaded, reference = real_model
    report = layer_report(loaded, programs, tokens_per_snippet=4, contribution=False, max_length=LONG)
    assert list(report.scores["layer"]) == list(range(loaded.n_layers))
    assert report.meta["tokens_sampled"] > 0
    assert report.scores["lang_id_acc"].between(0, 1).all() and report.scores["align_mrr"].between(0, 1).all()
    assert report.meta["truncated_programs"] == {"count": 0, "of": len(programs), "max_length": LONG}
    states = layer_states(loaded, programs, tokens_per_snippet=4, max_length=LONG)
    assert (states.token_index[:, 1] > 0).all()
    limit = 40
    lengths = [len(reference.encode(s.code)) + (1 if spec.bos else 0) for s in programs]
    cut = sum(n > limit for n in lengths)
    assert 0 < cut < len(programs)
    short = layer_report(loaded, programs, tokens_per_snippet=4, contribution=False, max_length=limit)
    assert short.meta["truncated_programs"] == {"count": cut, "of": len(programs), "max_length": limit}
    assert truncation(loaded, programs, limit).programs == cut
