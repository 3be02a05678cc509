"""Tokenizer training and uint16 token streams (real code and parallel programs)."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from tools.demo_model.corpus import build_exclusion_index, expand_globs, read_split
from tools.demo_model.settings import BOS, DEFAULT_EXCLUDE, EOS, LANGS, PAD, log, write_json


def train_tokenizer(work: Path, vocab_size: int = 8192):
    """Byte-level BPE on the training split of all languages, wrapped as PreTrainedTokenizerFast."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                  special_tokens=[BOS, EOS, PAD],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    texts = (rec["text"] for lang in LANGS for rec in read_split(work, lang, "train"))
    tok.train_from_iterator(texts, trainer)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B",
                                      special_tokens=[(BOS, bos_id)]),
    ])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD,
                                   model_max_length=2048, clean_up_tokenization_spaces=False)
    out = work / "tokenizer"
    fast.save_pretrained(out)
    return fast


def byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's byte-to-unicode table used by byte-level BPE vocabularies."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("\xa1"), ord("\xac") + 1), *range(ord("\xae"), 256)]
    cs = bs[:]
    extra = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(bs, cs, strict=True)}


def check_offsets(tokenizer, text: str = 's = "héllo → wörld"  # ünïcödé ✓\n') -> dict:
    """Character offsets are monotonic, cover the text exactly and contain each token's bytes.

    A multi-byte character split over several byte tokens gives each of them that character's span
    (the Hugging Face convention), so spans may overlap; the text is rebuilt from the new part of
    each span. Decoding must also round-trip, and the bos token comes first with an empty span.
    """
    enc = tokenizer(text, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    decoder = byte_decoder()
    rebuilt, prev_start, prev_end, ok = [], 0, 0, True
    for tok_id, (a, b) in zip(ids, offsets, strict=True):
        if tok_id in tokenizer.all_special_ids:
            ok &= a == b
            continue
        ok &= prev_start <= a <= b and prev_end <= b
        token_bytes = bytes(decoder[ch] for ch in tokenizer.convert_ids_to_tokens(tok_id))
        ok &= token_bytes in text[a:b].encode("utf-8")
        rebuilt.append(text[max(a, prev_end):b])
        prev_start, prev_end = a, b
    ok &= "".join(rebuilt) == text and ids[0] == tokenizer.bos_token_id
    ok &= tokenizer.decode(ids, skip_special_tokens=True) == text
    return {"text": text, "tokens": len(ids), "offsets_ok": bool(ok)}


def encode_files(tokenizer, texts: list[str], batch: int = 256) -> Iterator[np.ndarray]:
    """Token ids of each text framed as ``<s> ... </s>``."""
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    backend = tokenizer.backend_tokenizer
    for i in range(0, len(texts), batch):
        for enc in backend.encode_batch(texts[i:i + batch], add_special_tokens=False):
            yield np.asarray([bos, *enc.ids, eos], dtype=np.uint16)


def write_stream(path: Path, arrays: Iterable[np.ndarray]) -> int:
    """Concatenate uint16 arrays into a raw ``.bin`` file; returns the token count."""
    n = 0
    with open(path, "wb") as fh:
        for arr in arrays:
            fh.write(arr.tobytes())
            n += len(arr)
    return n


def pretokenize(work: Path, seed: int = 0) -> dict:
    """``tokens/train.bin`` (all languages, files shuffled) and ``tokens/val_{lang}.bin``."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(work / "tokenizer")
    assert len(tok) <= 65535, "uint16 streams need a vocabulary below 65536"
    out = work / "tokens"
    out.mkdir(parents=True, exist_ok=True)
    stats: dict = {"train_tokens": {}, "val_tokens": {}, "val_bytes": {}}
    train_texts: list[tuple[str, str]] = []
    for lang in LANGS:
        train_texts.extend((lang, rec["text"]) for rec in read_split(work, lang, "train"))
        val = [rec["text"] for rec in read_split(work, lang, "val")]
        stats["val_tokens"][lang] = write_stream(out / f"val_{lang}.bin", encode_files(tok, val))
        stats["val_bytes"][lang] = sum(len(t.encode("utf-8")) for t in val)
    random.Random(seed).shuffle(train_texts)
    per_lang: Counter = Counter()

    def counted() -> Iterator[np.ndarray]:
        for (lang, _), arr in zip(train_texts, encode_files(tok, [t for _, t in train_texts]), strict=True):
            per_lang[lang] += len(arr)
            yield arr

    total = write_stream(out / "train.bin", counted())
    stats["train_tokens"] = dict(per_lang)
    stats["train_tokens_total"] = total
    counts = np.bincount(np.memmap(out / "train.bin", dtype=np.uint16, mode="r"), minlength=len(tok))
    np.save(out / "train_counts.npy", counts)
    stats["vocab_size"] = len(tok)
    stats["offsets_check"] = check_offsets(tok)
    write_json(work / "token_stats.json", stats)
    return stats


def parallel_stream(work: Path, layout: str, tokens: int, seed: int = 1, exclude: Iterable[str] | None = None,
                    ngram: int = 8) -> dict:
    """``tokens/parallel_{layout}.bin``: decontaminated parallel-program documents, ``tokens`` tokens or more.

    The documents come from ``tools.parallel_programs`` (programs generated from a typed form and
    rendered in the five languages), never from evaluation data; any document sharing a normalized
    ``ngram``-line window with an excluded program is dropped and counted. Training mixes this stream
    with the real-code stream at a chosen share (``train --parallel-share``).
    """
    from transformers import AutoTokenizer

    from tools.parallel_programs.documents import DropCount, documents

    tok = AutoTokenizer.from_pretrained(work / "tokenizer")
    out = work / "tokens"
    out.mkdir(parents=True, exist_ok=True)
    excl_paths = expand_globs(DEFAULT_EXCLUDE if exclude is None else exclude)
    index = build_exclusion_index(excl_paths, n=ngram)
    count = DropCount()
    per_lang: Counter = Counter()
    made = {"docs": 0, "tokens": 0}

    def arrays() -> Iterator[np.ndarray]:
        chunk = []
        # an upper bound on documents: generation stops once the token budget is met
        for doc in documents(10 * tokens, seed=seed, layout=layout, index=index, count=count):
            chunk.append(doc)
            if len(chunk) == 256:
                yield from encoded(chunk)
                chunk = []
                if made["tokens"] >= tokens:
                    return
        yield from encoded(chunk)

    def encoded(docs: list) -> Iterator[np.ndarray]:
        for doc, arr in zip(docs, encode_files(tok, [d.text for d in docs]), strict=True):
            made["docs"] += 1
            made["tokens"] += len(arr)
            for lang in doc.langs:
                per_lang[lang] += len(arr) / len(doc.langs)
            yield arr

    total = write_stream(out / f"parallel_{layout}.bin", arrays())
    stats = {"layout": layout, "seed": seed, "documents": made["docs"], "tokens": total,
             "tokens_per_language": {k: round(v) for k, v in sorted(per_lang.items())},
             "generated": count.generated, "dropped_by_decontamination": count.dropped,
             "exclude_files": [str(p) for p in excl_paths], "exclude_programs": index.programs}
    write_json(work / f"parallel_{layout}_stats.json", stats)
    log.info("parallel %s: %d documents, %d tokens, %d of %d dropped by decontamination", layout,
             made["docs"], total, count.dropped, count.generated)
    return stats
