"""Build, train and describe the embedded demo code model (``neuro/assets/demo_model``).

A small Llama-architecture causal LM with a byte-level BPE tokenizer, trained from scratch on real
code in five languages taken from registry packages (CPython's standard library, Debian's Go and
OpenJDK sources, libstdc++ and Boost headers, npm packages). Steps, each a subcommand::

    python -m tools.demo_model fetch-js          # npm pack the JavaScript packages
    python -m tools.demo_model build-corpus      # filter, dedupe, decontaminate, balance, split
    python -m tools.demo_model train-tokenizer   # byte-level BPE on the training split
    python -m tools.demo_model pretokenize       # uint16 token streams for training and validation
    python -m tools.demo_model parallel          # a stream of parallel programs (tools.parallel_programs)
    python -m tools.demo_model train             # CPU or CUDA, time/token budget, checkpoints, resume
    python -m tools.demo_model evaluate          # per-language validation loss vs a unigram baseline
    python -m tools.demo_model check-overlap     # re-run decontamination against the excluded programs
    python -m tools.demo_model card              # README.md + metrics.json in the model folder

``all`` runs them in order. Intermediate files live in ``cache/demo_train/`` (gitignored).

Modules: ``settings`` (paths, pinned inputs), ``sources`` (reading each language's sources),
``corpus`` (filters, decontamination, split), ``tokens`` (tokenizer and token streams), ``training``,
``evaluation``, ``hardware`` (threads, device name), ``card`` (the model card) and ``cli``.
The names below are re-exported for callers.
"""

from __future__ import annotations

from tools.demo_model.card import (  # noqa: F401
    REBUILD,
    card,
    rebuild_commands,
    render_card,
)
from tools.demo_model.cli import (  # noqa: F401
    main,
    parser,
)
from tools.demo_model.corpus import (  # noqa: F401
    BUNDLE_MARKERS,
    DEFAULT_FILTER,
    GENERATED_RE,
    JS_FILTER,
    ExclusionIndex,
    FilterParams,
    balance,
    build_corpus,
    build_exclusion_index,
    check_overlap,
    decontaminate,
    expand_globs,
    has_parse_errors,
    is_validation,
    normalize_lines,
    programs_of,
    read_jsonl,
    read_split,
    reject_reason,
    select_files,
)
from tools.demo_model.evaluation import (  # noqa: F401
    ValidationLoss,
    evaluate,
    model_nll,
    unigram_nll,
    val_windows,
    validation_nll,
    window_nll,
)
from tools.demo_model.hardware import device_name, pick_threads  # noqa: F401
from tools.demo_model.settings import (  # noqa: F401
    APT_PACKAGES,
    BOOST,
    BOS,
    DEFAULT_EXCLUDE,
    EOS,
    GO_SRC,
    JDK_SRC_ZIP,
    JS_PACKAGES,
    LANGS,
    LIBSTDCXX,
    LICENSES,
    MODEL_DIR,
    PAD,
    PARALLEL_LAYOUTS,
    PYPI_PACKAGES,
    REPO,
    WORK_DIR,
    write_json,
)
from tools.demo_model.sources import (  # noqa: F401
    CPP_EXTS,
    JS_EXTS,
    SKIP_DIRS,
    SourceFile,
    decode,
    dpkg_version,
    fetch_js,
    is_cpp_header_name,
    iter_cpp_headers,
    iter_go_src,
    iter_jdk_src,
    iter_language,
    iter_npm_tarballs,
    iter_python_stdlib,
    iter_site_packages,
    npm_package_info,
    npm_spec_name,
    pypi_package_info,
    source_paths,
)
from tools.demo_model.tokens import (  # noqa: F401
    byte_decoder,
    check_offsets,
    encode_files,
    parallel_stream,
    pretokenize,
    train_tokenizer,
    write_stream,
)
from tools.demo_model.training import (  # noqa: F401
    lr_at,
    mixed_batch,
    model_config,
    sample_batch,
    save_model,
    train,
)
