"""Architecture knowledge lives in one place: neuro.model.adapters.

1. No module of neuro/ outside neuro/model names a Hugging Face module (checked on the syntax tree).
2. Adding an architecture is one adapter entry: an architecture the table lacks is refused, and with one
   entry added every core path (gradient statistics, ablation, layer states, logit lens, LoRA target
   choice) works on it, checked against references computed without the project's code.
3. The modules of neuro.model import each other without cycles.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_tokenizer
from test_capture import _assert_matches, reference_statistics

from neuro.model.adapters import ADAPTERS, Adapter, NeuronSite, UnsupportedArchitecture
from neuro.model.loading import load_model, prepare

ROOT = Path(__file__).resolve().parents[1]

# --- 1. module names only in neuro/model ------------------------------------------------------------

# Components of the table's paths that are also ordinary words (dict keys such as "model" or "layers",
# `state[layer, "act"]`, the C header suffix in "common.h"): banning them alone would flag honest code.
# They are still caught inside a dotted path ("model.layers", "transformer.h").
ORDINARY_WORDS = {"model", "layers", "h", "act", "norm", "transformer"}
# Names the project never needs, because it reaches these modules through transformers' own accessors
# (get_input_embeddings / get_output_embeddings): naming them would be new architecture knowledge.
UNNAMED_MODULES = {"lm_head", "embed_tokens", "embed_in", "embed_out", "wte", "wpe"}


def _table_paths() -> set[str]:
    """Every module path the adapter table holds (blocks, FFN parts, final norm)."""
    return {value for adapter in ADAPTERS.values() for f in dataclasses.fields(adapter)
            if f.name != "name" and isinstance(value := getattr(adapter, f.name), str)}


def _banned() -> tuple[set[str], set[tuple[str, ...]]]:
    """(component names banned on their own, dotted paths banned as a run of components)."""
    paths = _table_paths()
    components = {part for path in paths for part in path.split(".")}
    # architecture names ("gpt_neox" is also a module) are model types, legitimately compared anywhere
    names = (components - ORDINARY_WORDS - set(ADAPTERS)) | UNNAMED_MODULES
    return names, {tuple(path.split(".")) for path in paths if "." in path}


_DOTTED = re.compile(r"\w+(\.\w+)*")


def module_name_violations(source: str) -> list[tuple[int, str]]:
    """(line, text) of each place `source` names a model module.

    The rule: a string literal (an f-string's literal pieces included; docstrings and other prose,
    anything not a dotted identifier, are ignored) that, with its surrounding dots stripped, is a dotted
    identifier with a banned component (`down_proj`, `c_fc`, `mlp`, ...) or contains a table path as a
    run of components (`model.layers.0`); and an attribute access of a banned component
    (`mlp.gate_proj`) unless it is a field of Adapter / NeuronSite (`site.mlp` is the project's API).
    """
    names, paths = _banned()
    fields = {f.name for cls in (Adapter, NeuronSite) for f in dataclasses.fields(cls)}
    tree = ast.parse(source)
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            text = node.value.strip(".")
            if not _DOTTED.fullmatch(text):
                continue
            parts = tuple(text.split("."))
            runs = {parts[i:j] for i in range(len(parts)) for j in range(i + 2, len(parts) + 1)}
            if names & set(parts) or paths & runs:
                found.append((node.lineno, node.value))
        elif isinstance(node, ast.Attribute) and node.attr in names - fields:
            found.append((node.lineno, f".{node.attr}"))
    return sorted(found)


def test_the_rule_catches_module_names_and_spares_ordinary_words():
    bad = '''
INPUT = {"gpt2": "c_fc", "gpt_neox": "dense_h_to_4h"}
prefix = f"{blocks}.{layer}.mlp."
head = getattr(model, "lm_head")
blocks = "model.layers"
gate = mlp.gate_proj
'''
    assert [line for line, _ in module_name_violations(bad)] == [2, 2, 3, 4, 5, 6]
    fine = '''
"""Docstrings may say down_proj."""
row = {"model": source, "layers": layers, "norm": 1.0}
state[layer, "act"] = out
header, weights = "common.h", "model.safetensors"
prefix = f"{blocks}.{layer}."
mlp = site.mlp
kind = model_type == "gpt_neox"
message = "the FFN input projection (c_fc) is missing"
'''
    assert module_name_violations(fine) == []


def test_only_neuro_model_names_model_modules():
    found = []
    for path in sorted((ROOT / "neuro").rglob("*.py")):
        if (ROOT / "neuro" / "model") in path.parents:
            continue
        found += [f"{path.relative_to(ROOT)}:{line}: {text!r}"
                  for line, text in module_name_violations(path.read_text(encoding="utf-8"))]
    assert not found, "module names belong in neuro/model/adapters.py:\n" + "\n".join(found)


# --- 2. one adapter entry per architecture ----------------------------------------------------------

NEW_KIND = "phi"  # Phi-1/2: FFN fc1 -> activation_fn -> fc2 under `mlp`, final norm `final_layernorm`
NEW_ENTRY = Adapter(NEW_KIND, blocks="model.layers", mlp="mlp", down="fc2", act="activation_fn", fc_in="fc1",
                    final_norm="model.final_layernorm")
N_LAYERS, N_NEURONS = 3, 48


def tiny_new_model(seed: int = 0):
    import transformers as T

    tokenizer = make_tokenizer()
    torch.manual_seed(seed)
    config = T.PhiConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=N_NEURONS,
                         num_hidden_layers=N_LAYERS, num_attention_heads=4)
    model = T.AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=torch.float32)
    return model, tokenizer


def test_adding_an_architecture_is_one_adapter_entry(monkeypatch, tmp_path, snippets):
    assert NEW_KIND not in ADAPTERS, f"{NEW_KIND} is supported now: pick another architecture for this test"
    model, tokenizer = tiny_new_model()
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    with pytest.raises(UnsupportedArchitecture, match=f"'{NEW_KIND}'"):
        prepare(model, tokenizer, source="tiny-phi")
    with pytest.raises(UnsupportedArchitecture):
        load_model(tmp_path, device="cpu")

    monkeypatch.setitem(ADAPTERS, NEW_KIND, NEW_ENTRY)  # the one entry

    loaded = load_model(tmp_path, device="cpu")
    assert (loaded.n_layers, loaded.n_neurons) == (N_LAYERS, N_NEURONS)
    assert [site.fc_in.out_features for site in loaded.sites()] == [N_NEURONS] * N_LAYERS
    _check_statistics(loaded, snippets)
    _check_ablation(loaded, snippets)
    _check_layer_states(loaded, snippets)
    _check_logit_lens(loaded, snippets[0].code)
    _check_lora_targets(loaded)


def _check_statistics(loaded, snippets):
    from neuro.instrument.statistics import capture_statistics

    stats = capture_statistics(loaded, snippets, gradients=True, batch_tokens=200)
    assert stats.pls().shape == (len(stats.languages), N_LAYERS, N_NEURONS)
    assert (stats.pls() > 0).all()
    _assert_matches(stats, reference_statistics(loaded, snippets), snippets)  # a plain per-token loop


def _check_ablation(loaded, snippets):
    from neuro.instrument.ablation import ablated, language_losses

    neurons = {0: [1, 5, 7], 2: [0, 3, 40]}
    base = language_losses(loaded, snippets)
    with ablated(loaded, neurons):
        inside = language_losses(loaded, snippets)
    assert language_losses(loaded, snippets) == base  # the hooks are gone
    assert all(abs(inside[lang] - base[lang]) > 1e-6 for lang in base)
    reference = copy.deepcopy(loaded.model)  # the same neurons removed from the weights instead
    with torch.no_grad():
        for layer, idx in neurons.items():
            reference.model.layers[layer].mlp.fc2.weight[:, idx] = 0
    expected = language_losses(prepare(reference, loaded.tokenizer, "ref", "ref"), snippets)
    for lang in base:
        assert inside[lang] == pytest.approx(expected[lang], rel=1e-5)


def _check_layer_states(loaded, snippets):
    from neuro.instrument.states import layer_states
    from neuro.instrument.tokens import encode

    states = layer_states(loaded, snippets, upto_layer=1)
    assert states.pooled.shape == (len(snippets), 2, loaded.model.config.hidden_size)
    for i, s in enumerate(snippets):
        ids = torch.tensor([encode(loaded, s.code, 512).ids])
        with torch.no_grad():
            hidden = loaded.model(input_ids=ids, output_hidden_states=True).hidden_states
        for layer in range(2):  # hidden_states[l + 1] is block l's output; the pool leaves out BOS
            np.testing.assert_allclose(states.pooled[i, layer], hidden[layer + 1][0, 1:].mean(0).numpy(),
                                       rtol=1e-4, atol=1e-5)


def _check_logit_lens(loaded, code):
    from neuro.analysis.lens import logit_lens

    lens = logit_lens(loaded, code, top_k=3)
    assert lens.top_ids.shape == (N_LAYERS, len(lens.token_ids), 3)
    with torch.no_grad():
        probs = torch.softmax(loaded.model(input_ids=torch.tensor([lens.token_ids])).logits[0], -1)
    np.testing.assert_array_equal(lens.top_ids[-1, :, 0], probs.argmax(-1).numpy())
    expected = probs[:-1].gather(1, torch.tensor(lens.token_ids[1:])[:, None])[:, 0].numpy()
    np.testing.assert_allclose(lens.next_prob[-1], expected, rtol=1e-4, atol=1e-7)
    assert not np.array_equal(lens.top_ids[0], lens.top_ids[-1])  # earlier blocks are read, not the output


def _check_lora_targets(loaded):
    from neuro.training.lora import apply_lora, linear_modules, lora_size

    block = linear_modules(loaded, [1])
    expected = {f"model.layers.1.{name}" for name in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                                      "self_attn.dense", "mlp.fc1", "mlp.fc2")}
    assert set(block) == expected
    ffn = linear_modules(loaded, [0, 2], ffn_only=True)
    assert ffn == ["model.layers.0.mlp.fc1", "model.layers.0.mlp.fc2", "model.layers.2.mlp.fc1",
                   "model.layers.2.mlp.fc2"]
    fresh = prepare(copy.deepcopy(loaded.model), loaded.tokenizer, "lora", "lora")
    apply_lora(fresh, ffn, rank=2)
    trainable = sum(p.numel() for p in fresh.model.parameters() if p.requires_grad)
    assert trainable == lora_size(loaded, ffn, 2) == 2 * 2 * 2 * (32 + N_NEURONS)


# --- 3. no import cycle in neuro.model --------------------------------------------------------------

def test_neuro_model_has_no_import_cycle():
    graph = {}
    for path in (ROOT / "neuro" / "model").glob("*.py"):
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("neuro.model."):
                imported.add(node.module.split(".")[2])
            elif isinstance(node, ast.Import):
                imported |= {a.name.split(".")[2] for a in node.names if a.name.startswith("neuro.model.")}
        graph[path.stem] = imported

    def visit(name, stack):
        assert name not in stack, f"import cycle: {' -> '.join([*stack, name])}"
        for dep in graph.get(name, ()):
            visit(dep, [*stack, name])
    for name in graph:
        visit(name, [])
