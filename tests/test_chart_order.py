"""Charts whose order carries meaning, read from the Vega-Lite spec Altair renders."""

from __future__ import annotations

import pandas as pd

from views.ui.charts import matrix_heatmap


def _sorts(chart) -> tuple[list, list]:
    spec = chart.to_dict()
    encoding = spec["layer"][0]["encoding"] if "layer" in spec else spec["encoding"]
    return encoding["x"]["sort"], encoding["y"]["sort"]


def test_an_ablation_matrix_puts_each_languages_own_effect_on_the_diagonal():
    rows = ["cpp", "java", "python", "go", "javascript", "universal"]
    columns = ["python", "java", "javascript", "cpp", "go"]  # evaluation order as the loss pass met them
    matrix = pd.DataFrame([[10 * r + c for c in range(5)] for r in range(6)], index=rows, columns=columns)
    x, y = _sorts(matrix_heatmap(matrix, "ablated", "evaluated", "loss change"))
    assert y == rows
    assert x == ["cpp", "java", "python", "go", "javascript"]
    data = matrix_heatmap(matrix, "ablated", "evaluated", "loss change").to_dict()
    values = {(d["ablated"], d["evaluated"]): d["loss change"] for d in next(iter(data["datasets"].values()))}
    assert values[("python", "python")] == matrix.loc["python", "python"]  # the cells follow their labels


def test_a_matrix_without_shared_names_keeps_its_order():
    matrix = pd.DataFrame([[1, 2], [3, 4]], index=["a", "b"], columns=["z", "y"])
    assert _sorts(matrix_heatmap(matrix, "r", "c", "v")) == (["z", "y"], ["a", "b"])


def test_a_missing_cell_is_grey_and_unlabelled_not_null():
    import numpy as np

    matrix = pd.DataFrame([[np.nan, 0.5], [0.25, np.nan]], index=["cpp", "go"], columns=["cpp", "go"])
    spec = matrix_heatmap(matrix, "query", "candidates", "cosine").to_dict()
    rects, text = spec["layer"]
    assert rects["encoding"]["color"]["value"] == "#eeeeee"  # the fallback of the validity condition
    assert "isValid" in rects["encoding"]["color"]["condition"]["test"]
    assert any("isValid" in t.get("filter", "") for t in text.get("transform", []))
    values = next(iter(spec["datasets"].values()))
    assert sum(v["cosine"] is None for v in values) == 2  # the diagonal is sent as missing, then filtered out


def test_visible_whitespace_and_short_labels():
    from views.ui.charts import short_label, visible_whitespace

    assert visible_whitespace("\n    ") == "⏎····" and visible_whitespace("\t") == "→"
    assert visible_whitespace("") == "∅"
    assert short_label("abcdefghij", 7) == "abcdef…" and short_label("abc", 7) == "abc"


def test_a_task_colour_never_stands_for_two_tasks():
    from views.ui.charts import TASK_PALETTE, projection_scatter

    tasks = [f"t{i}" for i in range(30)]
    data = pd.DataFrame({"id": tasks, "language": ["python", "go"] * 15, "task": tasks, "code": "",
                         "x": range(30), "y": range(30)})
    spec = projection_scatter(data, "task", "", tasks=tasks).to_dict()  # asked for more than the palette holds
    scale = spec["encoding"]["color"]["scale"]
    assert scale["domain"] == [*tasks[:len(TASK_PALETTE)], "other tasks"]
    assert len(set(scale["range"])) == len(scale["domain"])
    by_language = projection_scatter(data, "language", "").to_dict()["encoding"]["color"]["scale"]
    assert by_language["domain"] == ["python", "go"] and by_language["range"][0] != by_language["range"][1]
