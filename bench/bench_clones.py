"""Clone search latency, excluding the query's forward pass (target: < 50 ms per query on this CPU).

(a) an index of 100 000 random 512-d vectors: exact top-10 by a normalized matrix-vector product, with
    and without a one-language filter, beside scikit-learn's NearestNeighbors (cosine, brute force);
(b) the corpus embedded at the concept layer of the model (default: the embedded demo model and corpus;
    random vectors of the corpus's size when the demo model is absent), plus the query's forward pass
    for reference.

    python bench/bench_clones.py [--rows 100000 --dim 512 --queries 100 --model DIR --corpus FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from neuro.analysis.clones.index import VectorIndex  # noqa: E402
from neuro.code.corpus import LANGS, Snippet, load_corpus  # noqa: E402
from neuro.paths import DEMO_MODEL_DIR, demo_model_available  # noqa: E402


def timed(fn, queries: np.ndarray) -> dict:
    """Median and 95th percentile latency of fn(query) in milliseconds (after one warm-up call)."""
    fn(queries[0])
    times = []
    for q in queries:
        start = time.perf_counter()
        fn(q)
        times.append(1000 * (time.perf_counter() - start))
    return {"median_ms": round(statistics.median(times), 2),
            "p95_ms": round(float(np.percentile(times, 95)), 2), "queries": len(times)}


def random_index(rows: int, dim: int, seed: int = 0) -> tuple[VectorIndex, np.ndarray]:
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((rows, dim), dtype=np.float32)
    snippets = [Snippet(f"r{i}", LANGS[i % len(LANGS)], f"t{i}", "") for i in range(rows)]
    return VectorIndex(emb, snippets), emb


def bench_random(args) -> dict:
    index, emb = random_index(args.rows, args.dim)
    queries = emb[:: max(1, args.rows // args.queries)][: args.queries] + 0.01
    unit = index.vectors
    out = {"rows": args.rows, "dim": args.dim,
           "floor_matvec_only": timed(lambda q: unit @ q, queries),
           "matvec_top10": timed(lambda q: index.search_vector(q, 10, lang="go"), queries),
           "matvec_top10_one_language": timed(lambda q: index.search_vector(q, 10, ["python"], lang="go"), queries)}
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(metric="cosine", algorithm="brute").fit(emb)
    few = queries[: max(5, args.queries // 10)]  # it is slow: a tenth of the queries
    out["sklearn_brute_cosine_top10"] = timed(lambda q: nn.kneighbors(q[None], 10), few)
    return out


def bench_corpus(args) -> dict:
    snippets = load_corpus(args.corpus)
    source = args.model or (str(DEMO_MODEL_DIR) if demo_model_available() else None)
    queries = [s.code for s in snippets[:: max(1, len(snippets) // args.queries)][: args.queries]]
    if source is None:
        index, emb = random_index(len(snippets), 256)
        out = {"corpus": len(snippets), "model": None, "note": "demo model absent: random 256-d vectors"}
        out["matvec_top10"] = timed(lambda q: index.search_vector(q, 10), emb[: args.queries] + 0.01)
        return out
    from neuro.analysis.clones.index import embed_code
    from neuro.model.loading import load_model
    from neuro.results.clones import build_index

    loaded = load_model(source)
    clones = build_index(loaded, snippets, cache=args.cache)
    vectors = np.stack([embed_code(loaded, code, clones.layer) for code in queries])
    few = np.array(queries[:20], dtype=object)
    out = {"corpus": len(snippets), "model": loaded.identity, "layer": clones.layer,
           "dim": int(vectors.shape[1]),
           "matvec_top10": timed(lambda q: clones.index.search_vector(q, 10), vectors),
           "query_forward_pass": timed(lambda code: embed_code(loaded, code, clones.layer), few),
           "end_to_end_search": timed(lambda code: clones.search(code, 10), few)}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--queries", type=int, default=100)
    p.add_argument("--model", help="model folder (default: the embedded demo model)")
    p.add_argument("--corpus", help="corpus (default: the embedded demo corpus)")
    p.add_argument("--cache", help="cache folder (default: cache/ or $NEURO_CACHE)")
    args = p.parse_args()
    result = {"random": bench_random(args), "corpus": bench_corpus(args)}
    r, c = result["random"], result["corpus"]
    print(f"random {r['rows']:,} x {r['dim']}: top-10 median {r['matvec_top10']['median_ms']} ms "
          f"(p95 {r['matvec_top10']['p95_ms']}; the product alone {r['floor_matvec_only']['median_ms']}), "
          f"one language {r['matvec_top10_one_language']['median_ms']} ms, "
          f"sklearn NearestNeighbors {r['sklearn_brute_cosine_top10']['median_ms']} ms", file=sys.stderr)
    print(f"corpus {c['corpus']} programs: top-10 median {c['matvec_top10']['median_ms']} ms"
          + (f", query forward pass {c['query_forward_pass']['median_ms']} ms" if "query_forward_pass" in c else ""),
          file=sys.stderr)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
