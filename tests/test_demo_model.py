"""The embedded demo model: loads offline with plain transformers, tokenizer offsets, and the pure
functions of its build script (filtering, decontamination, balancing, schedule, baseline)."""

import json

import numpy as np
import pytest
import torch

from neuro.paths import DEMO_MODEL_DIR, demo_model_available
from tools.demo_model import (
    ExclusionIndex,
    SourceFile,
    balance,
    decontaminate,
    is_validation,
    lr_at,
    reject_reason,
    unigram_nll,
)

needs_model = pytest.mark.skipif(not demo_model_available(), reason="demo model not in this checkout")


@needs_model
def test_loads_offline_with_plain_transformers():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(DEMO_MODEL_DIR)
    tok = AutoTokenizer.from_pretrained(DEMO_MODEL_DIR)
    assert model.config.model_type == "llama" and model.config.num_hidden_layers >= 8
    assert model.dtype == torch.float32
    assert (DEMO_MODEL_DIR / "model.safetensors").stat().st_size <= 25_000_000
    text = 's = "héllo → wörld"\n'
    enc = tok(text, return_offsets_mapping=True, add_special_tokens=False)
    assert enc["offset_mapping"][0][0] == 0 and enc["offset_mapping"][-1][1] == len(text)
    ids = torch.tensor([tok("def add(a, b):\n    return a + b\n")["input_ids"]])
    with torch.no_grad():
        loss = model(ids, labels=ids).loss
    assert loss.item() < 6.0  # far better than chance (ln 8192 = 9.0) on ordinary code


@needs_model
def test_model_card_reports_the_quality_bar():
    metrics = json.loads((DEMO_MODEL_DIR / "metrics.json").read_text())
    card = (DEMO_MODEL_DIR / "README.md").read_text()
    assert "unigram" in card.lower() and "python -m tools.demo_model" in card
    text = json.dumps(metrics)
    assert all(lang in text for lang in ("cpp", "java", "python", "go", "javascript"))


def _file(text, path="a.py", lang="python"):
    return SourceFile(lang=lang, source="test", path=path, text=text)


def test_decontamination_drops_files_sharing_a_program():
    program = "\n".join(f"line_{i} = {i} * 2" for i in range(10))
    index = ExclusionIndex(n=8)
    index.add(program)
    clean = _file("\n".join(f"other_{i} = {i}" for i in range(30)))
    dirty = _file("header = 1\n" + program + "\nfooter = 2\n", path="b.py")
    kept, dropped = decontaminate([clean, dirty], index)
    assert kept == [clean] and dropped == [dirty]
    # re-indenting does not hide a copy
    respaced = _file("\n".join("    " + ln for ln in program.splitlines()), path="c.py")
    assert index.matches(respaced.text) == index.matches(program)


def test_filters_balance_split_schedule_and_baseline():
    assert reject_reason("x = 1\n") == "near_empty"
    files = {"python": [_file("a" * 100, f"{i}.py") for i in range(10)],
             "go": [_file("b" * 100, f"{i}.go", "go") for i in range(3)]}
    balanced = balance(files, budget=10_000)
    assert sum(f.nbytes for f in balanced["python"]) <= 300 and len(balanced["go"]) == 3
    split = [is_validation(_file("x", f"{i}.py"), 0.1) for i in range(2000)]
    assert 0.05 < np.mean(split) < 0.15 and split == [is_validation(_file("x", f"{i}.py"), 0.1) for i in range(2000)]
    assert lr_at(0.0, 1.0, 0.1) == 0.0 and lr_at(0.1, 1.0, 0.1) == pytest.approx(1.0)
    assert lr_at(1.0, 1.0, 0.1) == pytest.approx(0.1)
    counts = np.array([3.0, 1.0])
    nll, n = unigram_nll(counts, np.array([[0, 0, 1]]))
    assert n == 2 and nll == pytest.approx(-(np.log(4 / 6) + np.log(2 / 6)))
