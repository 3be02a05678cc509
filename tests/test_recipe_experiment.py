"""tools.recipe_experiment: held-out loss against the model's own loss, the neuro CLI's numbers carried into the
table unchanged, the replacement verdict on hand-built results, clear argument errors."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import SNIPPETS, save_tiny

from neuro.code.corpus import save_jsonl
from neuro.paths import REPO_DIR
from tools import recipe_experiment as rx
from tools.demo_model import LANGS

CTX, WINDOWS = 16, 3
STREAM_WINDOWS = 24  # the streams hold this many windows: three blocks of 8 for the end-to-end run's intervals


def work_dir(folder, vocab: int, seed: int = 0):
    """A demo-builder work folder with random validation streams (tokens below `vocab`) and token_stats.json
    saying 2.5 bytes per token in every language."""
    rng = np.random.default_rng(seed)
    (folder / "tokens").mkdir(parents=True)
    stats = {"val_tokens": {}, "val_bytes": {}}
    for lang in LANGS:
        stream = rng.integers(3, vocab, size=CTX * STREAM_WINDOWS + 6).astype(np.uint16)
        stream.tofile(folder / "tokens" / f"val_{lang}.bin")
        stats["val_tokens"][lang], stats["val_bytes"][lang] = len(stream), int(len(stream) * 2.5)
    (folder / "token_stats.json").write_text(json.dumps(stats))
    return folder


def hf_losses(model_dir, lang: str, work, windows: int = WINDOWS) -> list[float]:
    """The model's own mean next-token loss (transformers' labels=...) on each of the first `windows` windows of
    CTX + 1 tokens at stride CTX: the ground truth for nats/token."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    stream = np.fromfile(work / "tokens" / f"val_{lang}.bin", dtype=np.uint16).astype(np.int64)
    losses = []
    with torch.no_grad():
        for i in range(windows):
            x = torch.from_numpy(stream[i * CTX:i * CTX + CTX + 1])[None]
            losses.append(model(input_ids=x, labels=x).loss.item())
    return losses


@pytest.fixture(scope="module")
def setup(tmp_path_factory, saved_tiny):
    root = tmp_path_factory.mktemp("recipe")
    a = saved_tiny("llama")
    b = save_tiny(root / "model_b", "llama", seed=1)
    from transformers import AutoConfig
    work = work_dir(root / "work", AutoConfig.from_pretrained(a).vocab_size)
    save_jsonl(SNIPPETS, root / "corpus.jsonl")
    return root, a, b, work


def test_heldout_loss_equals_the_models_own_loss(setup):
    root, a, _, work = setup
    got = rx.heldout_loss(a, work, ctx=CTX, max_windows=WINDOWS)
    for lang in ("cpp", "python"):
        row = got["languages"][lang]
        per_window = hf_losses(a, lang, work)
        want = float(np.mean(per_window))  # equal-length windows: the mean of means is the mean over all targets
        assert row["tokens"] == WINDOWS * CTX
        assert row["nats_per_token"] == pytest.approx(want, abs=1e-4)
        assert row["bits_per_byte"] == pytest.approx(want / math.log(2) / 2.5, abs=1e-3)
        assert row["window_nats"] == pytest.approx(per_window, abs=1e-5)


def test_heldout_difference_has_a_paired_interval_from_the_same_windows(setup):
    """Scored on the same windows, model b minus model a is the mean of the per-window differences the models'
    own losses give, with a block-bootstrap interval around it; a model against itself differs by exactly 0."""
    _, a, b, work = setup
    got_a = rx.heldout_loss(a, work, ctx=CTX, max_windows=WINDOWS)["languages"]["go"]
    got_b = rx.heldout_loss(b, work, ctx=CTX, max_windows=WINDOWS)["languages"]["go"]
    want = float(np.mean(np.subtract(hf_losses(b, "go", work), hf_losses(a, "go", work))))
    d = rx.loss_difference(got_a, got_b, block=1)
    assert d["estimate"] == pytest.approx(want, abs=1e-5) and d["blocks"] == WINDOWS
    assert d["low"] <= d["estimate"] <= d["high"] and d["low"] < d["high"]
    assert rx.loss_difference(got_a, got_a, block=1) == {"estimate": 0.0, "low": 0.0, "high": 0.0, "blocks": 3}
    assert rx.loss_difference(got_a, got_b)["low"] is None  # one block of 8 windows: no interval to draw


def window_rows(diffs, base_level: float = 4.0) -> tuple[dict, dict]:
    """Two held-out rows whose per-window losses differ by `diffs` (model minus baseline)."""
    base = np.full(len(diffs), base_level)
    row = lambda v: {"nats_per_token": round(float(np.mean(v)), 4), "window_nats": list(map(float, v))}  # noqa: E731
    return row(base), row(base + np.asarray(diffs))


def test_loss_difference_interval_covers_a_planted_difference_and_resamples_blocks():
    rng = np.random.default_rng(0)
    base, mine = window_rows(0.05 + rng.normal(0, 0.1, 400))
    d = rx.loss_difference(base, mine)
    assert d["blocks"] == 50 and d["low"] < 0.05 < d["high"] and d["low"] > 0  # 400 windows, blocks of 8
    # windows of one block that move together (as windows of one file do) are one unit of evidence, not eight:
    # the block interval is wider than one that treats every window as independent
    shared = np.repeat(rng.normal(0, 0.1, 50), 8)
    base, mine = window_rows(shared)
    blocked, naive = rx.loss_difference(base, mine, block=8), rx.loss_difference(base, mine, block=1)
    assert blocked["estimate"] == pytest.approx(naive["estimate"])
    assert (blocked["high"] - blocked["low"]) > 2 * (naive["high"] - naive["low"])
    # an older results.json without per-window losses: the estimate, and no interval
    assert rx.loss_difference({"nats_per_token": 4.0}, {"nats_per_token": 4.1}) == pytest.approx(
        {"estimate": 0.1, "low": None, "high": None, "blocks": 0})


def test_heldout_loss_is_skipped_with_a_reason(setup, tmp_path):
    _, a, _, work = setup
    got = rx.heldout_loss(a, tmp_path / "nowhere")
    assert "held-out loss not measured" in got["skipped"] and "val_cpp.bin" in got["skipped"]
    other = tmp_path / "work"  # the streams were encoded by another tokenizer: no loss is comparable
    (other / "tokenizer").mkdir(parents=True)
    for item in (work / "tokens", work / "token_stats.json"):
        (other / item.name).symlink_to(item)
    (other / "tokenizer" / "tokenizer.json").write_text(json.dumps({"model": {"vocab": {"x": 0}}}))
    assert "another tokenizer" in rx.heldout_loss(a, other)["skipped"]


# --------------------------------------------------------------------------------------------------- verdict

def model_result(nats: dict, first: tuple, last: tuple) -> dict:
    """A results.json model entry: held-out nats per language and HumanEval-X MAP@R differences
    (estimate, low, high) for concept - first and concept - last."""
    diff = lambda e, lo, hi: {"map_at_r": {"estimate": e, "low": lo, "high": hi}}  # noqa: E731
    return {"heldout": {"languages": {k: {"nats_per_token": v} for k, v in nats.items()}},
            "corpora": {"humaneval-x": {"clones": {"differences": {"concept-first": diff(*first),
                                                                   "concept-last": diff(*last)}}}}}


BASE = model_result({"cpp": 3.70, "go": 4.10, "python": 4.80}, (0.0, -0.05, 0.05), (0.0, -0.05, 0.05))


def test_verdict_passes_only_when_loss_and_both_intervals_pass():
    good = model_result({"cpp": 3.72, "go": 4.00, "python": 4.81}, (0.05, 0.01, 0.09), (0.04, 0.002, 0.08))
    v = rx.verdict(BASE, good)
    assert v["replace"] and v["reasons"] == [] and len(v["passed"]) == 3  # +0.02 exactly is "no worse"


def test_verdict_names_each_failing_reason():
    worse = model_result({"cpp": 3.73, "go": 4.00, "python": 4.90}, (0.05, 0.01, 0.09), (0.04, 0.01, 0.08))
    v = rx.verdict(BASE, worse)
    assert not v["replace"] and len(v["reasons"]) == 1
    assert "cpp +0.0300" in v["reasons"][0] and "python +0.1000" in v["reasons"][0] and "go" not in v["reasons"][0]

    covers = model_result({"cpp": 3.70, "go": 4.10, "python": 4.80}, (0.05, -0.01, 0.09), (0.04, 0.01, 0.08))
    v = rx.verdict(BASE, covers)
    assert not v["replace"] and len(v["reasons"]) == 1 and "concept-first" in v["reasons"][0]

    negative = model_result({"cpp": 3.70, "go": 4.10, "python": 4.80}, (0.05, 0.01, 0.09), (-0.09, -0.12, -0.03))
    v = rx.verdict(BASE, negative)  # excluding zero on the negative side is a failure too
    assert not v["replace"] and len(v["reasons"]) == 1 and "concept-last" in v["reasons"][0]

    everything = model_result({"cpp": 3.80, "go": 4.10, "python": 4.80}, (0.0, -0.1, 0.1), (0.0, 0.0, 0.1))
    reasons = rx.verdict(BASE, everything)["reasons"]
    assert [r[:3] for r in reasons] == ["(a)", "(b)", "(b)"]  # a CI touching zero does not exclude it


def test_verdict_reads_the_loss_intervals_upper_end():
    """(a) is a non-inferiority test where per-window losses are stored: an estimate inside the margin whose
    interval reaches past it fails; one whose interval stays inside passes."""
    rng = np.random.default_rng(1)
    noise = lambda sd: (lambda x: x - x.mean())(rng.normal(0, sd, 400))  # noqa: E731  (mean exactly 0)
    clones = model_result({}, (0.05, 0.01, 0.09), (0.04, 0.01, 0.08))["corpora"]
    noisy_base, noisy = window_rows(0.01 + noise(0.3))
    tight_base, tight = window_rows(0.01 + noise(0.01))
    base = {"heldout": {"languages": {"go": noisy_base, "java": tight_base}}, "corpora": clones}
    model = {"heldout": {"languages": {"go": noisy, "java": tight}}, "corpora": clones}
    v = rx.verdict(base, model)
    assert not v["replace"] and len(v["reasons"]) == 1 and "upper end" in v["reasons"][0]
    assert "go +0.0" in v["reasons"][0] and "java" not in v["reasons"][0]
    model["heldout"]["languages"]["go"] = window_rows(0.01 + noise(0.01))[1]
    v = rx.verdict(base, model)
    assert v["replace"] and "upper end" in v["passed"][0] and "java +0.01" in v["passed"][0]


def test_verdict_without_measurements_fails_and_says_what_is_missing():
    unmeasured = {"heldout": {"skipped": "no streams"}, "corpora": {"demo": {}}}
    reasons = rx.verdict(BASE, unmeasured)["reasons"]
    assert len(reasons) == 2 and "held-out loss not measured for this model" in reasons[0]
    assert "humaneval-x not measured" in reasons[1]
    partial = model_result({"cpp": 3.70}, (0.05, 0.01, 0.09), (0.04, 0.01, 0.08))
    assert "go not measured" in rx.verdict(BASE, partial)["reasons"][0]


# ------------------------------------------------------------------------------------------------ arguments

def test_reuse_keeps_finished_parts_and_measures_the_rest(tmp_path):
    """An interrupted run (held-out loss and one corpus done, the second corpus failed) resumes: the finished
    parts are kept, the failed corpus and the transfer are measured again; another folder reuses nothing."""
    folder = tmp_path / "model"
    done = {"layers": {"concept_layers": [1]}, "clones": {"rows": []}}
    heldout = {"languages": {"python": {"nats_per_token": 1.0, "window_nats": [1.0, 1.0]}}}
    old = {"folder": str(folder), "heldout": heldout, "corpora": {"demo": done,
           "humaneval-x": {"layers": {"concept_layers": [2]}, "clones": {"error": "killed"}}},
           "transfer": {"error": "killed"}}
    entry, reused = rx.reusable_parts(old, folder, ["demo", "humaneval-x"], transfer=True)
    assert reused == ["held-out loss", "demo"]
    assert entry == {"corpora": {"demo": done}, "heldout": heldout}
    old["transfer"] = {"concept": 1.0}
    assert rx.reusable_parts(old, folder, ["demo"], transfer=True)[1] == ["held-out loss", "demo", "transfer"]
    assert rx.reusable_parts(old, folder, ["demo"], transfer=False)[1] == ["held-out loss", "demo"]
    assert rx.reusable_parts(old, tmp_path / "other", ["demo"], transfer=True) == ({"corpora": {}}, [])
    assert rx.reusable_parts(None, folder, ["demo"], transfer=True) == ({"corpora": {}}, [])
    old["heldout"] = {"languages": {"python": {"nats_per_token": 1.0}}}  # no per-window losses: measured again
    assert rx.reusable_parts(old, folder, ["demo"], transfer=False)[1] == ["demo"]
    old["heldout"] = {"skipped": "no streams"}  # would be skipped again
    assert rx.reusable_parts(old, folder, ["demo"], transfer=False)[1] == ["held-out loss", "demo"]


def test_argument_errors_are_clear(setup, tmp_path, capsys):
    root, a, _, _ = setup
    cases = [
        (["--model", "just-a-folder"], "NAME=FOLDER"),
        (["--model", f"a={a}", "--model", f"a={a}"], "names 'a' twice"),
        (["--model", f"a={tmp_path / 'missing'}"], "does not exist"),
        (["--model", f"a={root}"], "no config.json"),
        (["--model", f"a={a}", "--baseline", "nope"], "unknown baseline 'nope'"),
        (["--model", f"a={a}", "--corpus", f"c={tmp_path / 'gone.jsonl'}"], "corpus 'c'"),
    ]
    for argv, message in cases:
        if "--baseline" not in argv:
            argv = [*argv, "--baseline", "a"]
        code = rx.main([*argv, "--out", str(tmp_path / "out"), "--json"])
        captured = capsys.readouterr()
        assert code == 2 and message in json.loads(captured.out)["error"], (argv, captured)
        assert "Traceback" not in captured.err
    assert not (tmp_path / "out").exists()  # nothing ran


def test_default_corpora_skip_an_absent_humaneval_x(tmp_path):
    corpora, notes = rx.default_corpora(tmp_path / "humaneval-x")
    assert list(corpora) == ["demo"] and corpora["demo"] is None
    assert "humaneval-x skipped" in notes[0]


# ------------------------------------------------------------------------------------------------ end to end

@pytest.mark.slow
def test_two_models_end_to_end(setup, tmp_path):
    root, a, b, work = setup
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "tools.recipe_experiment", "--model", f"a={a}", "--model", f"b={b}",
           "--baseline", "a", "--corpus", f"tiny={root / 'corpus.jsonl'}", "--work-dir", str(work),
           "--cache", str(tmp_path / "cache"), "--ctx", str(CTX), "--eval-windows", str(STREAM_WINDOWS),
           "--out", str(out), "--json"]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_DIR, timeout=600,
                         env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert "b: clones eval on tiny done in" in run.stderr  # progress: step, model, time
    results = json.loads((out / "results.json").read_text())
    assert list(results["models"]) == ["a", "b"] and summary["baseline"] == "a"
    assert results["models"]["a"]["cache"] != results["models"]["b"]["cache"]
    for m in results["models"].values():
        assert set(m["heldout"]["languages"]) == set(LANGS)
        tiny = m["corpora"]["tiny"]
        assert len(tiny["layers"]["per_layer"]) == 3 and tiny["layers"]["center"] == "language"
        assert set(tiny["clones"]["methods"]) == {"concept", "first", "last", "mean"}
    a_nats = results["models"]["a"]["heldout"]["languages"]["go"]["nats_per_token"]
    assert a_nats == pytest.approx(np.mean(hf_losses(a, "go", work, STREAM_WINDOWS)), abs=1e-4)
    # different seeds, different numbers: each model was measured on its own
    assert a_nats != results["models"]["b"]["heldout"]["languages"]["go"]["nats_per_token"]
    assert set(results["verdicts"]) == {"b"} and not results["verdicts"]["b"]["replace"]
    assert "humaneval-x not measured" in results["verdicts"]["b"]["reasons"][-1]

    # the table carries the number `neuro clones eval --json` prints for model b (run here on a fresh cache)
    direct = subprocess.run([sys.executable, "-m", "neuro", "clones", "eval", "--model", str(b), "--corpus",
                             str(root / "corpus.jsonl"), "--cache", str(tmp_path / "direct"), "--json"],
                            capture_output=True, text=True, cwd=REPO_DIR, timeout=300,
                            env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert direct.returncode == 0, direct.stderr
    (row,) = [r for r in json.loads(direct.stdout)["overall"] if r["method"] == "last layer"]
    table = (out / "table.md").read_text()
    corpus_rows = [line for line in table.split("## Corpus `tiny`")[1].split("\n## ")[0].splitlines()
                   if line.startswith("| a ") or line.startswith("| b ")]
    assert [r[:4] for r in corpus_rows] == ["| a ", "| b "]  # one row per model
    cells = [c.strip() for c in corpus_rows[1].split("|")[1:-1]]
    lo, hi = row["cross-language MAP@R CI"]
    assert cells[8] == f"{row['cross-language MAP@R']:.3f} [{lo:.3f}, {hi:.3f}]"  # MAP@R last
    # alignment at every layer, the model's concept layers in bold, the same numbers as results.json
    (layer_row,) = [line for line in table.split("## Alignment per layer")[1].split("\n## ")[0].splitlines()
                    if line.startswith("| b ")]
    lay_b = results["models"]["b"]["corpora"]["tiny"]["layers"]
    assert [c.strip() for c in layer_row.split("|")[2:-1]] == [
        f"**{r['align_mrr']:.3f}**" if r["layer"] in lay_b["concept_layers"] else f"{r['align_mrr']:.3f}"
        for r in lay_b["per_layer"]]
    assert layer_row.count("**") == 2 * len(lay_b["concept_layers"])
    loss_rows = [line for line in table.split("## Held-out loss")[1].split("##")[0].splitlines()
                 if line.startswith("| a ")]
    assert len(loss_rows) == 1 and "+0.02 nats/token" in table
    delta = summary["models"]["b"]["heldout_minus_baseline"]["go"]  # b - a with its paired interval, in the table
    assert delta["low"] <= delta["estimate"] <= delta["high"] and "heldout_minus_baseline" not in summary["models"]["a"]
    (delta_row,) = [line for line in table.split("Difference from a")[1].split("##")[0].splitlines()
                    if line.startswith("| b ")]
    assert f"{delta['estimate']:+.4f} [{delta['low']:+.4f}, {delta['high']:+.4f}]" in delta_row
    assert "**b: keep the baseline**" in table

    # --reuse: models already measured with the same folder are copied, not measured again (a work dir that
    # does not exist would make the held-out step skip, so equal numbers mean nothing was recomputed)
    again = subprocess.run([*cmd[:cmd.index("--work-dir") + 1], str(tmp_path / "no-such-work"),
                            *cmd[cmd.index("--work-dir") + 2:cmd.index("--out") + 1], str(tmp_path / "again"),
                            "--json", "--reuse", str(out / "results.json")],
                           capture_output=True, text=True, cwd=REPO_DIR, timeout=300,
                           env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert again.returncode == 0, again.stderr
    assert "a: reused from an earlier run" in again.stderr and "b: reused from an earlier run" in again.stderr
    reused = json.loads((tmp_path / "again" / "results.json").read_text())
    assert reused["models"] == results["models"]
