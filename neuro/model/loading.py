"""Load Hugging Face causal LMs (or a cached model card, browse-only) for analysis.

A neuron is one channel of the FFN's intermediate activation: the input of the FFN's output
projection. The adapter table (neuro.model.adapters) says, per architecture, where the transformer
blocks live and what their FFN sub-modules are called; `LoadedModel` hands out the modules it names.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from neuro.choices import DeviceMap
from neuro.model.adapters import Adapter, HookSites, NeuronSite, adapter_for, neuron_sites
from neuro.model.errors import BROWSE_ONLY_MESSAGE, ModelLoadError, WeightsNotLoaded
from neuro.model.hook_sites import Attachment, hooks_held
from neuro.model.identity import WEIGHT_SUFFIXES, model_identity, module_fingerprint, weights_fingerprint

if TYPE_CHECKING:  # transformers loads in seconds: imported where a model is loaded
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

CARD_FILE = "neuro-card.json"


@dataclass
class LoadedModel:
    """A model ready for analysis, shared by every caller in the process (calls serialize on `lock`)."""

    model: nn.Module
    tokenizer: PreTrainedTokenizerBase
    adapter: Adapter
    source: str
    fingerprint: str
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    @property
    def config(self):
        return self.model.config

    @property
    def blocks(self) -> nn.ModuleList:
        """The transformer blocks, in order."""
        return self.adapter.blocks_of(self.model)

    @property
    def final_norm(self) -> nn.Module:
        """The norm the last block's output goes through before the unembedding."""
        return self.adapter.final_norm_of(self.model)

    @property
    def embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    @property
    def unembedding(self) -> nn.Module:
        return self.model.get_output_embeddings()

    @property
    def pad_id(self) -> int:
        """The id padded positions get (they are masked out): the pad token, else EOS, else 0."""
        for candidate in (getattr(self.tokenizer, "pad_token_id", None), getattr(self.tokenizer, "eos_token_id", None)):
            if candidate is not None:
                return int(candidate)
        return 0

    @property
    def n_layers(self) -> int:
        return len(self.blocks)

    @property
    def n_neurons(self) -> int:
        """Neurons per layer (the FFN intermediate size)."""
        return self.adapter.intermediate_size(self.model.config)

    @property
    def device(self) -> torch.device:
        return self.embeddings.weight.device

    @property
    def weights_loaded(self) -> bool:
        """False for a model opened from its cached card (browse-only, see neuro.model.cards)."""
        return not next(self.model.parameters()).is_meta

    def require_weights(self) -> None:
        """Called before any forward pass: a browse-only model fails here with a clear message."""
        if not self.weights_loaded:
            raise WeightsNotLoaded(BROWSE_ONLY_MESSAGE)

    @property
    def identity(self) -> str:
        """Cache identity: architecture plus a fingerprint of the weights, not the path they were loaded
        from, so results computed on a GPU box from a hub id are found on a laptop from a local copy."""
        return model_identity(self.config.model_type, self.fingerprint)

    def sites(self) -> list[NeuronSite]:
        return neuron_sites(self.model, self.adapter)

    @property
    def hook_sites(self) -> HookSites:
        """The named places hooks read: `hook_sites.neuron_input(layer)`, `.block_output(layer)`, ..."""
        return self.adapter.hook_sites(self.model)

    def hooks(self, attachments: Iterable[Attachment] = (), *, inference: bool = False):
        """`with loaded.hooks([(site, fn), ...], inference=True):` the model's lock held, the hooks attached
        and (with `inference`) inference mode on; hooks removed and lock released on exit, even on error.
        Re-entrant: a caller already holding `lock` (several passes as one) may nest it."""
        return hooks_held(self.lock, attachments, inference=inference)


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
        hidden_size=int(getattr(cfg, "hidden_size", 0) or getattr(cfg, "n_embd", 0)),
        vocab_size=int(cfg.vocab_size),
        parameters=sum(p.numel() for p in loaded.model.parameters()),
        dtype=str(next(loaded.model.parameters()).dtype).replace("torch.", ""),
        device=str(loaded.device),
        neuron_site=a.site_label(),
        fingerprint=loaded.fingerprint,
    )


def default_dtype(device: str) -> torch.dtype:
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def cpu_computes_bf16() -> bool:
    """Whether this CPU has bfloat16 instructions (AVX512-BF16 or AMX): without them a bf16 matmul runs
    on a fallback path, measured 260x slower than float32 on a 2-core AVX2 machine."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def checkpoint_dtype(config) -> torch.dtype:
    """The dtype a CPU loads a checkpoint in: bfloat16 weights stay bfloat16 where the CPU computes in it
    (half the memory of an upcast), anything else float32."""
    stored = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    stored = getattr(torch, stored) if isinstance(stored, str) else stored
    return torch.bfloat16 if stored == torch.bfloat16 and cpu_computes_bf16() else torch.float32


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


def check_device(device: str | torch.device | None) -> None:
    """Refuse a device this machine does not have (ModelLoadError with what to do), before anything loads:
    an unknown device string, CUDA on a machine without it, cuda:N past the GPUs there are. None: the default."""
    if device is None:
        return
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ModelLoadError(f"unknown device {device!r}: use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelLoadError(f"device {device!r}: there is no CUDA on this machine (no GPU, or a torch "
                                 "built without CUDA); use the cpu device")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ModelLoadError(f"device {device!r} is out of range: this machine has {count} CUDA "
                                 f"device(s), cuda:0 to cuda:{count - 1}")
    elif dev.type not in ("cpu", "meta"):
        backend = getattr(torch, dev.type, None) or getattr(torch.backends, dev.type, None)
        available = getattr(backend, "is_available", None)
        if available is None or not available():
            raise ModelLoadError(f"device {device!r}: no {dev.type} device on this machine; use cpu or cuda")


def load_model(source: str | os.PathLike, *, dtype: torch.dtype | str | None = None,
               device: str | None = None, device_map: DeviceMap | dict | None = None,
               max_memory: dict | None = None, trust_remote_code: bool = False) -> LoadedModel:
    """Load a causal LM and its tokenizer for analysis (eval mode, parameters frozen).

    Defaults: on a GPU bfloat16; on a CPU the checkpoint's own dtype where the CPU computes in it
    (a bf16 checkpoint stays bf16 on a CPU with AVX512-BF16 or AMX, half the RAM of an upcast), else
    float32 (`checkpoint_dtype`). `device_map` ("auto", "balanced", "sequential" or a dict; accelerate's) splits a model
    over devices, with `max_memory` per device; "auto" is the default when more than one GPU is visible,
    except under torchrun, where each rank keeps a whole copy on its own LOCAL_RANK device.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    check_device(device)
    folder = resolve_source(source)
    if is_browse_only(folder):
        return load_browse_only(folder, trust_remote_code=trust_remote_code)
    try:
        config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except ValueError as err:
        raise ModelLoadError(f"cannot read the config of {source}: {err}") from None
    adapter_for(config)  # fail before loading gigabytes of weights
    ranks = int(os.environ.get("WORLD_SIZE", 1))
    if device is None and ranks > 1 and torch.cuda.is_available():
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"  # a rank never spreads over every GPU
    device = device or default_device()
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    dtype = dtype or (checkpoint_dtype(config) if device == "cpu" else default_dtype(device))
    if device_map is None and ranks <= 1 and device.startswith("cuda") and torch.cuda.device_count() > 1:
        device_map = "auto"
    kwargs = dict(dtype=dtype, trust_remote_code=trust_remote_code)
    if device_map is not None:
        kwargs["device_map"] = device_map
        if max_memory:
            kwargs["max_memory"] = max_memory
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


@dataclass(frozen=True)
class ModelCard:
    """A model's card: config, tokenizer and identity kept beside its cached results (neuro.model.cards),
    enough to open it browse-only."""

    folder: Path
    identity: str
    fingerprint: str
    source: str
    model_type: str
    n_layers: int
    neurons_per_layer: int
    parameters: int
    saved: float

    @property
    def label(self) -> str:
        day = time.strftime("%Y-%m-%d", time.localtime(self.saved))
        return f"{self.source} ({self.model_type}, {self.n_layers} layers, cached {day})"


def is_card_folder(folder: Path) -> bool:
    return (folder / CARD_FILE).is_file()


def is_browse_only(folder: Path) -> bool:
    """A card folder without weights: opened browse-only, from its card."""
    return is_card_folder(folder) and not any(p.suffix in WEIGHT_SUFFIXES for p in folder.iterdir())


def read_card(folder: Path) -> ModelCard:
    data = json.loads((folder / CARD_FILE).read_text())
    return ModelCard(folder=folder, **{k: data[k] for k in ModelCard.__dataclass_fields__ if k != "folder"})


def _refuse(*_args, **_kwargs):
    raise WeightsNotLoaded(BROWSE_ONLY_MESSAGE)


def load_browse_only(folder: str | Path, trust_remote_code: bool = False) -> LoadedModel:
    """The model of a card folder on the meta device: shapes and tokenizer, no weights."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder = Path(folder)
    try:
        card = read_card(folder)
        config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ModelLoadError(f"cannot read the model card in {folder}: {err}") from None
    adapter_for(config)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        log.warning("no tokenizer in %s (%s): token views are unavailable", folder, err)
        tokenizer = None
    model.register_forward_pre_hook(_refuse)
    model.get_input_embeddings().register_forward_pre_hook(_refuse)
    loaded = prepare(model, tokenizer, source=card.source, fingerprint=card.fingerprint)
    if loaded.identity != card.identity:
        raise ModelLoadError(f"the card in {folder} is inconsistent: {loaded.identity} != {card.identity}")
    return loaded
