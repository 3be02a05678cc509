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
