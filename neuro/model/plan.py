"""Memory plans: what each pass needs, from a model's config alone, before anything is loaded.

A pass's peak is weights + per-token working memory x batch tokens + fixed extras (accumulators, one
cross-entropy chunk). The per-token memory of a forward+backward pass is *measured*, not guessed: the
saved tensors of one and two blocks of a narrow copy of the architecture (every width divided by the
same factor, heads kept, in the target dtype) are counted with `torch.autograd.graph.saved_tensors_hooks`
on the CPU in well under a second, and scaled back up (saved memory is linear in the widths). A forward
without gradients keeps nothing; its transient peak is one block's largest live tensors.

`batch_plan` sizes a loaded model's batches from the same figures and the memory actually free; the
passes in neuro.instrument use it instead of fixed token counts, and `python -m neuro plan` prints the
plan for every command ("will it fit?").
"""

from __future__ import annotations

import copy
import functools
import json
import math
import os
import re
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from neuro.choices import PassKind
from neuro.model.adapters import adapter_for
from neuro.model.hook_sites import cut_positions, head_input, hooks_held

GIB = 1 << 30
SLACK = 1.10            # allocator fragmentation and what the plan does not itemise
CE_CHUNK_BYTES = 256 << 20  # fp32 logits (and their softmax) of one cross-entropy chunk
MAX_BACKWARD_TOKENS = 4096  # beyond this a batch buys no throughput on a GPU (and the demo's batches stay)
MAX_FORWARD_TOKENS = 8192
DEFAULT_LANGUAGES = 5
UNIT_VALUES = 1 << 26   # per-unit arrays are capped at this many values (neuro.instrument.statistics)
TOP_K, NODE_TYPES = 16, 48  # the Neurons page's capture: top contexts and syntax profile
MAX_BATCH = 32          # programs per batch at most (neuro.instrument: length-sorted batches)
CUDA_CONTEXT = 1 << 30  # what a GPU process holds outside the allocator (CUDA context, cuBLAS workspaces)
RUNTIME_HOST = 640 << 20  # the process itself: Python, torch, transformers, pandas, scikit-learn (measured ~470 MiB)


def parse_bytes(text: str | int | float | None) -> int | None:
    """'80GB', '80GiB', '64G', '1.5TB', '512MB' or a number of bytes -> bytes (decimal and binary units
    both read as binary: a card sold as 80 GB has 80 GiB)."""
    if text is None or isinstance(text, (int, float)):
        return None if text is None else int(text)
    match = re.fullmatch(r"\s*([\d.]+)\s*([KMGT]?)(i?B)?\s*", str(text), re.IGNORECASE)
    if not match:
        raise ValueError(f"cannot read {text!r} as a memory size (e.g. 80GB, 64GiB, 512MB)")
    scale = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}[match.group(2).upper()]
    return int(float(match.group(1)) * scale)


def parse_max_memory(text: str | None) -> dict | None:
    """accelerate's max_memory from "0=70GiB,1=70GiB,cpu=200GiB" (device index or "cpu"/"disk")."""
    if not text:
        return None
    out: dict = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        if not value:
            raise ValueError(f"max memory takes DEVICE=SIZE pairs, e.g. 0=70GiB,cpu=200GiB; got {part!r}")
        key = key.strip()
        out[int(key) if key.isdigit() else key] = value.strip()
    return out


@dataclass(frozen=True)
class ModelShape:
    """The sizes a plan needs, read from config.json (no weights)."""

    model_type: str
    n_layers: int
    hidden: int
    intermediate: int
    vocab: int
    heads: int
    parameters: int
    dtype: str

    @property
    def dtype_bytes(self) -> int:
        return torch.empty((), dtype=getattr(torch, self.dtype)).element_size()

    @property
    def weight_bytes(self) -> int:
        return self.parameters * self.dtype_bytes

    @property
    def neurons(self) -> int:
        return self.n_layers * self.intermediate


def _hidden(config) -> int:
    return int(getattr(config, "hidden_size", None) or config.n_embd)


def _heads(config) -> int:
    return int(getattr(config, "num_attention_heads", None) or config.n_head)


def _layers_attr(config) -> str:
    return "num_hidden_layers" if hasattr(config, "num_hidden_layers") else "n_layer"


def _meta_model(config):
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def model_shape(config, dtype: str | torch.dtype = "bfloat16") -> ModelShape:
    """Shape of the model `config` describes; the parameter count from the model built on the meta
    device (exact, tied embeddings counted once, no memory)."""
    adapter = adapter_for(config)
    dtype = str(dtype).replace("torch.", "")
    model = _meta_model(config)
    return ModelShape(model_type=config.model_type, n_layers=int(getattr(config, _layers_attr(config))),
                      hidden=_hidden(config), intermediate=adapter.intermediate_size(config),
                      vocab=int(config.vocab_size), heads=_heads(config),
                      parameters=sum(p.numel() for p in model.parameters()), dtype=dtype)


_WIDTHS = ("hidden_size", "n_embd", "intermediate_size", "n_inner", "head_dim", "kv_channels")


def _width_names(config) -> list[str]:
    """The config's width fields, each once (GPT-2's `hidden_size` is an alias of `n_embd`)."""
    aliases = set(getattr(config, "attribute_map", {}) or {})
    return [name for name in _WIDTHS if name not in aliases]


def _narrow(config, layers: int, factor: int):
    """A copy of `config` with `layers` blocks and every width divided by `factor` (heads kept)."""
    small = copy.deepcopy(config)
    for name in _width_names(small):
        value = getattr(small, name, None)
        if isinstance(value, int) and value > 0:
            setattr(small, name, max(1, value // factor))
    setattr(small, _layers_attr(small), layers)
    small.vocab_size = 64
    for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
        if isinstance(getattr(small, name, None), int) and getattr(small, name) >= 64:
            setattr(small, name, 0)
    if hasattr(small, "layer_types") and isinstance(small.layer_types, list):
        small.layer_types = small.layer_types[:layers]
    return small


def _factor(config) -> int:
    """The largest of 16, 8, 4, 2, 1 that keeps every width a whole number of heads' widths."""
    hidden, heads = _hidden(config), _heads(config)
    for factor in (16, 8, 4, 2):
        if hidden % (factor * heads) == 0 and all(
                not isinstance(getattr(config, n, None), int) or getattr(config, n) % factor == 0
                for n in _width_names(config)):
            return factor
    return 1


@dataclass(frozen=True)
class TokenCosts:
    """Bytes per token of each kind of pass (all layers unless said)."""

    saved: int             # forward+backward: tensors autograd keeps for the backward, every block
    saved_per_layer: int   # the same for one block (recomputed one at a time under checkpointing)
    checkpointed: int      # forward+backward with every block checkpointed: block inputs + one block
    forward: int           # forward without gradients: one block's transient tensors
    hidden_state: int      # one hidden state (a block input) in the model's dtype


def _saved_bytes(config, layers: int, factor: int, dtype: torch.dtype, tokens: int) -> int:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(_narrow(config, layers, factor), dtype=dtype)
    model.eval().requires_grad_(False)
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(tensor):
        # each storage once, and never a weight: autograd keeps a reference to the weight, not a copy
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    # the head reads no position (as in every pass, neuro.instrument.losses): no logits are measured. The
    # narrow copy is this function's own (no LoadedModel, no other thread sees it): no lock to take
    with hooks_held(nullcontext(), [(head_input(model), cut_positions)]):
        ids = torch.randint(1, 64, (1, tokens))
        inputs = model.get_input_embeddings()(ids).detach().requires_grad_(True)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = model(inputs_embeds=inputs, attention_mask=torch.ones_like(ids), use_cache=False)
            del out
    return sum(storages.values())


@functools.lru_cache(maxsize=32)
def _measured(config_json: str, dtype_name: str) -> tuple[int, int]:
    """(bytes saved per token by one block, by the embedding and final norm) at the real widths."""
    from transformers import AutoConfig

    config = AutoConfig.for_model(**json.loads(config_json))
    dtype, tokens = getattr(torch, dtype_name), 64
    factor = _factor(config)
    one, two = (_saved_bytes(config, n, factor, dtype, tokens) for n in (1, 2))
    per_layer = (two - one) * factor / tokens
    rest = max(0.0, (one - (two - one)) * factor / tokens)
    return int(math.ceil(per_layer)), int(math.ceil(rest))


def token_costs(config, dtype: str | torch.dtype) -> TokenCosts:
    """Per-token bytes of each kind of pass: measured on a narrow copy (`_measured`); where that copy cannot
    be built (e.g. a model whose code ships with it), an upper-side formula of a block's saved tensors."""
    import logging

    dtype_name = str(dtype).replace("torch.", "")
    data = config.to_dict()
    data.pop("torch_dtype", None)
    data.pop("dtype", None)
    width = torch.empty((), dtype=getattr(torch, dtype_name)).element_size()
    hidden, inter = _hidden(config), adapter_for(config).intermediate_size(config)
    try:
        per_layer, rest = _measured(json.dumps(data, sort_keys=True, default=str), dtype_name)
    except Exception as err:  # noqa: BLE001 - any failure to build the copy falls back to the formula
        logging.getLogger(__name__).warning("memory plan: could not measure a narrow copy (%s); using a formula", err)
        per_layer, rest = (5 * inter + 12 * hidden) * width, 4 * hidden * width
    layers = int(getattr(config, _layers_attr(config)))
    return TokenCosts(saved=per_layer * layers + rest, saved_per_layer=per_layer,
                      checkpointed=layers * hidden * width + per_layer + rest,
                      forward=(3 * inter + 6 * hidden) * width, hidden_state=hidden * width)


def ce_chunk_tokens(vocab: int) -> int:
    """Positions per cross-entropy chunk: fp32 logits, their log-softmax and gradient within CE_CHUNK_BYTES."""
    return max(16, CE_CHUNK_BYTES // (3 * 4 * vocab))


@dataclass(frozen=True)
class BatchPlan:
    """How a pass batches: `batch_tokens` per batch (padded), with every block checkpointed or not."""

    batch_tokens: int
    checkpointing: bool
    per_token_bytes: int
    fixed_bytes: int
    budget_bytes: int | None

    @property
    def fits(self) -> bool:
        return self.batch_tokens > 0


def size_batch(per_token: int, fixed: int, budget: int | None, cap: int, at_least: int,
               checkpointed_per_token: int | None = None) -> BatchPlan:
    """The largest batch (a power of two, at most `cap`) whose peak stays in `budget`; with
    `checkpointed_per_token` the pass may checkpoint its blocks when `at_least` tokens (one program)
    would not fit otherwise. batch_tokens 0: not even one program fits."""
    if budget is None:
        return BatchPlan(cap, False, per_token, fixed, None)
    room = budget / SLACK - fixed

    def largest(cost: int) -> int:
        if room <= 0 or cost <= 0:
            return 0 if room <= 0 else cap
        tokens = int(room // cost)
        return min(cap, 1 << (tokens.bit_length() - 1)) if tokens >= 1 else 0

    plain = largest(per_token)
    if plain >= at_least or checkpointed_per_token is None:
        return BatchPlan(plain if plain >= at_least else 0, False, per_token, fixed, budget)
    checkpointed = largest(checkpointed_per_token)
    return BatchPlan(checkpointed if checkpointed >= at_least else 0, True, checkpointed_per_token, fixed, budget)


@dataclass(frozen=True)
class CommandPlan:
    device_bytes: int
    host_bytes: int
    disk_bytes: int
    batch_tokens: int
    checkpointing: bool
    fits: bool
    note: str = ""


@dataclass(frozen=True)
class MemoryPlan:
    model: ModelShape
    device_memory: int | None
    host_memory: int | None
    programs: int
    max_length: int
    costs: TokenCosts
    commands: dict[str, CommandPlan] = field(default_factory=dict)

    def to_json(self) -> dict:
        model = asdict(self.model)
        model.update(weight_bytes=self.model.weight_bytes, neurons=self.model.neurons)
        return {"model": model, "device_memory": self.device_memory, "host_memory": self.host_memory,
                "programs": self.programs, "max_length": self.max_length,
                "per_token_bytes": asdict(self.costs),
                "commands": {name: asdict(c) for name, c in self.commands.items()}}


def capture_fixed_bytes(n_layers: int, intermediate: int, units: int, node_types: int = NODE_TYPES,
                        top_k: int = TOP_K) -> int:
    """Accumulators of a statistics capture on the device(s): per-language sums (and their staged copies),
    per-unit sums, the syntax profile and top-k, each (layers x neurons) float32 (top-k ids int64)."""
    cells = n_layers * intermediate
    unit_values = min(units * cells, UNIT_VALUES)
    return 4 * (8 * cells + 3 * unit_values + 2 * node_types * cells) + 2 * 12 * top_k * cells


def plan_commands(config, *, dtype: str = "bfloat16", device_memory: int | None = None,
                  host_memory: int | None = None, programs_per_language: int = 164,
                  languages: int = DEFAULT_LANGUAGES, max_length: int = 512,
                  mean_tokens: int | None = None, on_cpu: bool = False) -> MemoryPlan:
    """The plan of every command for the model `config` describes on `programs_per_language` programs of
    `languages` languages (mean length `mean_tokens`, default half of `max_length`).

    Device memory is one device's (`device_memory`, None: unbounded); on a CPU (`on_cpu`) the device is
    the host and `host_memory` bounds both."""
    shape = model_shape(config, dtype)
    costs = token_costs(config, dtype)
    programs = programs_per_language * languages
    mean_tokens = mean_tokens or max(1, max_length // 2)
    device_budget = host_memory if on_cpu else (None if device_memory is None else device_memory - CUDA_CONTEXT)
    weights = shape.weight_bytes
    ce_chunk = ce_chunk_tokens(shape.vocab) * 3 * 4 * shape.vocab
    cells = shape.n_layers * shape.intermediate
    stats_disk = 4 * cells * (4 * languages + NODE_TYPES) + 12 * TOP_K * cells
    units = min(programs, max(2 * languages, UNIT_VALUES // max(cells, 1)))
    stats_disk += 3 * 4 * min(programs * cells, UNIT_VALUES)
    tokens_host = programs * mean_tokens * 8 * 3  # ids, offsets of the encoded corpus (int64)
    layer_matrix = programs * shape.hidden * 4
    pooled_disk = programs * shape.n_layers * shape.hidden * 4
    reservoir = 4096 * shape.n_layers * shape.hidden * 4
    trainable = max(1, int(0.01 * cells)) * 3 * shape.hidden  # 1 % of the neurons' rows and columns

    def command(per_token: int, fixed: int, cap: int, host: int, disk: int, checkpoint: int | None = None,
                note: str = "") -> CommandPlan:
        room = None if device_budget is None else device_budget - weights
        batch = size_batch(per_token, fixed, room, cap, max_length, checkpoint)
        # a batch is also bounded by its programs: at most MAX_BATCH of one language, sorted by length and
        # padded to the longest of the batch (taken as twice the mean, at most max_length)
        padded = min(max_length, 2 * mean_tokens)
        tokens = min(batch.batch_tokens or max_length, min(programs_per_language, MAX_BATCH) * padded)
        device = int(weights + SLACK * (fixed + tokens * batch.per_token_bytes)) + (0 if on_cpu else CUDA_CONTEXT)
        host_total = RUNTIME_HOST + host + (device if on_cpu else 0)
        fits = batch.fits and (host_memory is None or host_total <= host_memory)
        return CommandPlan(device_bytes=device, host_bytes=int(host_total), disk_bytes=int(disk),
                           batch_tokens=batch.batch_tokens, checkpointing=batch.checkpointing, fits=fits, note=note)

    stats_host = 2 * stats_disk + tokens_host
    # generation keeps keys and values of every layer for each token of prompt and continuation
    kv_heads = int(getattr(config, "num_key_value_heads", None) or shape.heads)
    kv_cache = 2 * shape.n_layers * kv_heads * (shape.hidden // max(shape.heads, 1)) * shape.dtype_bytes
    commands = {
        "neurons": command(costs.saved, capture_fixed_bytes(shape.n_layers, shape.intermediate, units) + ce_chunk,
                           MAX_BACKWARD_TOKENS,
                           stats_host, stats_disk, costs.checkpointed,
                           "one forward+backward per batch: statistics, syntax profile, top-16, per-program scores"),
        "ablate": command(costs.forward, ce_chunk, MAX_FORWARD_TOKENS, tokens_host + stats_host, 1 << 20,
                          note="forward passes only (loss with neurons zeroed)"),
        "layers": command(costs.forward, ce_chunk, MAX_FORWARD_TOKENS,
                          tokens_host + 2 * layer_matrix + reservoir, pooled_disk + reservoir,
                          note="hidden states of every block, kept on disk one layer at a time"),
        "clones eval": command(costs.forward, 0, MAX_FORWARD_TOKENS, tokens_host + 3 * layer_matrix,
                               pooled_disk, note="states up to the concept layer; one layer in memory"),
        "neuron": command(costs.forward, ce_chunk, MAX_FORWARD_TOKENS, tokens_host + stats_host, 1 << 20,
                          note="one pass up to the neuron's layer (histogram), one per top context; --ablate: "
                               "two loss passes over the evaluation programs"),
        "intervene": command(costs.forward, ce_chunk, MAX_FORWARD_TOKENS, 1 << 26, 0,
                             note="two forward passes of one program (with and without the change)"),
        "steer": command(costs.forward + kv_cache, ce_chunk, MAX_FORWARD_TOKENS, tokens_host, 1 << 20,
                         note="generation with the KV cache (prompt and new tokens), loss passes for the cost"),
        "finetune": command(costs.saved, 4 * 4 * trainable + ce_chunk, MAX_BACKWARD_TOKENS, tokens_host,
                            shape.weight_bytes + 4 * 4 * trainable, costs.checkpointed,
                            "neuron-guided: the selected neurons' rows/columns train (1 % of neurons planned)"),
        "transfer": command(costs.saved, 4 * 4 * (16 * 4 * 2 * shape.hidden * 3) + ce_chunk, MAX_BACKWARD_TOKENS,
                            tokens_host, shape.weight_bytes, costs.checkpointed,
                            "LoRA rank 16 on the concept layers"),
    }
    return MemoryPlan(shape, device_memory, host_memory, programs, max_length, costs, commands)


def read_config(source: str | Path, trust_remote_code: bool = False):
    """config.json of a local folder, or of a hub id from the local Hugging Face cache (the config
    alone is fetched when the hub is reachable): no weights are read or downloaded."""
    from transformers import AutoConfig

    from neuro.model.errors import ModelLoadError

    path = Path(str(source)).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path} has no config.json: not a Hugging Face model folder")
        return AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    from huggingface_hub import hf_hub_download

    from neuro.model.loading import hub_offline, hub_reachable

    try:
        file = hf_hub_download(str(source), "config.json", local_files_only=True)
    except Exception:
        if hub_offline() or not hub_reachable():
            raise ModelLoadError(f"{source!r} is not a local folder and its config is not in the local Hugging "
                                 "Face cache (offline)") from None
        try:
            file = hf_hub_download(str(source), "config.json")
        except Exception as err:
            raise ModelLoadError(f"cannot read the config of {source!r}: {err}") from None
    return AutoConfig.from_pretrained(Path(file).parent, trust_remote_code=trust_remote_code)


def free_memory(device: torch.device | str) -> int:
    """Bytes free now on `device`: the CUDA allocator's view of the card, or available RAM."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    import psutil

    return int(psutil.virtual_memory().available)


def batch_plan(loaded, kind: PassKind, max_length: int, *, budget: int | None = None, fixed: int = 0) -> BatchPlan:
    """Batch size of a pass over a loaded model: `kind` "backward" (forward+backward from the inputs) or
    "forward" (no gradients), sized from the measured per-token costs and the memory free on each device
    the model's blocks use (the weights are resident already), or `budget` bytes for the pass."""
    override = os.environ.get("NEURO_BATCH_TOKENS")
    if override:  # --batch-tokens: the user's figure, no checkpointing unless a program needs it
        return BatchPlan(int(override), False, 0, 0, None)
    config = loaded.config
    dtype = next(loaded.model.parameters()).dtype
    costs = token_costs(config, dtype)
    backward = kind == "backward"
    per_token = costs.saved if backward else costs.forward + costs.hidden_state
    fixed = fixed + ce_chunk_tokens(int(config.vocab_size)) * 3 * 4 * int(config.vocab_size)
    cap = MAX_BACKWARD_TOKENS if backward else MAX_FORWARD_TOKENS
    if budget is None:
        devices = [site.down.weight.device for site in loaded.sites()]
        shares = {d: devices.count(d) / len(devices) for d in set(devices)}
        # the device that runs out first bounds the batch: its share of the layers' per-token memory
        budget = min(int(free_memory(d) / max(share, 1e-9)) for d, share in shares.items())
    return size_batch(per_token, fixed, budget, cap, max_length, costs.checkpointed if backward else None)


def plan_here(source: str | Path, programs_per_language: int = 164, max_length: int = 512,
              trust_remote_code: bool = False) -> MemoryPlan:
    """The plan on this machine: one GPU's total memory (or, without a GPU, the model on the CPU) and
    this host's RAM; the model's dtype as loading would choose it."""
    import psutil

    config = read_config(source, trust_remote_code=trust_remote_code)
    host = int(psutil.virtual_memory().total)
    if torch.cuda.is_available():
        return plan_commands(config, dtype="bfloat16", device_memory=torch.cuda.mem_get_info(0)[1],
                             host_memory=host, programs_per_language=programs_per_language, max_length=max_length)
    from neuro.model.loading import checkpoint_dtype

    return plan_commands(config, dtype=str(checkpoint_dtype(config)).replace("torch.", ""), host_memory=host,
                         programs_per_language=programs_per_language, max_length=max_length, on_cpu=True)
