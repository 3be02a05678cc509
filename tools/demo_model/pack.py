"""Pack the training streams for a machine that receives only a capped working tree (a GPU run).

The uint16 token streams are ~76 MB raw; xz (the standard library's lzma) brings the training stream, the
validation streams and one parallel-program stream to ~17 MB, inside the ~35 MiB a carried folder may take.
A manifest holds each stream's SHA-256, so the unpacked copy is checked byte for byte before training reads it.
"""

from __future__ import annotations

import json
import lzma
import shutil
from pathlib import Path

from neuro.model.identity import DIGEST_MEMO, file_digests
from tools.demo_model.settings import LANGS, log, write_json

PACK_BUDGET_MIB = 35.0
CHUNK = 1 << 20


def packed_streams(layout: str | None) -> list[str]:
    """Files under ``tokens/`` that training and evaluation read (the parallel stream only with a layout)."""
    names = ["train.bin", "train_counts.npy", *(f"val_{lang}.bin" for lang in LANGS)]
    return names + ([f"parallel_{layout}.bin"] if layout else [])


def packed_stats(layout: str | None) -> list[str]:
    """Statistics files the model card reads (the parallel stream's only with a layout)."""
    return ["corpus_stats.json", "token_stats.json"] + ([f"parallel_{layout}_stats.json"] if layout else [])


def _folder_mib(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def pack(work: Path, out: Path, layout: str | None = None, budget_mib: float = PACK_BUDGET_MIB) -> dict:
    """Write ``out`` (xz streams, tokenizer, statistics, manifest.json) from a built work folder."""
    missing = [n for n in packed_streams(layout) if not (work / "tokens" / n).is_file()]
    missing += [n for n in packed_stats(layout) if not (work / n).is_file()]
    missing += [] if (work / "tokenizer" / "tokenizer.json").is_file() else ["tokenizer/tokenizer.json"]
    if missing:
        raise SystemExit(f"pack: {work} lacks {', '.join(missing)} (build the corpus, tokenizer and streams first)")
    if out.exists():
        shutil.rmtree(out)
    (out / "tokens").mkdir(parents=True)
    names = packed_streams(layout)
    sources = [work / "tokens" / name for name in names]
    for name, src in zip(names, sources, strict=True):
        with src.open("rb") as f, lzma.open(out / "tokens" / f"{name}.xz", "wb", preset=6) as z:
            shutil.copyfileobj(f, z, CHUNK)
    files = {name: {"sha256": digest, "bytes": src.stat().st_size}
             for name, src, digest in zip(names, sources, file_digests(sources, memo=work / DIGEST_MEMO), strict=True)}
    shutil.copytree(work / "tokenizer", out / "tokenizer")
    for name in packed_stats(layout):
        shutil.copy2(work / name, out / name)
    manifest = {"layout": layout, "streams": files, "stats": packed_stats(layout)}
    write_json(out / "manifest.json", manifest)
    size = _folder_mib(out)
    if size > budget_mib:
        shutil.rmtree(out)
        raise SystemExit(f"pack: {size:.1f} MiB is over the {budget_mib:g} MiB budget; nothing written")
    log.info("packed %d streams into %s: %.1f MiB", len(files), out, size)
    return {**manifest, "mib": round(size, 2)}


def unpack(packed: Path, work: Path) -> dict:
    """Restore a packed folder into ``work``, checking every stream against the manifest's SHA-256."""
    manifest_path = packed / "manifest.json"
    if not manifest_path.is_file():
        raise SystemExit(f"unpack: {packed} has no manifest.json (not written by `pack`)")
    manifest = json.loads(manifest_path.read_text())
    (work / "tokens").mkdir(parents=True, exist_ok=True)
    targets = {name: work / "tokens" / name for name in manifest["streams"]}
    for name, dst in targets.items():
        with lzma.open(packed / "tokens" / f"{name}.xz", "rb") as z, dst.open("wb") as f:
            shutil.copyfileobj(z, f, CHUNK)
    digests = file_digests(list(targets.values()), memo=work / DIGEST_MEMO)
    for (name, dst), digest in zip(targets.items(), digests, strict=True):
        if digest != manifest["streams"][name]["sha256"]:
            dst.unlink()
            raise SystemExit(f"unpack: {name} does not match its manifest checksum (corrupt or edited pack)")
    if (work / "tokenizer").exists():
        shutil.rmtree(work / "tokenizer")
    shutil.copytree(packed / "tokenizer", work / "tokenizer")
    for name in manifest["stats"]:
        shutil.copy2(packed / name, work / name)
    log.info("unpacked %d streams into %s", len(manifest["streams"]), work)
    return manifest
