"""Cache identity sees every byte of the weights: an edited neuron is a different model, on disk and in
memory; an unchanged folder is hashed once (the digest memo); a hub snapshot is never read."""

from __future__ import annotations

import hashlib
import json
import os
import struct

import numpy as np
import pytest
import torch
from conftest import SNIPPETS, make_tokenizer, tiny_model

from neuro.model import identity as models
from neuro.model.identity import module_fingerprint, weights_fingerprint
from neuro.model.loading import load_model, prepare
from neuro.results.statistics import STATS
from neuro.results.store import Store

MIB = 1 << 20
EDITED = "model.layers.2.mlp.down_proj.weight"


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Keep the digest memo of these tests out of the repository's cache."""
    monkeypatch.setenv("NEURO_CACHE", str(tmp_path / "cache"))


@pytest.fixture()
def count_hashing(monkeypatch):
    calls = []
    real = models._hash_file

    def counting(path):
        calls.append(path)
        return real(path)
    monkeypatch.setattr(models, "_hash_file", counting)
    return calls


def _tensor_span(path, name: str) -> tuple[int, int]:
    """Byte range of one tensor inside a safetensors file (from its JSON header)."""
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(n))
    start, end = header[name]["data_offsets"]
    return 8 + n + start, 8 + n + end


def _five_mib_llama():
    """A random llama of ~5 MiB of float32 weights: large enough that its middle layers lie outside
    the first and last MiB of the file (all the old sampled fingerprint read)."""
    import transformers as T

    tokenizer = make_tokenizer()
    torch.manual_seed(0)
    config = T.LlamaConfig(vocab_size=len(tokenizer), hidden_size=128, intermediate_size=384, num_hidden_layers=5,
                           num_attention_heads=4, num_key_value_heads=2)
    model = T.AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=torch.float32)
    return model, tokenizer


def test_one_edited_weight_in_a_middle_layer_is_a_new_model(tmp_path, monkeypatch):
    monkeypatch.setattr(models, "_RACY_NS", 0)  # memoize at once: the memo must still see the edit
    folder, store = tmp_path / "model", Store(tmp_path / "results")
    model, tokenizer = _five_mib_llama()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    weights = folder / "model.safetensors"
    size = weights.stat().st_size
    start, end = _tensor_span(weights, EDITED)
    assert MIB < start and end < size - MIB, "the edit must lie where the old sampled fingerprint never looked"

    original = load_model(folder, device="cpu")
    snippets = SNIPPETS[:4]
    first, hit = STATS.fetch(original, snippets, gradients=True, syntax=False, top_k=0, cache=store)
    assert not hit
    assert STATS.fetch(original, snippets, gradients=True, syntax=False, top_k=0, cache=store)[1]

    with torch.no_grad():
        model.get_parameter(EDITED)[7, 11] += 0.5  # one weight of one neuron's output row
    model.save_pretrained(folder)  # saved in place, as a fine-tune would
    assert weights.stat().st_size == size

    edited = load_model(folder, device="cpu")
    assert edited.identity != original.identity
    assert edited.fingerprint == weights_fingerprint(folder)
    stats, hit = STATS.fetch(edited, snippets, gradients=True, syntax=False, top_k=0, cache=store)
    assert not hit, "the edited model must not be shown the original model's cached statistics"
    assert not np.allclose(stats.pls_sum, first.pls_sum) or not np.allclose(stats.act_abs_sum, first.act_abs_sum)


def test_the_memo_skips_unchanged_files_and_rehashes_touched_ones(tmp_path, monkeypatch, count_hashing):
    monkeypatch.setattr(models, "_RACY_NS", 0)
    folder, memo = tmp_path / "model", tmp_path / "memo" / "digests.json"
    folder.mkdir()
    weights = folder / "model.safetensors"
    weights.write_bytes(os.urandom(3 * MIB))
    (folder / "config.json").write_text("{}")

    fp = weights_fingerprint(folder, memo)
    assert len(count_hashing) == 1 and memo.is_file()
    assert weights_fingerprint(folder, memo) == fp and len(count_hashing) == 1  # unchanged: not read again

    st = weights.stat()
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns - 5_000_000_000))  # touched: read again
    assert weights_fingerprint(folder, memo) == fp and len(count_hashing) == 2
    assert weights_fingerprint(folder, memo) == fp and len(count_hashing) == 2

    # same size, same mtime restored (cp -p, rsync -t): the ctime still moves, so it is read again
    st = weights.stat()
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 1
    with open(weights, "r+b") as fh:
        fh.write(data)
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))
    changed = weights_fingerprint(folder, memo)
    assert changed != fp and len(count_hashing) == 3


def test_a_corrupt_or_unwritable_memo_is_never_fatal(tmp_path, monkeypatch, count_hashing):
    monkeypatch.setattr(models, "_RACY_NS", 0)
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"weights" * 1000)
    memo = tmp_path / "digests.json"
    memo.write_text("{half a memo")
    fp = weights_fingerprint(folder, memo)
    assert json.loads(memo.read_text())["version"] == models._MEMO_VERSION  # rewritten
    memo.write_text(json.dumps({"version": models._MEMO_VERSION, "files": {"x": 3}}))
    assert weights_fingerprint(folder, memo) == fp
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    assert weights_fingerprint(folder, blocked / "digests.json") == fp  # cannot be created: only re-hashed
    assert not list(tmp_path.glob(".*.tmp"))
    assert fp == hashlib.sha256(b"neuro-weights-v2\nmodel.safetensors\0"
                                + hashlib.sha256(b"weights" * 1000).hexdigest().encode() + b"\n").hexdigest()[:16]


def test_a_just_written_file_is_not_memoized(tmp_path, count_hashing):
    """Within one timestamp tick a rewrite could keep size and mtime: such a file is read every time."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"x" * 100)
    weights_fingerprint(folder, tmp_path / "memo.json")
    weights_fingerprint(folder, tmp_path / "memo.json")
    assert len(count_hashing) == 2


def test_the_default_memo_lives_in_the_cache_root(tmp_path, monkeypatch):
    monkeypatch.setattr(models, "_RACY_NS", 0)
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"x" * 100)
    weights_fingerprint(folder)
    assert (tmp_path / "cache" / models.DIGEST_MEMO).is_file()


def _swap(t: torch.Tensor, i: int, j: int) -> None:
    flat = t.view(-1)
    flat[i], flat[j] = flat[j].clone(), flat[i].clone()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_module_fingerprint_sees_a_value_deep_inside_a_tensor(dtype):
    loaded = tiny_model("llama")
    model = loaded.model.to(dtype)
    embed = model.get_input_embeddings().weight
    assert embed.numel() > 9000
    base = module_fingerprint(model)
    assert module_fingerprint(model) == base
    with torch.no_grad():
        assert embed.view(-1)[5000] != embed.view(-1)[9000]
        _swap(embed, 5000, 9000)  # beyond the first 4096 values, and the sum is unchanged
        swapped = module_fingerprint(model)
        _swap(embed, 5000, 9000)
        assert module_fingerprint(model) == base
        flat = embed.view(-1)
        flat[8000] = torch.nextafter(flat[8000], torch.tensor(float("inf"), dtype=dtype))  # one ulp
        nudged = module_fingerprint(model)
    assert len({base, swapped, nudged}) == 3
    assert prepare(model, loaded.tokenizer, source="x").fingerprint == nudged


def test_module_fingerprint_sees_dtype_and_buffers():
    loaded = tiny_model("llama")
    fp32 = module_fingerprint(loaded.model)
    buffers = dict(loaded.model.named_buffers())
    assert buffers, "llama keeps its rotary frequencies as a buffer"
    buf = next(iter(buffers.values()))
    with torch.no_grad():
        kept = buf.view(-1)[-1].clone()
        buf.view(-1)[-1] += 1.0
        assert module_fingerprint(loaded.model) != fp32
        buf.view(-1)[-1] = kept
    assert module_fingerprint(loaded.model) == fp32
    assert module_fingerprint(loaded.model.to(torch.bfloat16)) != fp32


def _hub_snapshot(root, content: bytes, rev: str = "0123abcd"):
    """The Hugging Face hub cache layout: snapshots/<rev>/<file> -> ../../blobs/<sha256 of the file>."""
    repo = root / "models--org--tiny"
    (repo / "blobs").mkdir(parents=True)
    snapshot = repo / "snapshots" / rev
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(rev)
    blob = repo / "blobs" / hashlib.sha256(content).hexdigest()
    blob.write_bytes(content)
    (snapshot / "model.safetensors").symlink_to(os.path.relpath(blob, snapshot))
    config = repo / "blobs" / hashlib.sha1(b"{}").hexdigest()  # small files are named by their git sha1
    config.write_text("{}")
    (snapshot / "config.json").symlink_to(os.path.relpath(config, snapshot))
    return snapshot


def test_a_hub_snapshot_uses_the_blob_names_without_reading(tmp_path, monkeypatch):
    content = os.urandom(MIB + 17)
    snapshot = _hub_snapshot(tmp_path / "hub", content)

    def no_reading(path):
        raise AssertionError(f"{path} was read")
    with monkeypatch.context() as m:
        m.setattr(models, "_hash_file", no_reading)
        fp = weights_fingerprint(snapshot, tmp_path / "memo.json")
    assert not (tmp_path / "memo.json").exists()

    local = tmp_path / "local-copy"
    local.mkdir()
    (local / "model.safetensors").write_bytes(content)
    assert weights_fingerprint(local, tmp_path / "memo.json") == fp  # same bytes, same identity
    (local / "model.safetensors").write_bytes(content[:-1] + bytes([content[-1] ^ 1]))
    assert weights_fingerprint(local, tmp_path / "memo.json") != fp


def test_a_symlink_that_is_not_a_hub_blob_is_read(tmp_path, count_hashing):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "weights.bin").write_bytes(b"w" * 64)
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.safetensors").symlink_to(elsewhere / "weights.bin")
    weights_fingerprint(folder, tmp_path / "memo.json")
    assert len(count_hashing) == 1


def test_cli_cache_option_keeps_the_digest_memo_in_that_cache(tmp_path, monkeypatch):
    """`--cache X` writes the memo into X, not into $NEURO_CACHE (nor cache/), and leaves $NEURO_CACHE as it was."""
    from neuro.cli import main

    monkeypatch.setattr(models, "_RACY_NS", 0)
    folder = tmp_path / "model"
    loaded = tiny_model("llama")
    loaded.model.save_pretrained(folder)
    loaded.tokenizer.save_pretrained(folder)
    other, chosen = tmp_path / "cache", tmp_path / "chosen"  # `other` is $NEURO_CACHE (the autouse fixture)
    assert main(["info", "--model", str(folder), "--device", "cpu", "--cache", str(chosen), "--json"]) == 0
    memo = json.loads((chosen / models.DIGEST_MEMO).read_text())
    assert str((folder / "model.safetensors").resolve()) in memo["files"]
    assert not other.exists()  # nothing at all was written into the other cache
    assert os.environ["NEURO_CACHE"] == str(other)
    assert main(["info", "--model", str(folder), "--device", "cpu", "--json"]) == 0  # without --cache: $NEURO_CACHE
    assert (other / models.DIGEST_MEMO).is_file()
