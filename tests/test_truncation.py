"""Programs longer than max_length are cut, and the cut is counted and said: `Encoded.truncated`, the
corpus count (`truncation`), the meta of cached statistics, every CLI summary that encodes a corpus, and a
caption on the pages. Ground truth: each program's length from a plain tokenizer call."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import SNIPPETS, make_tokenizer, tiny_config

from neuro.code.corpus import Snippet, save_jsonl
from neuro.code.split import split_corpus
from neuro.instrument.tokens import encode, truncation
from neuro.model.loading import prepare


def tiny(bos: bool):
    """The tiny Llama with the test tokenizer, with its BOS or as a tokenizer that adds none."""
    from transformers import AutoModelForCausalLM

    tokenizer = make_tokenizer()
    if not bos:
        tokenizer.bos_token = None
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config("llama", len(tokenizer)), attn_implementation="eager")
    return prepare(model, tokenizer, source=f"tiny-llama-{'bos' if bos else 'nobos'}")


@pytest.fixture(scope="module", params=[True, False], ids=["bos", "no-bos"])
def loaded(request):
    return tiny(request.param)


def length(loaded, code: str) -> int:
    """Tokens the model reads for the whole program: the tokenizer's own count, plus the BOS if any."""
    tok = loaded.tokenizer
    return len(tok(code, add_special_tokens=False)["input_ids"]) + (tok.bos_token_id is not None)


def test_a_program_longer_than_max_length_is_marked_and_cut_to_its_first_tokens(loaded):
    code = SNIPPETS[4].code
    n = length(loaded, code)
    whole = encode(loaded, code, n)
    assert len(whole.ids) == n and not whole.truncated
    bos = loaded.tokenizer.bos_token_id
    assert (whole.ids[0] == bos) if bos is not None else (whole.ids[0] != make_tokenizer().bos_token_id)
    for limit in (n - 1, n // 2, 2):
        cut = encode(loaded, code, limit)
        assert cut.truncated and len(cut.ids) == limit
        assert cut.ids == whole.ids[:limit] and cut.offsets == whole.offsets[:limit]
    assert not encode(loaded, code, n + 1).truncated


def test_the_corpus_count_is_the_number_of_programs_longer_than_max_length(loaded):
    lengths = [length(loaded, s.code) for s in SNIPPETS]
    limit = sorted(lengths)[len(lengths) // 2]  # one program sits exactly at the limit: not cut
    expected = sum(n > limit for n in lengths)
    assert 0 < expected < len(SNIPPETS)
    counted = truncation(loaded, SNIPPETS, limit)
    assert (counted.programs, counted.of, counted.max_length) == (expected, len(SNIPPETS), limit)
    assert counted.caption().startswith(f"{expected} of {len(SNIPPETS)} programs are longer than {limit} tokens")
    assert truncation(loaded, SNIPPETS, max(lengths)).caption() is None


def test_the_statistics_meta_carries_the_count(loaded):
    from neuro.instrument.statistics import capture_statistics

    lengths = [length(loaded, s.code) for s in SNIPPETS]
    limit = sorted(lengths)[len(lengths) // 2]
    stats = capture_statistics(loaded, SNIPPETS, gradients=False, max_length=limit)
    expected = {"count": sum(n > limit for n in lengths), "of": len(SNIPPETS), "max_length": limit}
    assert stats.meta["truncated_programs"] == expected
    # a chunk of the corpus (a resumable pass) counts the programs it read; the cached total sums the chunks
    part = capture_statistics(loaded, SNIPPETS, gradients=False, max_length=limit, indices=[0, 1])
    assert part.meta["truncated_programs"] == {"count": sum(n > limit for n in lengths[:2]), "of": 2,
                                               "max_length": limit}


# --------------------------------------------------------------------------- the CLI's --json summaries
LONG_PROGRAM = Snippet("long/python", "python", "long", "def long(xs):\n" + "    xs = [x + 1 for x in xs]\n" * 40
                       + "    return xs\n", "A long one.")


@pytest.fixture(scope="module")
def cli_setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("truncation-cli")
    loaded = tiny(bos=True)
    loaded.model.save_pretrained(folder / "model")
    loaded.tokenizer.save_pretrained(folder / "model")
    corpus = [*SNIPPETS, LONG_PROGRAM]
    save_jsonl(corpus, folder / "corpus.jsonl")
    return folder, loaded, corpus


@pytest.mark.parametrize("command, side", [
    (["capture", "--no-syntax", "--top-k", "0"], "selection"),
    (["neurons", "--permutations", "0"], "selection"),
    (["ablate", "--draws", "1"], "all"),
    (["layers", "--no-contribution"], "selection"),
    (["clones", "eval"], "all"),
    (["findings"], "all"),
])
def test_every_corpus_command_reports_the_programs_it_cut(cli_setup, command, side, capsys):
    from neuro.cli import main

    folder, loaded, corpus = cli_setup
    limit = 40
    read = corpus if side == "all" else split_corpus(corpus).selection
    expected = sum(length(loaded, s.code) > limit for s in read)
    assert 1 <= expected < len(read)  # the long program is cut, on either side (and others are not)
    args = [*command, "--model", str(folder / "model"), "--corpus", str(folder / "corpus.jsonl"),
            "--max-length", str(limit), "--cache", str(folder / "cache"), "--json"]
    assert main(args) == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out)
    assert summary["truncated_programs"] == {"count": expected, "of": len(read), "max_length": limit}


# --------------------------------------------------------------------------- the pages' caption
def test_the_pages_caption_appears_only_when_a_program_is_cut():
    from streamlit.testing.v1 import AppTest

    def page():
        from conftest import SNIPPETS, tiny_model

        from views.ui import truncation_caption

        loaded = tiny_model("llama")
        truncation_caption(loaded, SNIPPETS, max_length=12)
        truncation_caption(loaded, SNIPPETS, max_length=100_000)

    at = AppTest.from_function(page, default_timeout=60)
    at.run()
    assert not at.exception
    loaded = tiny(bos=True)
    cut = sum(length(loaded, s.code) > 12 for s in SNIPPETS)
    assert [c.value for c in at.caption] == [f"{cut} of {len(SNIPPETS)} programs are longer than 12 tokens: only "
                                             "their first 12 tokens are analysed."]
