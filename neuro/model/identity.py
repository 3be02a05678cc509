"""Model identity for cache keys: a fingerprint of the weights' bytes (not of the path they came from),
with the files' digests remembered so a multi-GB model is not re-hashed on every load."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch import nn

from neuro import atomic
from neuro.paths import cache_dir

log = logging.getLogger(__name__)


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")

DIGEST_MEMO = "weight-digests.json"  # in the cache in use (cache_dir(): $NEURO_CACHE, which the CLI's --cache sets)

_MEMO_VERSION = 1

_RACY_NS = 2_000_000_000  # a file changed this recently may change again within one timestamp tick

_CHUNK = 1 << 23

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def _hash_file(path: Path) -> str:
    """sha256 of a whole file, streamed through one reused buffer (hashlib releases the GIL)."""
    h = hashlib.sha256()
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def _hub_blob_digest(path: Path) -> str | None:
    """The sha256 a hub cache snapshot file is named by (`snapshots/<rev>/f -> ../../blobs/<sha256>`),
    or None for anything else (a plain file, a git blob named by its sha1, another kind of link)."""
    if not path.is_symlink():
        return None
    target = path.resolve()
    blobs = target.parent
    if blobs.name != "blobs" or not (blobs.parent / "snapshots").is_dir() or not target.is_file():
        return None
    return target.name if _SHA256_HEX.fullmatch(target.name) else None


def _stat_key(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _read_memo(path: Path) -> dict[str, dict]:
    """The remembered digests; empty when the memo is missing, unreadable or not ours (never fatal)."""
    try:
        data = json.loads(path.read_text())
        if data.get("version") == _MEMO_VERSION and isinstance(data.get("files"), dict):
            return {k: v for k, v in data["files"].items()
                    if isinstance(v, dict) and isinstance(v.get("digest"), str) and isinstance(v.get("stat"), list)}
    except (OSError, ValueError, AttributeError):
        pass
    return {}


def _write_memo(path: Path, new: dict[str, dict]) -> None:
    """Merge `new` into the memo (re-read now: another process may have added entries), drop entries
    of files that are gone, and replace it atomically. A read-only cache only costs re-hashing."""
    files = {k: v for k, v in _read_memo(path).items() if os.path.exists(k)}
    files.update(new)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_json(path, {"version": _MEMO_VERSION, "files": files}, sort_keys=True)
    except OSError as err:
        log.debug("could not keep weight digests in %s: %s", path, err)


def file_digests(paths: Sequence[Path], memo: Path | None = None) -> list[str]:
    """sha256 of each file: from the hub cache's blob names, from the memo when the file is unchanged,
    else read (several files in parallel). `memo` default: DIGEST_MEMO in the cache in use, read when
    called (the CLI's `--cache X` makes X the cache in use, see neuro.cli.cache_in_use)."""
    memo = Path(memo) if memo is not None else cache_dir() / DIGEST_MEMO
    remembered = _read_memo(memo)
    digests: list[str | None] = []
    todo: dict[int, tuple[Path, str, os.stat_result]] = {}
    for i, path in enumerate(paths):
        digest = _hub_blob_digest(path)
        if digest is None:
            real = path.resolve()
            st = real.stat()
            record = remembered.get(str(real))
            if record is not None and record["stat"] == _stat_key(st):
                digest = record["digest"]
            else:
                todo[i] = (real, str(real), st)
        digests.append(digest)
    if todo:
        workers = min(len(todo), 4, os.cpu_count() or 1)
        with ThreadPoolExecutor(workers) as pool:
            hashed = dict(zip(todo, pool.map(lambda item: _hash_file(item[0]), todo.values())))
        now, new = time.time_ns(), {}
        for i, digest in hashed.items():
            real, key, before = todo[i]
            digests[i] = digest
            try:
                after = real.stat()
            except OSError:
                continue
            # remember only a file that did not change while it was read and is not racily recent
            stable = _stat_key(after) == _stat_key(before)
            if stable and now - max(after.st_mtime_ns, after.st_ctime_ns) >= _RACY_NS:
                new[key] = {"stat": _stat_key(after), "digest": digest}
        if new:
            _write_memo(memo, new)
    return [d for d in digests if d is not None]


def model_identity(model_type: str, fingerprint: str) -> str:
    """The cache identity: architecture plus weights fingerprint (one format for loaded models and references)."""
    return f"{model_type}@{fingerprint}"


def weights_fingerprint(folder: Path, memo: Path | None = None) -> str:
    """Fingerprint of every byte of a folder's weight files (with their names relative to the folder)."""
    folder = Path(folder)
    paths = sorted(p for p in folder.rglob("*") if p.suffix in WEIGHT_SUFFIXES and p.is_file())
    h = hashlib.sha256(b"neuro-weights-v2\n")
    for path, digest in zip(paths, file_digests(paths, memo), strict=True):
        h.update(f"{path.relative_to(folder).as_posix()}\0{digest}\n".encode())
    return h.hexdigest()[:16]


def _tensor_bytes(t: torch.Tensor):
    """The raw bytes of a tensor (any dtype, bf16 included: viewed as bytes in torch, not numpy)."""
    t = t.detach()
    if t.is_meta:
        return b"meta"
    try:
        return t.contiguous().reshape(-1).view(torch.uint8).cpu().numpy()
    except (RuntimeError, TypeError):  # e.g. a quantized tensor: hash its values instead
        return t.dequantize().float().cpu().numpy().tobytes() if t.is_quantized else str(t.tolist()).encode()


def module_fingerprint(model: nn.Module) -> str:
    """Fingerprint of every value of every parameter and buffer of an in-memory model (built from a
    config, fine-tuned in place), with their names, shapes and dtypes."""
    h = hashlib.sha256(b"neuro-module-v2\n")
    named = [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]
    with torch.no_grad():
        for name, t in named:
            h.update(f"{name}\0{tuple(t.shape)}\0{t.dtype}\n".encode())
            h.update(_tensor_bytes(t))
    return h.hexdigest()[:16]
