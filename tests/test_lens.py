"""Logit lens: the last block read through the final norm and unembedding is the model's output; ranks
and probabilities of the actual next token match a reference; the demo model's loss falls with depth."""

import json

import numpy as np
import pytest
import torch
from conftest import tiny_model

from neuro.analysis.lens import LogitLens, logit_lens
from neuro.cli import main
from neuro.paths import DEMO_MODEL_DIR, demo_model_available

CODE = "def add(a, b):\n    return a + b\n\nprint(add(1, 2))\n"


@pytest.mark.parametrize("kind", ["llama", "qwen2", "gpt2", "gpt_neox", "gemma2"])
def test_last_layer_is_the_model_output(kind):
    loaded = tiny_model(kind)
    lens = logit_lens(loaded, CODE, top_k=3)
    assert lens.layers == list(range(loaded.n_layers))
    assert lens.top_ids.shape == (loaded.n_layers, len(lens.token_ids), 3)
    ids = torch.tensor([lens.token_ids])
    with torch.no_grad():
        probs = torch.softmax(loaded.model(input_ids=ids).logits[0].float(), -1)
    np.testing.assert_array_equal(lens.top_ids[-1, :, 0], probs.argmax(-1).numpy())
    np.testing.assert_array_equal(lens.output_top, probs.argmax(-1).numpy())
    targets = ids[0, 1:]
    expected = probs[:-1].gather(1, targets[:, None])[:, 0].numpy()
    np.testing.assert_allclose(lens.next_prob[-1], expected, rtol=1e-4, atol=1e-7)
    rows = probs[:-1].numpy()  # rank = 1 + the number of tokens the model finds strictly more likely
    reference = 1 + np.array([(row > row[t]).sum() for row, t in zip(rows, targets.tolist())])
    np.testing.assert_array_equal(lens.next_rank[-1], reference)
    np.testing.assert_allclose(lens.top_probs.sum(-1) <= 1 + 1e-5, True)
    summary = lens.layer_summary()
    assert summary["agrees with output"].iloc[-1] == 1.0
    assert len(lens.top_texts[0][0]) == 3 and all(isinstance(t, str) for t in lens.top_texts[0][0])


def test_layer_subset_and_bad_input(tiny_llama):
    lens = logit_lens(tiny_llama, CODE, layers=[1, 0])
    assert lens.layers == [0, 1] and lens.top_ids.shape[0] == 2
    full = logit_lens(tiny_llama, CODE)
    np.testing.assert_array_equal(lens.top_ids, full.top_ids[:2])
    np.testing.assert_array_equal(lens.output_top, full.output_top)  # the output is read even when not asked
    assert full.truncated_from == 0
    short = logit_lens(tiny_llama, CODE, max_length=8)
    assert len(short.token_ids) == 8 and short.truncated_from == len(full.token_ids)
    np.testing.assert_allclose(short.next_prob, full.next_prob[:, :7], rtol=1e-4, atol=1e-7)  # causal: same prefix
    with pytest.raises(ValueError, match="layers must lie in 0..2"):
        logit_lens(tiny_llama, CODE, layers=[3])
    with pytest.raises(ValueError, match="no code"):
        logit_lens(tiny_llama, "  \n")


def test_first_agreeing_layer():
    # output top-1 per position: 7, 8, 9; layers 0, 2, 4 predict:
    top = np.array([[7, 1, 9], [7, 8, 1], [7, 8, 9]])[:, :, None]
    lens = LogitLens("", [1, 2, 3], [(0, 0)] * 3, [0, 2, 4], top, np.ones_like(top, dtype=np.float32), [],
                     np.ones((3, 2), dtype=np.int64), np.ones((3, 2), dtype=np.float32), np.array([7, 8, 9]))
    # position 0 agrees from layer 0; position 1 from layer 2; position 2 disagrees at layer 2, so from 4
    np.testing.assert_array_equal(lens.first_agreeing_layer(), [0, 2, 4])


@pytest.mark.skipif(not demo_model_available(), reason="demo model not in this checkout")
def test_demo_model_predicts_better_with_depth():
    from neuro.model.loading import load_model

    demo_model = load_model(DEMO_MODEL_DIR)
    lens = logit_lens(demo_model, CODE * 3)
    scores = lens.layer_summary().set_index("layer")
    last = demo_model.n_layers - 1
    assert scores.loc[last, "agrees with output"] == 1.0
    assert scores.loc[last, "next-token loss"] < scores.loc[0, "next-token loss"] - 0.5
    assert scores.loc[last, "top-5 accuracy"] > scores.loc[0, "top-5 accuracy"]


def test_cli_lens_json(tmp_path, capsys, saved_tiny):
    folder = saved_tiny("llama")
    (tmp_path / "q.py").write_text(CODE)
    assert main(["lens", "--model", str(folder), "--code-file", str(tmp_path / "q.py"), "--layers", "0", "2",
                 "--per-token", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["layers"] == [0, 2] and [r["layer"] for r in result["scores"]] == [0, 2]
    assert result["per_token"][0]["position"] == 0 and set(result["per_token"][0]["top1_by_layer"]) == {"0", "2"}
    assert main(["lens", "--model", str(folder), "--json"]) == 2  # no code given
    assert "error" in json.loads(capsys.readouterr().out)


def test_token_frame(tiny_llama):
    lens = logit_lens(tiny_llama, CODE, layers=[0, 2])
    n = len(lens.token_ids)
    frame = lens.token_frame(n - 3)
    assert len(frame) == 2 * 3 and set(frame.layer) == {0, 2}
    row = frame[(frame.layer == 2) & (frame.position == n - 2)].iloc[0]
    assert row.next == lens.token_texts[n - 1] and row.next_prob == pytest.approx(lens.next_prob[1, n - 2])
    assert row.top1 == lens.top_texts[1][n - 2][0] and row.next_rank == lens.next_rank[1, n - 2]
    assert np.isnan(frame[frame.position == n - 1].next_prob).all()  # the last token has no next one
