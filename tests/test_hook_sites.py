"""Named hook sites (neuro.model.adapters.HookSites) and the context that owns their hooks
(LoadedModel.hooks): the tensors the sites hand over against the activation computed by hand from the
weights and against the model's own hidden states; replacements land where they should; the lock and the
hooks do not outlive the context, even when its body raises."""

from __future__ import annotations

import copy
import math
import threading

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from neuro.instrument.losses import final_hidden, model_token_losses
from neuro.model.hook_sites import HookSite, cut_positions, head_input


def _ids(loaded, n: int = 9) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randint(3, len(loaded.tokenizer), (2, n))


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def _by_hand(loaded, layer: int, x: torch.Tensor) -> torch.Tensor:
    """The neuron activations of block `layer` from its FFN input x and the raw weights."""
    site = loaded.sites()[layer]
    if loaded.adapter.gated:  # Llama, Qwen2: silu(x W_gate^T) * (x W_up^T)
        gate, up = x @ site.gate.weight.T, x @ site.up.weight.T
        return gate * torch.sigmoid(gate) * up
    # GPT-2: Conv1D keeps its weight as (in, out); gelu_new is the tanh approximation
    return _gelu_tanh(x @ site.fc_in.weight + site.fc_in.bias)


def _all_hooks(model: nn.Module) -> set:
    """Every module hook of `model` (transformers installs its own output-capturing hooks, which stay)."""
    return {(id(m), kind, key) for m in model.modules()
            for kind, hooks in (("forward", m._forward_hooks), ("pre", m._forward_pre_hooks)) for key in hooks}


def test_neuron_input_is_the_activation_computed_from_the_weights(tiny):
    ids = _ids(tiny)
    sites = tiny.sites()
    ffn_in, got = {}, {}
    raw = [sites[layer].mlp.register_forward_pre_hook(lambda m, args, layer=layer: ffn_in.__setitem__(layer, args[0]))
           for layer in range(tiny.n_layers)]  # the FFN input, read by plain torch
    try:
        pairs = [(tiny.hook_sites.neuron_input(layer), lambda a, layer=layer: got.__setitem__(layer, a.clone()))
                 for layer in range(tiny.n_layers)]
        with tiny.hooks(pairs, inference=True):
            tiny.model(input_ids=ids)
    finally:
        for handle in raw:
            handle.remove()
    for layer in range(tiny.n_layers):
        assert got[layer].shape == (*ids.shape, tiny.n_neurons)
        torch.testing.assert_close(got[layer], _by_hand(tiny, layer, ffn_in[layer]), rtol=1e-5, atol=1e-6)


def test_block_output_is_the_models_hidden_state(tiny):
    ids = _ids(tiny)
    got = {}
    pairs = [(tiny.hook_sites.block_output(layer), lambda h, layer=layer: got.__setitem__(layer, h.clone()))
             for layer in range(tiny.n_layers)]
    with tiny.hooks(pairs, inference=True):
        hidden = tiny.model(input_ids=ids, output_hidden_states=True).hidden_states
    last = tiny.n_layers - 1
    for layer in range(last):
        torch.testing.assert_close(got[layer], hidden[layer + 1])
    # the model reports the last block's output through the final norm
    torch.testing.assert_close(tiny.final_norm(got[last]), hidden[last + 1])


def test_a_replaced_neuron_input_acts_like_zeroed_down_weights(tiny):
    """Zeroing neuron 3's activation in layer 1 through the site equals deleting its column of the FFN's
    output projection (a copy of the model, edited by hand)."""
    ids = _ids(tiny)

    def zero(a):
        a = a.clone()
        a[..., 3] = 0
        return a
    with tiny.hooks([(tiny.hook_sites.neuron_input(1), zero)], inference=True):
        hooked = tiny.model(input_ids=ids).logits
    edited = copy.deepcopy(tiny.model)
    down = tiny.adapter.hook_sites(edited).neuron_input(1).module
    with torch.no_grad():
        if isinstance(down, nn.Linear):
            down.weight[:, 3] = 0
        else:  # Conv1D: (in, out)
            down.weight[3, :] = 0
    with torch.inference_mode():
        expected = edited(input_ids=ids).logits
        plain = tiny.model(input_ids=ids).logits
    torch.testing.assert_close(hooked, expected)
    assert not torch.allclose(plain, expected)  # the edit had an effect to reproduce


def test_a_replaced_block_output_flows_on(tiny):
    """Patching block 0's output with the one another input gives makes the model answer as on that input:
    everything above block 0 reads only the residual stream (the positions are the same)."""
    ids = _ids(tiny)
    other = ids.flip(0)
    kept = {}
    with tiny.hooks([(tiny.hook_sites.block_output(0), lambda h: kept.__setitem__("h", h.clone()))], inference=True):
        expected = tiny.model(input_ids=other).logits
    with tiny.hooks([(tiny.hook_sites.block_output(0), lambda h: kept["h"])], inference=True):
        patched = tiny.model(input_ids=ids).logits
    with torch.inference_mode():
        plain = tiny.model(input_ids=ids).logits
    torch.testing.assert_close(patched, expected)
    assert not torch.allclose(plain, expected)


def test_hooks_on_one_site_run_in_the_order_given(tiny_llama):
    site = tiny_llama.hook_sites.neuron_input(0)
    seen = []
    pairs = [(site, lambda a: a + 1.0), (site, lambda a: seen.append(a.clone()))]
    plain = {}
    with tiny_llama.hooks([(site, lambda a: plain.__setitem__("a", a.clone()))], inference=True):
        tiny_llama.model(input_ids=_ids(tiny_llama))
    with tiny_llama.hooks(pairs, inference=True):
        tiny_llama.model(input_ids=_ids(tiny_llama))
    torch.testing.assert_close(seen[0], plain["a"] + 1.0)


class _TupleBlock(nn.Module):
    def forward(self, x):
        return x + 1, "extra"


def test_output_sites_unwrap_and_rewrap_a_tuple():
    block = _TupleBlock()
    seen = []
    handle = HookSite("block_output", 0, block, "output").attach(lambda h: seen.append(h) or h * 10)
    try:
        out = block(torch.ones(2))
    finally:
        handle.remove()
    torch.testing.assert_close(seen[0], torch.full((2,), 2.0))
    assert out[1] == "extra"
    torch.testing.assert_close(out[0], torch.full((2,), 20.0))


def test_input_sites_read_and_replace_a_keyword_argument():
    lin = nn.Linear(3, 2)
    x = torch.randn(4, 3)
    seen = []
    handle = HookSite("ffn_input", 0, lin, "input").attach(lambda t: seen.append(t) or torch.zeros_like(t))
    try:
        out = lin(input=x)
    finally:
        handle.remove()
    assert seen[0] is x
    torch.testing.assert_close(out, lin.bias.detach().expand(4, 2))


def test_sites_the_architecture_lacks_are_refused():
    from conftest import tiny_model

    phi = tiny_model("phi3")  # gate and up in one projection: no separate up output
    with pytest.raises(ValueError, match="up_output"):
        phi.hook_sites.up_output(0)


def _other_thread_gets(lock, timeout: float) -> bool:
    got = []

    def take():
        ok = lock.acquire(timeout=timeout)
        got.append(ok)
        if ok:
            lock.release()
    thread = threading.Thread(target=take)
    thread.start()
    thread.join()
    return got[0]


def test_an_error_inside_removes_every_hook_and_releases_the_lock(tiny):
    before = _all_hooks(tiny.model)
    sites = tiny.hook_sites
    pairs = [(sites.neuron_input(0), lambda a: None), (sites.block_output(1), lambda h: None),
             (sites.act_output(2), lambda a: None), (sites.call_kwargs(), lambda kwargs: None)]
    with pytest.raises(RuntimeError, match="boom"), tiny.hooks(pairs, inference=True) as handles:
        assert len(handles) == 4 and len(_all_hooks(tiny.model) - before) == 4
        assert torch.is_inference_mode_enabled()
        assert not _other_thread_gets(tiny.lock, 0.05)  # held while inside
        raise RuntimeError("boom")
    assert _all_hooks(tiny.model) == before
    assert not torch.is_inference_mode_enabled()
    assert _other_thread_gets(tiny.lock, 5.0)


def test_a_caller_holding_the_lock_may_nest_the_context(tiny_llama):
    """Statistics and path attribution hold the lock across several passes and attach hooks inside."""
    got = []
    before = _all_hooks(tiny_llama.model)
    with tiny_llama.lock:
        with tiny_llama.hooks([(tiny_llama.hook_sites.neuron_input(0), got.append)]):
            assert not torch.is_inference_mode_enabled()  # off unless asked: gradients flow
            tiny_llama.model(input_ids=_ids(tiny_llama))
        assert _all_hooks(tiny_llama.model) == before
        assert not _other_thread_gets(tiny_llama.lock, 0.05)  # the outer hold survives the inner exit
    assert _other_thread_gets(tiny_llama.lock, 5.0)
    assert len(got) == 1


def test_an_error_while_attaching_removes_what_was_attached(tiny_llama):
    class Broken:
        def attach(self, fn):
            raise RuntimeError("cannot attach")
    before = _all_hooks(tiny_llama.model)
    pairs = [(tiny_llama.hook_sites.neuron_input(0), lambda a: None), (Broken(), lambda a: None)]
    with pytest.raises(RuntimeError, match="cannot attach"), tiny_llama.hooks(pairs):
        pass
    assert _all_hooks(tiny_llama.model) == before
    assert _other_thread_gets(tiny_llama.lock, 5.0)


def test_gradients_flow_through_a_replaced_neuron_input(tiny_llama):
    """Outside inference mode a replacement stays on the autograd graph (fine-tuning and path attribution
    rely on it): d loss / d scale through `a * scale` is sum(a * dL/da')."""
    scale = torch.ones((), requires_grad=True)
    with tiny_llama.hooks([(tiny_llama.hook_sites.neuron_input(1), lambda a: a * scale)]):
        logits = tiny_llama.model(input_ids=_ids(tiny_llama)).logits
    F.log_softmax(logits, -1)[..., 5].sum().backward()
    assert scale.grad is not None and scale.grad.abs() > 0


def _final_norm_by_hand(loaded, x: torch.Tensor) -> torch.Tensor:
    """The final norm from its raw weights: RMSNorm (Llama, Qwen2) or LayerNorm with bias (GPT-2)."""
    norm = loaded.final_norm
    if loaded.adapter.gated:
        eps = norm.variance_epsilon
        return norm.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))
    mean = x.mean(-1, keepdim=True)
    var = (x - mean).pow(2).mean(-1, keepdim=True)
    return norm.weight * (x - mean) / torch.sqrt(var + norm.eps) + norm.bias


def test_head_input_is_the_last_hidden_state_after_the_final_norm(tiny):
    """The head-input site hands over output_hidden_states[-1], which is the last block's output put through
    the final norm computed by hand; left unchanged, the model's logits are the head of it."""
    ids = _ids(tiny)
    got = {}
    last = tiny.n_layers - 1
    pairs = [(tiny.hook_sites.block_output(last), lambda h: got.__setitem__("block", h.clone())),
             (tiny.hook_sites.head_input(), lambda h: got.__setitem__("head", h.clone()))]
    with tiny.hooks(pairs, inference=True):
        out = tiny.model(input_ids=ids, output_hidden_states=True)
    assert got["head"].shape == (*ids.shape, tiny.config.hidden_size)
    torch.testing.assert_close(got["head"], out.hidden_states[-1])
    torch.testing.assert_close(got["head"], _final_norm_by_hand(tiny, got["block"]), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.logits, got["head"] @ tiny.unembedding.weight.T)
    assert head_input(tiny.model).module is tiny.hook_sites.head_input().module is tiny.unembedding


def test_cut_head_input_makes_no_logits_and_keeps_the_losses(tiny):
    """final_hidden cuts the head to zero positions: the model returns empty logits, and the losses projected
    from the kept states equal cross-entropy over the model's own full logits."""
    ids = _ids(tiny)
    mask = torch.ones_like(ids)
    with torch.inference_mode():
        with final_hidden(tiny) as kept:
            cut = tiny.model(input_ids=ids).logits
        full = tiny.model(input_ids=ids).logits
        ce, _ = model_token_losses(tiny, ids, mask)
    assert cut.shape == (ids.shape[0], 0, full.shape[-1])
    torch.testing.assert_close(tiny.unembedding(kept["hidden"]), full)
    expected = F.cross_entropy(full[:, :-1].flatten(0, 1), ids[:, 1:].flatten(), reduction="none")
    torch.testing.assert_close(ce.flatten(), expected)


def test_head_input_applies_to_a_bare_module(tiny_llama):
    """A model without a LoadedModel (a peft-wrapped one in training, a narrow copy in the memory plan) gets
    the same site: its cut forward keeps the states the loaded model's site gives, and no hook stays."""
    ids = _ids(tiny_llama)
    before = _all_hooks(tiny_llama.model)
    with torch.inference_mode():
        with final_hidden(tiny_llama.model) as bare:
            assert len(_all_hooks(tiny_llama.model) - before) == 1
            tiny_llama.model(input_ids=ids)
        with final_hidden(tiny_llama) as loaded:
            tiny_llama.model(input_ids=ids)
    assert _all_hooks(tiny_llama.model) == before
    torch.testing.assert_close(bare["hidden"], loaded["hidden"])


@pytest.mark.parametrize("bare", [False, True])
def test_an_error_inside_final_hidden_removes_the_head_hook(tiny_llama, bare):
    before = _all_hooks(tiny_llama.model)
    with pytest.raises(RuntimeError, match="boom"), final_hidden(tiny_llama.model if bare else tiny_llama):
        assert len(_all_hooks(tiny_llama.model) - before) == 1
        assert bare or not _other_thread_gets(tiny_llama.lock, 0.05)  # a LoadedModel's lock is held inside
        raise RuntimeError("boom")
    assert _all_hooks(tiny_llama.model) == before
    assert _other_thread_gets(tiny_llama.lock, 5.0)
    with torch.inference_mode():  # the head reads every position again
        assert tiny_llama.model(input_ids=_ids(tiny_llama)).logits.shape[1] == _ids(tiny_llama).shape[1]


def test_cut_positions_keeps_batch_and_width():
    hidden = torch.randn(2, 5, 7)
    assert cut_positions(hidden).shape == (2, 0, 7)
