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


def test_mixed_batch_draws_the_parallel_share_and_leaves_the_plain_recipe_unchanged():
    from tools.demo_model import mixed_batch, sample_batch

    real = np.full(5000, 5, dtype=np.uint16)
    parallel = np.full(5000, 7, dtype=np.uint16)
    plain = sample_batch(np.arange(5000, dtype=np.uint16), 8, 16, np.random.default_rng(3))
    same = mixed_batch(np.arange(5000, dtype=np.uint16), parallel, 0.0, 8, 16, np.random.default_rng(3))
    assert torch.equal(plain, same)  # share 0: the same random windows as before the option existed
    rows = torch.cat([mixed_batch(real, parallel, 0.25, 8, 16, np.random.default_rng(s)) for s in range(500)])
    assert rows.shape == (4000, 17)
    assert set(rows.unique().tolist()) == {5, 7}
    from_parallel = (rows[:, 0] == 7).float()
    assert bool(((rows == 7).all(1) | (rows == 5).all(1)).all())  # a row never mixes the two streams
    # 4,000 Bernoulli(0.25) rows: sd 0.0068, so +-0.03 is over 4 sd
    assert abs(from_parallel.mean().item() - 0.25) < 0.03


@needs_model
def test_parallel_stream_meets_its_budget_and_drops_documents_of_excluded_programs(tmp_path):
    import gzip
    import shutil

    from tools.demo_model import parallel_stream
    from tools.parallel_programs.documents import documents

    work = tmp_path / "work"
    (work / "tokenizer").mkdir(parents=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(DEMO_MODEL_DIR / name, work / "tokenizer" / name)
    first = next(documents(1, seed=4, layout="pairs"))
    excluded = tmp_path / "eval.jsonl.gz"
    with gzip.open(excluded, "wt") as fh:  # an "evaluation" program identical to the first document
        fh.write(json.dumps({"code": first.text}) + "\n")
    stats = parallel_stream(work, "pairs", tokens=3000, seed=4, exclude=[str(excluded)])
    stream = np.fromfile(work / "tokens" / "parallel_pairs.bin", dtype=np.uint16)
    assert len(stream) == stats["tokens"] >= 3000
    assert stats["dropped_by_decontamination"] >= 1 and stats["exclude_programs"] == 1
    assert stats["generated"] == stats["documents"] + stats["dropped_by_decontamination"]
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(work / "tokenizer")
    text = tok.decode(stream.tolist())
    assert first.text not in text  # the excluded document never reaches the stream
    assert "// " in text and sum(stats["tokens_per_language"].values()) == pytest.approx(stats["tokens"], abs=5)


@needs_model
def test_card_describes_the_parallel_mix_and_rebuilds_it():
    from tools.demo_model import render_card

    m = json.loads((DEMO_MODEL_DIR / "metrics.json").read_text())
    m["config"] = json.loads((DEMO_MODEL_DIR / "config.json").read_text())
    plain = render_card(m)
    assert "parallel" not in plain.split("## Rebuild")[1].split("## Limits")[0]
    assert "Parallel programs" not in plain and "## Recipe experiment" not in plain
    m["train"] = {**m["train"], "parallel_share": 0.25, "parallel_layout": "pairs"}
    m["parallel"] = {"layout": "pairs", "seed": 1, "tokens": 4_055_838, "documents": 10_752, "generated": 10_760,
                     "dropped_by_decontamination": 8, "tokens_per_language": {"cpp": 1, "go": 2}}
    m["experiment"] = ("# Recipe experiment (baseline: a)\n\n## Corpus `demo`\n\n"
                       "| recipe | MAP@R |\n|---|---|\n| plain | 0.5 |")
    card = render_card(m)
    rebuild = card.split("## Rebuild")[1]
    assert "python -m tools.demo_model parallel --layout pairs --tokens 4055838 --program-seed 1" in rebuild
    assert "--parallel-share 0.25 --parallel-layout pairs" in rebuild
    assert rebuild.index("pretokenize") < rebuild.index("parallel --layout") < rebuild.index("train --max")
    assert "25% of training rows" in card and "dropped 8 of 10,760" in card
    assert "## Recipe experiment" in card and "| plain | 0.5 |" in card
    assert "### Corpus `demo`" in card and "# Recipe experiment (baseline" not in card  # nested under the card's


def test_all_builds_the_chosen_mix_in_order(tmp_path, monkeypatch):
    """`all --parallel-share 0.10 --parallel-layout alone` (the recipe chosen for a longer run) writes the `alone`
    stream after the real-code tokens and before training, and trains on it; share 0 skips the stream."""
    import tools.demo_model.cli as cli

    calls = []
    for name in ("fetch_js", "build_corpus", "train_tokenizer", "pretokenize", "train", "evaluate",
                 "check_overlap", "card"):
        monkeypatch.setattr(cli, name, lambda *a, _n=name, **k: calls.append((_n, a)))
    monkeypatch.setattr(cli, "parallel_stream", lambda work, layout, tokens, seed, *rest:
                        calls.append(("parallel_stream", (layout, tokens, seed))))
    cli.main(["--work-dir", str(tmp_path), "all", "--parallel-share", "0.10", "--parallel-layout", "alone"])
    names = [n for n, _ in calls]
    assert names.index("pretokenize") < names.index("parallel_stream") < names.index("train")
    assert dict(calls)["parallel_stream"] == ("alone", 4_000_000, 1)
    trained = dict(calls)["train"][0]
    assert (trained.parallel_share, trained.parallel_layout) == (0.10, "alone")
    calls.clear()
    cli.main(["--work-dir", str(tmp_path), "all"])
    assert "parallel_stream" not in [n for n, _ in calls] and dict(calls)["train"][0].parallel_share == 0.0
