"""Capture on tiny random models: streaming accumulators against a plain per-token reference loop."""

from __future__ import annotations

import gc
import threading
import weakref

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import ARCHITECTURES, tiny_model

from neuro.instrument.losses import sample_losses
from neuro.instrument.states import pooled_states
from neuro.instrument.statistics import capture_statistics, trace_tokens, unit_plan
from neuro.instrument.tokens import encode, length_batches


def reference_statistics(loaded, snippets, max_length=512):
    """One sample at a time, no padding, activations kept whole, reduced by Python loops over tokens.

    The definitions written out: L = the program's summed next-token cross-entropy; real tokens = not
    special (BOS); PLS per program = mean over real tokens of |a g|; attribution per program =
    -(1/targets) * sum over every position of a g."""
    sites = loaded.sites()
    langs = list(dict.fromkeys(s.lang for s in snippets))
    n_layers, width = loaded.n_layers, loaded.n_neurons
    act_abs = np.zeros((len(langs), n_layers, width))
    active = np.zeros_like(act_abs)
    pls = np.zeros_like(act_abs)
    attribution = np.zeros_like(act_abs)
    per_program_pls, per_program_attr = [], []
    special = set(loaded.tokenizer.all_special_ids)
    samples = np.zeros(len(langs))
    tokens = np.zeros(len(langs))
    embed = loaded.model.get_input_embeddings()
    for s in snippets:
        li = langs.index(s.lang)
        ids = torch.tensor([encode(loaded, s.code, max_length).ids])
        kept, acts = {}, {}
        handles = []
        for site in sites:
            def pre(module, args, layer=site.layer):
                args[0].retain_grad()
                kept[layer] = args[0]

            def post(module, args, out, layer=site.layer):
                acts[layer] = out.detach()
            handles += [site.down.register_forward_pre_hook(pre), site.act.register_forward_hook(post)]
        try:
            inputs = embed(ids).detach().requires_grad_(True)
            logits = loaded.model(inputs_embeds=inputs).logits
            loss = F.cross_entropy(logits[0, :-1], ids[0, 1:], reduction="sum")
            loss.backward()
        finally:
            for h in handles:
                h.remove()
        n = ids.shape[1]
        real = [t for t in range(n) if int(ids[0, t]) not in special]
        program_pls, program_attr = np.zeros((n_layers, width)), np.zeros((n_layers, width))
        for layer in range(n_layers):
            a, g, act = kept[layer][0].detach(), kept[layer].grad[0], acts[layer][0]
            per_token, signed = np.zeros(width), np.zeros(width)
            for t in range(n):
                signed += (a[t] * g[t]).numpy()
                if t in real:
                    act_abs[li, layer] += a[t].abs().numpy()
                    active[li, layer] += (act[t] > 0).float().numpy()
                    per_token += (a[t] * g[t]).abs().numpy()
            program_pls[layer] = per_token / len(real)
            program_attr[layer] = -signed / (n - 1)
        pls[li] += program_pls
        attribution[li] += program_attr
        per_program_pls.append(program_pls)
        per_program_attr.append(program_attr)
        samples[li] += 1
        tokens[li] += len(real)
    return dict(act_abs=act_abs, active=active, pls=pls, attribution=attribution, samples=samples, tokens=tokens,
                program_pls=np.stack(per_program_pls), program_attribution=np.stack(per_program_attr))


def _assert_matches(stats, ref, snippets):
    np.testing.assert_allclose(stats.tokens, ref["tokens"])
    np.testing.assert_allclose(stats.samples, ref["samples"])
    np.testing.assert_allclose(stats.act_abs_sum, ref["act_abs"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(stats.active_count, ref["active"])
    np.testing.assert_allclose(stats.pls_sum, ref["pls"], rtol=1e-3, atol=1e-7)
    np.testing.assert_allclose(stats.attribution_sum, ref["attribution"], rtol=1e-3, atol=1e-7)
    # one unit per program here: each unit holds exactly its program's own scores
    unit_of, unit_lang = unit_plan(snippets, stats.languages, stats.n_layers, stats.n_neurons)
    np.testing.assert_array_equal(stats.unit_lang, unit_lang)
    np.testing.assert_allclose(stats.unit_pls[unit_of], ref["program_pls"], rtol=1e-3, atol=1e-7)
    np.testing.assert_allclose(stats.unit_attribution[unit_of], ref["program_attribution"], rtol=1e-3, atol=1e-7)
    np.testing.assert_allclose(stats.unit_samples[unit_of], 1)


def test_statistics_match_reference_loop(tiny, snippets):
    # batch_tokens small enough to force several padded batches per language
    stats = capture_statistics(tiny, snippets, gradients=True, batch_tokens=200)
    _assert_matches(stats, reference_statistics(tiny, snippets), snippets)
    assert stats.pls().shape == (len(stats.languages), tiny.n_layers, tiny.n_neurons)
    assert (stats.pls() > 0).all()
    # |sum a g| / T <= mean |a g| over real tokens x (real / targets): both signs occur in the attribution
    attribution = stats.attribution()
    assert (attribution > 0).any() and (attribution < 0).any()


@pytest.mark.parametrize("kind", [k for k in ARCHITECTURES if k not in ("llama", "qwen2", "gpt2")])
def test_every_adapter_captures_the_right_width(kind, snippets):
    loaded = tiny_model(kind)
    stats = capture_statistics(loaded, snippets[:3], gradients=True, batch_tokens=200)
    _assert_matches(stats, reference_statistics(loaded, snippets[:3]), snippets[:3])


def test_forward_only_statistics_equal_gradient_run_activations(tiny_llama, snippets):
    fwd = capture_statistics(tiny_llama, snippets, gradients=False)
    both = capture_statistics(tiny_llama, snippets, gradients=True)
    assert fwd.pls_sum is None
    np.testing.assert_allclose(fwd.act_abs_sum, both.act_abs_sum, rtol=1e-5)
    np.testing.assert_allclose(fwd.active_count, both.active_count)
    np.testing.assert_allclose(fwd.loss_sum, both.loss_sum, rtol=1e-5)
    with pytest.raises(ValueError):
        fwd.pls()


def _hook_count(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_hooks_removed_after_success_and_after_exception(tiny_llama, snippets):
    before = _hook_count(tiny_llama.model)
    capture_statistics(tiny_llama, snippets[:2])
    trace_tokens(tiny_llama, snippets[0].code)
    pooled_states(tiny_llama, snippets[:2], upto_layer=1)
    assert _hook_count(tiny_llama.model) == before

    def boom(done, total):
        raise KeyboardInterrupt("user pressed stop")
    with pytest.raises(KeyboardInterrupt):
        capture_statistics(tiny_llama, snippets, progress=boom)
    assert _hook_count(tiny_llama.model) == before
    assert all(not p.requires_grad for p in tiny_llama.model.parameters())


def test_gradient_capture_frees_each_batch_without_the_cyclic_gc(tiny_llama, snippets):
    """A batch's activations die with its backward: no reference cycle keeps them until gc runs
    (peak memory would otherwise grow with the corpus)."""
    refs = []
    handles = [site.up.register_forward_hook(lambda module, args, out: refs.append(weakref.ref(out)))
               for site in tiny_llama.sites()]
    gc.collect()
    gc.disable()
    try:
        capture_statistics(tiny_llama, snippets, gradients=True, batch_tokens=64)
        alive = sum(ref() is not None for ref in refs)
    finally:
        gc.enable()
        for handle in handles:
            handle.remove()
    assert refs and alive == 0


def test_two_threads_share_one_model(tiny_llama, snippets):
    alone = capture_statistics(tiny_llama, snippets)
    results, errors = [None, None], []

    def run(i):
        try:
            results[i] = capture_statistics(tiny_llama, snippets, batch_tokens=100 + 200 * i)
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)
    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for r in results:
        np.testing.assert_allclose(r.pls_sum, alone.pls_sum, rtol=1e-3, atol=1e-8)
        np.testing.assert_allclose(r.act_abs_sum, alone.act_abs_sum, rtol=1e-4)


def test_width_mismatch_fails_loudly(snippets):
    loaded = tiny_model("llama")
    loaded.model.config.intermediate_size = 47  # the adapter now expects a width the tensors lack
    with pytest.raises(RuntimeError, match="intermediate size"):
        capture_statistics(loaded, snippets[:1])


def test_token_trace_matches_statistics(tiny_llama, snippets):
    code = snippets[3].code
    trace = trace_tokens(tiny_llama, code, layers=[0, 2])
    assert trace.activations.shape == (2, len(trace.token_ids), tiny_llama.n_neurons)
    stats = capture_statistics(tiny_llama, [snippets[3]], gradients=False)
    # statistics read the program's own tokens: the BOS the trace shows first is not one of them
    assert trace.token_ids[0] == tiny_llama.tokenizer.bos_token_id
    np.testing.assert_allclose(np.abs(trace.activations[:, 1:]).sum(1), stats.act_abs_sum[0][[0, 2]], rtol=1e-4)
    assert stats.tokens[0] == len(trace.token_ids) - 1
    # offsets cover the program exactly; byte-level BPE may split one multi-byte character over two
    # tokens that both point at it, so join the spans without repeating overlaps
    text, end = "", 0
    for a, b in trace.offsets:
        assert a <= b and b >= end
        text += code[max(a, end):b]
        end = max(end, b)
    assert text == code and "é" in "".join(trace.token_texts)
    with pytest.raises(ValueError):
        trace_tokens(tiny_llama, "   ")
    with pytest.raises(ValueError):
        trace_tokens(tiny_llama, code, layers=[99])


def test_pooled_states_early_exit_equals_full_forward(tiny_llama, snippets):
    full = pooled_states(tiny_llama, snippets)
    early = pooled_states(tiny_llama, snippets, upto_layer=1, batch_tokens=64)
    assert full.shape == (len(snippets), tiny_llama.n_layers, 32)
    assert early.shape == (len(snippets), 2, 32)
    np.testing.assert_allclose(early, full[:, :2], rtol=1e-4, atol=1e-5)
    # reference: output_hidden_states of a plain forward, one snippet at a time
    for i, s in enumerate(snippets):
        ids = torch.tensor([encode(tiny_llama, s.code, 512).ids])
        with torch.no_grad():
            hs = tiny_llama.model(ids, output_hidden_states=True).hidden_states
        np.testing.assert_allclose(full[i, 0], hs[1][0][1:].mean(0).numpy(), rtol=1e-4, atol=1e-5)  # BOS excluded


def test_length_batches_respect_budget():
    lengths = [5, 50, 7, 49, 6, 100]
    batches = length_batches(lengths, batch_tokens=110, max_batch=3)
    assert sorted(i for b in batches for i in b) == list(range(6))
    for b in batches:
        assert len(b) <= 3 and len(b) * max(lengths[i] for i in b) <= 110 or len(b) == 1


def test_sample_losses_ignore_padding():
    logits = torch.randn(2, 4, 10)
    ids = torch.tensor([[1, 2, 3, 0], [4, 5, 6, 7]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    losses = sample_losses(logits, ids, mask)
    expected0 = F.cross_entropy(logits[0, :2], ids[0, 1:3])
    torch.testing.assert_close(losses[0], expected0)


def test_syntax_profile_and_top_k_match_traces(tiny_llama, snippets):
    from neuro.code.syntax import align_tokens
    from neuro.instrument.statistics import POSITION_BITS
    from neuro.instrument.tokens import encode

    k = 4
    stats = capture_statistics(tiny_llama, snippets, gradients=True, syntax=True, top_k=k, batch_tokens=150)
    types = stats.meta["node_types"]
    n_layers, width = tiny_llama.n_layers, tiny_llama.n_neurons
    type_sum = np.zeros((n_layers, len(types), width))
    type_count = np.zeros(len(types))
    everything = []  # (layer, value row over neurons, global id)
    for i, s in enumerate(snippets):
        trace = trace_tokens(tiny_llama, s.code)
        nodes = align_tokens(s.code, s.lang, encode(tiny_llama, s.code, 512).offsets)
        for t, node in enumerate(nodes):
            if t == 0:  # BOS: not one of the program's tokens, in neither the profile nor the top-k
                continue
            if node.type is not None:
                j = types.index(node.type) if node.type in types else types.index("(other)")
                type_sum[:, j] += trace.activations[:, t]
                type_count[j] += 1
            everything.append(((i << POSITION_BITS) + t, trace.activations[:, t]))
    np.testing.assert_allclose(stats.type_count, type_count)
    np.testing.assert_allclose(stats.type_sum, type_sum, rtol=1e-4, atol=1e-5)
    values = np.stack([v for _, v in everything], axis=1)  # (layers, tokens, neurons)
    ids = np.array([g for g, _ in everything])
    expected = -np.sort(-values, axis=1)[:, :k]
    np.testing.assert_allclose(stats.top_values, expected, rtol=1e-5, atol=1e-6)
    # the ids point at tokens whose activation is the recorded value
    for layer in range(n_layers):
        for n in range(0, width, 7):
            for rank in range(k):
                token = np.where(ids == stats.top_ids[layer, rank, n])[0][0]
                assert abs(values[layer, token, n] - stats.top_values[layer, rank, n]) < 1e-5
    # the extras do not change the per-language statistics
    plain = capture_statistics(tiny_llama, snippets, gradients=True)
    np.testing.assert_allclose(stats.pls_sum, plain.pls_sum, rtol=1e-4, atol=1e-8)


def test_merge_adds_sums_and_keeps_the_best_top_k(tiny_llama, snippets):
    whole = capture_statistics(tiny_llama, snippets, top_k=3)
    doubled = whole.merge(whole)
    np.testing.assert_allclose(doubled.act_abs_sum, 2 * whole.act_abs_sum)
    np.testing.assert_allclose(doubled.pls_sum, 2 * whole.pls_sum)
    # merging a shard with itself: every top value now appears twice, in order
    np.testing.assert_allclose(doubled.top_values[:, 0], whole.top_values[:, 0])
    np.testing.assert_allclose(doubled.top_values[:, 1], whole.top_values[:, 0])
    np.testing.assert_allclose(doubled.top_values[:, 2], whole.top_values[:, 1])


def test_sampled_token_states_match_hidden_states(tiny_llama, snippets):
    from neuro.instrument.states import layer_states

    states = layer_states(tiny_llama, snippets, tokens_per_snippet=3, batch_tokens=100, seed=1)
    assert states.tokens.shape == (len(states.token_index), tiny_llama.n_layers, 32)
    assert states.pooled.shape == (len(snippets), tiny_llama.n_layers, 32)
    for row, (i, pos) in enumerate(states.token_index):
        ids = torch.tensor([encode(tiny_llama, snippets[i].code, 512).ids])
        with torch.no_grad():
            hs = tiny_llama.model(ids, output_hidden_states=True).hidden_states
        np.testing.assert_allclose(states.tokens[row, 1], hs[2][0, pos].numpy(), rtol=1e-4, atol=1e-5)
