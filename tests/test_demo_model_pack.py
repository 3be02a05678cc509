"""Carrying the training data to a GPU machine: pack / unpack, and the prepared GPU training command run on the CPU
at a tiny size (what comes back must be a loadable model within the device tool's file limits)."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from neuro.paths import DEMO_MODEL_DIR
from tools.demo_model.pack import pack, packed_streams, unpack

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "demo_model" / "gpu_train.sh"


@pytest.fixture
def work(tmp_path) -> Path:
    """A built work folder in miniature: the demo tokenizer, random token streams, statistics files."""
    if not (DEMO_MODEL_DIR / "tokenizer.json").is_file():
        pytest.skip("demo tokenizer not in this checkout")
    w = tmp_path / "work"
    (w / "tokens").mkdir(parents=True)
    (w / "tokenizer").mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(DEMO_MODEL_DIR / name, w / "tokenizer" / name)
    rng = np.random.default_rng(0)
    for name in packed_streams("alone"):
        if name.endswith(".bin"):
            rng.integers(3, 8192, size=20_000 if name == "train.bin" else 2_000, dtype=np.uint16).tofile(
                w / "tokens" / name)
    np.save(w / "tokens" / "train_counts.npy", np.ones(8192, dtype=np.int64))
    for name in ("corpus_stats.json", "token_stats.json", "parallel_alone_stats.json"):
        (w / name).write_text(json.dumps({"name": name}))
    return w


def test_pack_round_trip_is_byte_identical_and_checked(work, tmp_path):
    packed = tmp_path / "pack"
    summary = pack(work, packed, "alone")
    assert set(summary["streams"]) == set(packed_streams("alone")) and summary["mib"] < 1
    again = tmp_path / "again"
    unpack(packed, again)
    for name in packed_streams("alone"):
        assert (again / "tokens" / name).read_bytes() == (work / "tokens" / name).read_bytes()
    assert (again / "tokenizer" / "tokenizer.json").read_bytes() == (work / "tokenizer" / "tokenizer.json").read_bytes()
    assert json.loads((again / "parallel_alone_stats.json").read_text()) == {"name": "parallel_alone_stats.json"}

    # a stream that no longer matches its checksum is refused, not trained on
    manifest = json.loads((packed / "manifest.json").read_text())
    manifest["streams"]["val_go.bin"]["sha256"] = "0" * 64
    (packed / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SystemExit, match="val_go.bin does not match"):
        unpack(packed, tmp_path / "third")
    assert not (tmp_path / "third" / "tokens" / "val_go.bin").exists()


def test_pack_refuses_what_it_cannot_carry(work, tmp_path):
    with pytest.raises(SystemExit, match="over the 0.01 MiB budget; nothing written"):
        pack(work, tmp_path / "big", None, budget_mib=0.01)
    assert not (tmp_path / "big").exists()
    (work / "tokens" / "val_java.bin").unlink()
    with pytest.raises(SystemExit, match="lacks val_java.bin"):
        pack(work, tmp_path / "p", None)
    with pytest.raises(SystemExit, match="lacks .*parallel_pairs.bin"):
        pack(work, tmp_path / "p", "pairs")


@pytest.mark.slow
def test_gpu_script_trains_the_chosen_recipe_and_returns_a_loadable_sharded_model(work, tmp_path):
    """The prepared command itself, on the CPU at a tiny size (TRAIN_ARGS override the architecture)."""
    from transformers import AutoModelForCausalLM

    packed, out = tmp_path / "pack", tmp_path / "out"
    pack(work, packed, "alone")
    env = {**os.environ, "PYTHON": sys.executable, "PACK": str(packed), "OUT": str(out), "WORK": str(tmp_path / "w"),
           "MAX_TOKENS": str(6 * 2 * 32), "MAX_MINUTES": "5",
           "TRAIN_ARGS": "--hidden 64 --intermediate 128 --heads 4 --kv-heads 2 --ctx 32 --batch-size 2 "
                         "--threads 1 --log-every 1 --eval-every 3 --max-shard-mb 1.2 --snapshot-minutes 0.000001"}
    done = subprocess.run(["bash", str(SCRIPT)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) <= 8, files  # what the device tool brings back
    shards = sorted((out / "model").glob("model-*.safetensors"))
    assert len(shards) >= 2 and all(p.stat().st_size <= 1.2e6 for p in shards)
    assert not list(out.glob("model.*"))  # no staging folder left behind
    log = (out / "train.out").read_text()
    assert "snapshot at step 1 " in log and "snapshot at step 5 " in log  # saved as it went, not only at the end
    metrics = json.loads((out / "train_metrics.json").read_text())
    assert (metrics["parallel_share"], metrics["parallel_layout"], metrics["steps"]) == (0.10, "alone", 6)
    model = AutoModelForCausalLM.from_pretrained(out / "model")
    assert model.dtype == torch.float32 and model.config.hidden_size == 64
    x = torch.from_numpy(np.fromfile(work / "tokens" / "val_go.bin", dtype=np.uint16)[:33].astype(np.int64))[None]
    with torch.no_grad():
        loss = model(input_ids=x, labels=x).loss.item()
    assert np.isfinite(loss) and loss < 9.5  # log(8192) = 9.01 at initialisation; trained weights stay near it


def test_gpu_script_architecture_is_the_largest_under_the_size_cap_and_uses_the_chosen_recipe():
    from transformers import LlamaForCausalLM

    from tools.demo_model.training import model_config

    text = SCRIPT.read_text()
    arch = dict(re.findall(r"--(layers|hidden|intermediate|heads|kv-heads) (\d+)", text.split("ARCH=(")[1]))
    recipe = text.split("RECIPE=(")[1].split(")")[0]
    readme = (ROOT / "README.md").read_text()
    assert f"all {recipe}" in readme.replace("\n", " ")  # the README's chosen recipe, flag for flag
    with torch.device("meta"):
        model = LlamaForCausalLM(model_config(8192, layers=int(arch["layers"]), hidden=int(arch["hidden"]),
                                              intermediate=int(arch["intermediate"]), heads=int(arch["heads"]),
                                              kv_heads=int(arch["kv-heads"])))
    size = 2 * sum(p.numel() for p in model.parameters())
    assert int(arch["layers"]) >= 8 and size <= 25e6
    with torch.device("meta"):  # one step wider (hidden + 32, FFN 4x) no longer fits
        wider = LlamaForCausalLM(model_config(8192, layers=8, hidden=int(arch["hidden"]) + 32,
                                              intermediate=4 * (int(arch["hidden"]) + 32)))
    assert 2 * sum(p.numel() for p in wider.parameters()) > 25e6


def test_save_model_swaps_whole_folders_and_keeps_the_card(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    from tools.demo_model.training import model_config, save_model

    if not (DEMO_MODEL_DIR / "tokenizer.json").is_file():
        pytest.skip("demo tokenizer not in this checkout")
    tok = AutoTokenizer.from_pretrained(DEMO_MODEL_DIR)
    torch.manual_seed(0)
    model = LlamaForCausalLM(model_config(8192, layers=8, hidden=64, intermediate=128, heads=4, kv_heads=2))
    out = tmp_path / "model"
    save_model(model, tok, out)  # one file
    (out / "README.md").write_text("card")
    save_model(model, tok, out, max_shard_mb=1.2)  # now sharded: the single file must not linger beside the shards
    assert not (out / "model.safetensors").exists() and len(list(out.glob("model-*.safetensors"))) >= 2
    assert (out / "README.md").read_text() == "card"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]

    out.rename(tmp_path / "model.old")  # killed between the two renames: the next save recovers the old folder
    save_model(model, tok, out)
    assert (out / "README.md").read_text() == "card" and not (tmp_path / "model.old").exists()
    loaded = AutoModelForCausalLM.from_pretrained(out)
    x = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        expect = model.to(torch.bfloat16).float()(input_ids=x).logits
        assert torch.allclose(loaded(input_ids=x).logits, expect, atol=1e-4)
