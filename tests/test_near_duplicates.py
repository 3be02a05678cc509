"""Near-duplicate tasks and programs stay on one side of the split, whatever the seed; distinct ones are
split as before."""

import random

import pytest

from neuro.code.corpus import Snippet
from neuro.code.near_duplicates import group_labels, near_duplicate_pairs
from neuro.code.split import SplitParams, split_corpus

LANGS = ("python", "java")
WORDS = ["alpha", "bravo", "carbon", "delta", "ember", "fjord", "gamma", "harbor", "iris", "jungle", "kayak",
         "lumen", "mango", "nectar", "orbit", "pixel", "quartz", "raven", "sierra", "tundra"]


def _task(name: str, summary: str, body: str) -> list[Snippet]:
    return [Snippet(f"{name}/{lang}", lang, name, f"// {lang}\n{body}\n", summary) for lang in LANGS]


def _corpus() -> list[Snippet]:
    rng = random.Random(0)
    snippets = []
    for i, word in enumerate(WORDS):  # 20 unrelated tasks: distinct summaries and code
        other = rng.sample(WORDS, 6)
        snippets += _task(word, f"Compute the {word} of {' '.join(other)}.",
                          f"def {word}(x):\n    return x * {i} + {' + '.join(map(str, range(i)))} # {other}")
    for kind in ("bubble", "insertion", "merge", "quick", "selection"):  # one summary, one word changed
        snippets += _task(f"{kind}_sort", f"Sort a list of integers in ascending order using {kind} sort.",
                          f"def sort_{kind}(xs):\n    {kind.upper()} = sorted(xs)\n    return {kind.upper()} or []")
    return snippets


def test_near_duplicate_tasks_stay_together_for_every_seed():
    sorts = {f"{k}_sort" for k in ("bubble", "insertion", "merge", "quick", "selection")}
    sides = set()
    for seed in range(25):
        split = split_corpus(_corpus(), SplitParams(seed=seed))
        held = {s.task for s in split.evaluation} & sorts
        assert held in (set(), sorts), (seed, held)
        sides.add(bool(held))
        assert split.merged == (tuple(sorted(sorts)),)
        assert split.summary()["near_duplicates_kept_together"] == [sorted(sorts)]
    assert sides == {True, False}  # the group is a unit like any other: sometimes held out, sometimes not


def test_distinct_tasks_are_not_grouped_and_order_does_not_matter():
    corpus = _corpus()
    shuffled = corpus[:]
    random.Random(1).shuffle(shuffled)
    a, b = split_corpus(corpus), split_corpus(shuffled)
    assert {s.id for s in a.evaluation} == {s.id for s in b.evaluation}
    assert len(a.merged) == 1 and a.unit == "task"
    # 21 units (20 tasks + the sorts): round(0.3 x 21) = 6 held out
    held = {s.task for s in a.evaluation}
    assert len(held) in (6, 10)  # 6 single tasks, or 5 of them and the five sorts


def test_the_threshold_is_a_parameter():
    split = split_corpus(_corpus(), SplitParams(near_duplicate=1.0))
    assert split.merged == ()
    with pytest.raises(ValueError):
        SplitParams(near_duplicate=0.2)


def test_near_duplicate_programs_of_a_corpus_without_tasks_stay_together():
    snippets = [Snippet(f"p{i}", "python", "", f"def {w}(x):\n    return x.{WORDS[-1 - i]}({i}) or '{w * 2}'\n")
                for i, w in enumerate(WORDS[:12])]
    copy = ("def twin(values):\n    \"\"\"Add the values up, skipping the ones that are not numbers.\"\"\"\n"
            "    total = 0\n    for v in values:\n        if isinstance(v, (int, float)):\n            total += v\n"
            "        else:\n            continue\n    return total\n")
    snippets += [Snippet("twin_a", "python", "", copy), Snippet("twin_b", "python", "", copy.replace("total", "totl"))]
    for seed in range(15):
        split = split_corpus(snippets, SplitParams(seed=seed))
        held = {s.id for s in split.evaluation} & {"twin_a", "twin_b"}
        assert held in (set(), {"twin_a", "twin_b"})
        assert split.unit == "program" and split.merged == (("twin_a", "twin_b"),)


def test_pairs_and_groups_by_hand():
    texts = ["the quick brown fox jumps", "the quick brown fox jumped", "lorem ipsum dolor sit amet", ""]
    pairs = near_duplicate_pairs(texts, 0.9)
    assert [(i, j) for i, j, _ in pairs] == [(0, 1)] and pairs[0][2] >= 0.9
    assert group_labels(5, [(3, 4), (1, 3)]) == [0, 1, 2, 1, 1]


def test_toy_programs_are_not_merged_and_everything_alike_is_not_one_unit():
    """Two-line programs differ by an operator (ratio > 0.9): too short to call near-duplicates. And a corpus
    whose tasks are all alike is split as if nothing were, rather than into one unit with no evaluation side."""
    toy = [Snippet(f"t{t}/{lang}", lang, f"t{t}", f"def f{t}(x):\n    return x + {t}\n") for t in range(10)
           for lang in LANGS]
    split = split_corpus(toy)
    assert split.merged == () and split.evaluation and split.selection
    same = [Snippet(f"t{t}/{lang}", lang, f"t{t}", "x", "Return the sum of the two integers given.") for t in range(6)
            for lang in LANGS]
    split = split_corpus(same)
    assert split.merged == () and len({s.task for s in split.evaluation}) == 2
