"""Load Hugging Face causal LMs and name their neuron sites through one adapter table.

A neuron is one channel of the FFN's intermediate activation: the input of the FFN's output
projection. The adapter table below says, per architecture, where the transformer blocks live and
what their FFN sub-modules are called; nothing else in the project knows module names.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable, Sequence

import torch
from torch import nn

from .paths import cache_dir

log = logging.getLogger(__name__)


class ModelLoadError(RuntimeError):
    """A model that cannot be loaded; the message says why and what to do."""


class UnsupportedArchitecture(ModelLoadError):
    pass


def _intermediate(config) -> int:
    return int(config.intermediate_size)


def _inner_or_4x(config) -> int:
    return int(getattr(config, "n_inner", None) or 4 * config.n_embd)


@dataclass(frozen=True)
class Adapter:
    """Where an architecture keeps its blocks and FFN parts (attribute names, dotted from the model).

    `down` is the FFN output projection: its input is the neuron activation. `up` (gated FFNs) is the
    projection whose output is multiplied by act(gate): its gradient gives |a * dL/da| without holding
    `a`. `act` is the activation module: act(gate) > 0 is LAPE's "active".
    """

    name: str
    blocks: str
    mlp: str
    down: str
    act: str
    up: str | None
    gated: bool
    intermediate_size: Callable = _intermediate
    final_norm: str = "model.norm"  # the norm before the unembedding (the logit lens reads blocks through it)


_LLAMA_LIKE = dict(blocks="model.layers", mlp="mlp", down="down_proj", act="act_fn", up="up_proj", gated=True)
_GPT2_LIKE = dict(blocks="transformer.h", mlp="mlp", down="c_proj", act="act", up=None, gated=False,
                  intermediate_size=_inner_or_4x, final_norm="transformer.ln_f")

ADAPTERS: dict[str, Adapter] = {
    "llama": Adapter("llama", **_LLAMA_LIKE),
    "mistral": Adapter("mistral", **_LLAMA_LIKE),
    "qwen2": Adapter("qwen2", **_LLAMA_LIKE),
    "qwen3": Adapter("qwen3", **_LLAMA_LIKE),
    "gemma": Adapter("gemma", **_LLAMA_LIKE),
    "gemma2": Adapter("gemma2", **_LLAMA_LIKE),
    "phi3": Adapter("phi3", blocks="model.layers", mlp="mlp", down="down_proj", act="activation_fn",
                    up=None, gated=True),
    "gpt2": Adapter("gpt2", **_GPT2_LIKE),
    "gpt_bigcode": Adapter("gpt_bigcode", **_GPT2_LIKE),
    "gpt_neox": Adapter("gpt_neox", blocks="gpt_neox.layers", mlp="mlp", down="dense_4h_to_h", act="act",
                        up=None, gated=False, final_norm="gpt_neox.final_layer_norm"),
    "starcoder2": Adapter("starcoder2", blocks="model.layers", mlp="mlp", down="c_proj", act="act",
                          up=None, gated=False),
}


def adapter_for(config) -> Adapter:
    model_type = getattr(config, "model_type", None)
    if model_type not in ADAPTERS:
        raise UnsupportedArchitecture(
            f"architecture {model_type!r} has no neuron adapter; supported: {', '.join(sorted(ADAPTERS))}")
    return ADAPTERS[model_type]


def _get(obj, dotted: str):
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


@dataclass(frozen=True)
class NeuronSite:
    """The FFN modules of one block."""

    layer: int
    block: nn.Module
    down: nn.Module
    act: nn.Module
    up: nn.Module | None


def neuron_sites(model: nn.Module, adapter: Adapter) -> list[NeuronSite]:
    blocks = _get(model, adapter.blocks)
    sites = []
    for i, block in enumerate(blocks):
        mlp = _get(block, adapter.mlp)
        sites.append(NeuronSite(i, block, _get(mlp, adapter.down), _get(mlp, adapter.act),
                                _get(mlp, adapter.up) if adapter.up else None))
    acts = [id(s.act) for s in sites]
    if len(set(acts)) != len(acts):  # one activation module shared by all blocks: cannot tell layers apart
        raise UnsupportedArchitecture(f"{adapter.name}: the FFN activation module is shared across blocks")
    return sites


class WeightsNotLoaded(RuntimeError):
    """A browse-only model (opened from its cached card, no weights; see neuro.browse) was asked to run."""


BROWSE_ONLY_MESSAGE = (
    "This needs to run the model, but it was opened from its cached card without weights (browse-only): only "
    "results already in the cache can be shown. Load the model's folder or hub id to compute.")


@dataclass
class LoadedModel:
    """A model ready for analysis, shared by every caller in the process (calls serialize on `lock`)."""

    model: nn.Module
    tokenizer: object
    adapter: Adapter
    source: str
    fingerprint: str
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    @property
    def config(self):
        return self.model.config

    @property
    def n_layers(self) -> int:
        return len(_get(self.model, self.adapter.blocks))

    @property
    def n_neurons(self) -> int:
        """Neurons per layer (the FFN intermediate size)."""
        return self.adapter.intermediate_size(self.model.config)

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    @property
    def weights_loaded(self) -> bool:
        """False for a model opened from its cached card (browse-only, see neuro.browse)."""
        return not next(self.model.parameters()).is_meta

    def require_weights(self) -> None:
        """Called before any forward pass: a browse-only model fails here with a clear message."""
        if not self.weights_loaded:
            raise WeightsNotLoaded(BROWSE_ONLY_MESSAGE)

    @property
    def identity(self) -> str:
        """Cache identity: architecture plus a fingerprint of the weights, not the path they were loaded
        from, so results computed on a GPU box from a hub id are found on a laptop from a local copy."""
        return f"{self.config.model_type}@{self.fingerprint}"

    def sites(self) -> list[NeuronSite]:
        return neuron_sites(self.model, self.adapter)


@dataclass(frozen=True)
class ModelInfo:
    source: str
    architecture: str
    model_type: str
    n_layers: int
    neurons_per_layer: int
    total_neurons: int
    hidden_size: int
    vocab_size: int
    parameters: int
    dtype: str
    device: str
    neuron_site: str
    fingerprint: str


def model_info(loaded: LoadedModel) -> ModelInfo:
    cfg, a = loaded.config, loaded.adapter
    return ModelInfo(
        source=loaded.source,
        architecture=(cfg.architectures or [type(loaded.model).__name__])[0],
        model_type=cfg.model_type,
        n_layers=loaded.n_layers,
        neurons_per_layer=loaded.n_neurons,
        total_neurons=loaded.n_layers * loaded.n_neurons,
        hidden_size=int(getattr(cfg, "hidden_size", None) or getattr(cfg, "n_embd", 0)),
        vocab_size=int(cfg.vocab_size),
        parameters=sum(p.numel() for p in loaded.model.parameters()),
        dtype=str(next(loaded.model.parameters()).dtype).replace("torch.", ""),
        device=str(loaded.device),
        neuron_site=f"{a.blocks}.{{i}}.{a.mlp}.{a.down} (input)",
        fingerprint=loaded.fingerprint,
    )


# --------------------------------------------------------------------------- fingerprints
#
# A model's cache identity must change when any byte of its weights changes (a fine-tune saved in
# place, a few edited neurons), or it would be shown another model's cached results. Weight files are
# hashed whole (sha256, streamed); the digest of each file is remembered per (path, size, mtime, ctime,
# inode) in a small JSON memo under the cache root, so an unchanged 60 GB folder is read only once. A
# Hugging Face hub snapshot is not read at all: its files are symlinks into `blobs/<sha256 of the
# content>`, the same digest, so a hub snapshot and a local copy of it share an identity.

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
DIGEST_MEMO = "weight-digests.json"
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
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps({"version": _MEMO_VERSION, "files": files}, sort_keys=True))
        os.replace(tmp, path)
    except OSError as err:
        log.debug("could not keep weight digests in %s: %s", path, err)
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass


def file_digests(paths: Sequence[Path], memo: Path | None = None) -> list[str]:
    """sha256 of each file: from the hub cache's blob names, from the memo when the file is unchanged,
    else read (several files in parallel)."""
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


def weights_fingerprint(folder: Path, memo: Path | None = None) -> str:
    """Fingerprint of every byte of a folder's weight files (with their names relative to the folder)."""
    folder = Path(folder)
    paths = sorted(p for p in folder.rglob("*") if p.suffix in _WEIGHT_SUFFIXES and p.is_file())
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


# --------------------------------------------------------------------------- loading

def default_dtype(device: str) -> torch.dtype:
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("0", "", "false", "no")


def hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    """A quick TCP probe, so an offline machine fails in seconds instead of hanging in retries."""
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_source(source: str | os.PathLike) -> Path:
    """A local folder, or the local snapshot of a hub id (downloaded only when the hub is reachable)."""
    path = Path(source).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path} has no config.json: not a Hugging Face model folder")
        return path
    text = str(source)
    looks_local = text.startswith((".", "/", "~")) or text.count("/") > 1 or os.sep == "\\" and "\\" in text
    if looks_local or not text.strip():
        raise ModelLoadError(f"model folder {text!r} does not exist")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    patterns = ["*.json", "*.safetensors", "*.model", "*.txt", "*.py", "*.tiktoken"]
    try:
        return Path(snapshot_download(text, local_files_only=True, allow_patterns=patterns))
    except LocalEntryNotFoundError:
        pass
    except Exception as err:
        raise ModelLoadError(f"{text!r} is not a valid model folder or hub id: {err}") from None
    if hub_offline() or not hub_reachable():
        raise ModelLoadError(
            f"{text!r} is not a local folder and not in the local Hugging Face cache, and the hub "
            "cannot be reached (offline). Download it on a connected machine "
            "(`huggingface-cli download ...`) or pass a local folder.")
    try:
        return Path(snapshot_download(text, allow_patterns=patterns))
    except Exception as err:
        raise ModelLoadError(f"could not download {text!r} from the hub: {err}") from None


def load_model(source: str | os.PathLike, *, dtype: torch.dtype | str | None = None,
               device: str | None = None, device_map: str | dict | None = None,
               trust_remote_code: bool = False) -> LoadedModel:
    """Load a causal LM and its tokenizer for analysis (eval mode, parameters frozen).

    Defaults: float32 on CPU, bfloat16 on GPU; `device_map="auto"` (accelerate) when more than one
    GPU is visible, so a model larger than one device is split across them.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder = resolve_source(source)
    from .browse import is_card_folder, load_browse_only

    if is_card_folder(folder) and not any(p.suffix in _WEIGHT_SUFFIXES for p in folder.iterdir()):
        return load_browse_only(folder, trust_remote_code=trust_remote_code)
    try:
        config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except ValueError as err:
        raise ModelLoadError(f"cannot read the config of {source}: {err}") from None
    adapter_for(config)  # fail before loading gigabytes of weights
    device = device or default_device()
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    dtype = dtype or default_dtype(device)
    if device_map is None and device.startswith("cuda") and torch.cuda.device_count() > 1:
        device_map = "auto"
    kwargs = dict(dtype=dtype, trust_remote_code=trust_remote_code)
    if device_map is not None:
        kwargs["device_map"] = device_map
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"cannot load {source}: {err}") from None
    if device_map is None:
        model.to(device)
    return prepare(model, tokenizer, source=str(source), fingerprint=weights_fingerprint(folder))


def prepare(model: nn.Module, tokenizer, source: str, fingerprint: str | None = None) -> LoadedModel:
    """Wrap an already-built model (e.g. from a config in a test) for analysis."""
    adapter = adapter_for(model.config)
    model.eval()
    model.requires_grad_(False)
    if getattr(tokenizer, "pad_token_id", None) is None and tokenizer is not None:
        tokenizer.pad_token = tokenizer.eos_token
    loaded = LoadedModel(model, tokenizer, adapter, source, fingerprint or module_fingerprint(model))
    loaded.sites()  # fail now, not in the middle of a capture, if the adapter does not fit
    return loaded
