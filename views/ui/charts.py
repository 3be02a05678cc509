"""Altair charts and small HTML renderers shared by the pages (UI side; no computation here)."""

from __future__ import annotations

import html

import altair as alt
import numpy as np
import pandas as pd

LANG_COLORS = {"cpp": "#4e79a7", "java": "#f28e2b", "python": "#59a14f", "go": "#76b7b2",
               "javascript": "#edc948", "universal": "#b07aa1"}


TASK_PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
                "#bcbd22", "#7f7f7f"]  # tableau10: as many tasks as it has colours are coloured, never recycled
OTHER_TASKS = "other tasks"


def projection_scatter(data: pd.DataFrame, color: str, title: str, tasks: list[str] | None = None) -> alt.Chart:
    """Programs as points (x, y). Colour by language (each language its colour) or by task: only the chosen
    tasks (at most one per palette colour) get a colour and a legend entry, the rest are grey, so a colour
    never stands for two tasks; the shape always tells the language."""
    if color == "task":
        tasks = list(tasks or [])[:len(TASK_PALETTE)]
        data = data.assign(task_shown=data.task.where(data.task.isin(tasks), OTHER_TASKS))
        domain = [*tasks, OTHER_TASKS]
        encoding = alt.Color("task_shown:N", title="task", scale=alt.Scale(
            domain=domain, range=[*TASK_PALETTE[:len(tasks)], "#d0d0d0"]), sort=domain)
    else:
        names = list(dict.fromkeys(data.language))
        encoding = alt.Color("language:N", scale=alt.Scale(domain=names, range=[LANG_COLORS.get(n, "#999")
                                                                                for n in names]))
    return alt.Chart(data, title=title, height=440).mark_point(size=60, filled=True, opacity=0.85).encode(
        x=alt.X("x:Q", axis=None, scale=alt.Scale(zero=False)), y=alt.Y("y:Q", axis=None, scale=alt.Scale(zero=False)),
        color=encoding, shape=alt.Shape("language:N", legend=alt.Legend(title="language (shape)")),
        tooltip=["id", "language", "task", "code"])


def heatmap(frame: pd.DataFrame, x: str, y: str, value: str, title: str = "", scheme: str = "blues",
            fmt: str = ".3g", x_sort=None, y_sort=None, domain_mid: float | None = None) -> alt.Chart:
    """A labelled heatmap of a long-form frame (x, y, value)."""
    scale = alt.Scale(scheme=scheme, domainMid=domain_mid) if domain_mid is not None else alt.Scale(scheme=scheme)
    base = alt.Chart(frame, title=title).encode(
        x=alt.X(f"{x}:O", sort=x_sort), y=alt.Y(f"{y}:O", sort=y_sort),
        tooltip=[x, y, alt.Tooltip(value, format=fmt)])
    # a missing value (e.g. a matrix's undefined diagonal) is a grey cell with no text, never the word "null"
    valid = f"isValid(datum[{value!r}]) && isFinite(datum[{value!r}])"
    rects = base.mark_rect().encode(color=alt.condition(valid, alt.Color(f"{value}:Q", scale=scale),
                                                        alt.value("#eeeeee")))
    if frame[value].size > 400:
        return rects
    text = base.mark_text(fontSize=11).encode(text=alt.Text(f"{value}:Q", format=fmt)).transform_filter(valid)
    return rects + text


def visible_whitespace(text: str) -> str:
    """A token as a chart label: spaces, tabs and newlines drawn as visible marks (an all-whitespace token
    would otherwise be an empty cell), a token with no text at all (e.g. a beginning-of-sequence) as ∅."""
    return text.replace("\n", "⏎").replace("\t", "→").replace(" ", "·") or "∅"


def short_label(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def diagonal_first(matrix: pd.DataFrame) -> pd.DataFrame:
    """Columns in the rows' order where they share names (then the rest), so the diagonal is each row's
    own column: e.g. the own-language effect of an ablation matrix."""
    shared = [name for name in matrix.index if name in matrix.columns]
    return matrix[shared + [c for c in matrix.columns if c not in shared]]


def matrix_heatmap(matrix: pd.DataFrame, row_name: str, col_name: str, value: str, **kwargs) -> alt.Chart:
    """A heatmap of a matrix, axes in the matrix's own order, columns aligned with the rows (`diagonal_first`)."""
    matrix = diagonal_first(matrix)
    long = matrix.rename_axis(index=row_name, columns=col_name).stack().rename(value).reset_index()
    return heatmap(long, col_name, row_name, value, x_sort=list(matrix.columns), y_sort=list(matrix.index),
                   **kwargs)


def bars(frame: pd.DataFrame, x: str, y: str, color: str | None = None, title: str = "",
         horizontal: bool = False, sort=None) -> alt.Chart:
    enc = dict(tooltip=list(frame.columns))
    if horizontal:
        enc.update(y=alt.Y(f"{x}:N", sort=sort or "-x", title=None), x=alt.X(f"{y}:Q"))
    else:
        enc.update(x=alt.X(f"{x}:N", sort=sort, title=None), y=alt.Y(f"{y}:Q"))
    if color:
        names = list(frame[color].unique())
        enc["color"] = alt.Color(f"{color}:N", legend=None, scale=alt.Scale(
            domain=names, range=[LANG_COLORS.get(n, "#999") for n in names]))
    return alt.Chart(frame, title=title).mark_bar().encode(**enc)


def ablation_bars(table: pd.DataFrame, title: str = "") -> alt.Chart:
    """Per group (in the table's order): the selected neurons' loss change (bar) with its confidence interval
    (black error bar, columns effect_low / effect_high), beside the matched and uniform controls' means
    (hollow and grey points)."""
    frame = table.rename_axis("group").reset_index()
    base = alt.Chart(frame, title=title).encode(x=alt.X("group:N", title=None, sort=list(frame["group"])))
    tooltip = ["group", alt.Tooltip("effect:Q", format=".4f"), alt.Tooltip("effect_low:Q", format=".4f"),
               alt.Tooltip("effect_high:Q", format=".4f")]
    tooltip += [alt.Tooltip(f"{c}:Q", format=".3g") for c in ("matched_mean", "p_matched", "p_matched_holm",
                                                              "uniform_mean", "p_uniform") if c in frame]
    bars_ = base.mark_bar(opacity=0.8).encode(
        y=alt.Y("effect:Q", title="loss change (nats)"), color=alt.Color("group:N", legend=None, scale=alt.Scale(
            domain=list(frame["group"]), range=[LANG_COLORS.get(n, "#999") for n in frame["group"]])),
        tooltip=tooltip)
    layers = [bars_, base.mark_errorbar(ticks=True, color="black").encode(y="effect_low:Q", y2="effect_high:Q")]
    if "matched_mean" in frame:
        layers.append(base.mark_point(color="black", size=60).encode(y="matched_mean:Q"))
    if "uniform_mean" in frame:
        layers.append(base.mark_point(color="#888", filled=True).encode(y="uniform_mean:Q"))
    return alt.layer(*layers)


def dendrogram(segments: pd.DataFrame, leaves: pd.DataFrame, title: str = "") -> alt.Chart:
    lines = alt.Chart(segments, title=title).mark_rule(strokeWidth=2).encode(
        x=alt.X("x:Q", axis=None), x2="x2:Q", y=alt.Y("y:Q", title="distance (1 - similarity)"), y2="y2:Q")
    labels = alt.Chart(leaves).mark_text(dy=12, fontSize=12).encode(x="x:Q", y="y:Q", text="language:N")
    return lines + labels


def _color(value: float, scale: float) -> str:
    """Red for positive, blue for negative activation, alpha by magnitude."""
    alpha = 0.0 if scale <= 0 else min(1.0, abs(value) / scale)
    rgb = "220,50,47" if value >= 0 else "38,139,210"
    return f"rgba({rgb},{alpha:.2f})"


def token_html(code: str, offsets: list[tuple[int, int]], values: np.ndarray, labels: list[str | None],
               max_tokens: int = 4000) -> str:
    """Code with each token's background coloured by activation; hover shows value and syntax node."""
    scale = float(np.max(np.abs(values))) if len(values) else 0.0
    parts, end = [], 0
    for (start, stop), value, label in list(zip(offsets, values, labels))[:max_tokens]:
        if stop <= end:  # a second byte-level token of one character, or a special token
            continue
        start = max(start, end)
        if start > end:
            parts.append(html.escape(code[end:start]))
        title = html.escape(f"{value:+.3f} | {label or 'no node'}")
        parts.append(f'<span title="{title}" style="background:{_color(float(value), scale)};'
                     f'border-radius:2px">{html.escape(code[start:stop])}</span>')
        end = stop
    parts.append(html.escape(code[end:]))
    return ('<pre style="font-size:13px;line-height:1.5;white-space:pre-wrap;padding:8px;'
            'border:1px solid #ddd;border-radius:6px">' + "".join(parts) + "</pre>")


def example_html(before: str, token: str, after: str) -> str:
    """One top-activating token highlighted in its context."""
    return ('<pre style="font-size:12px;margin:2px 0;white-space:pre-wrap">' + html.escape(before)
            + '<mark style="background:#f4a261">' + html.escape(token) + "</mark>" + html.escape(after) + "</pre>")


def activation_histogram(frame: pd.DataFrame, title: str = "") -> alt.Chart:
    """One neuron's activation distribution per language (a frame of language, low, high, count, share: bins
    shared by the languages): each language's share of its own tokens per bin, overlaid, the x domain exactly
    the bins' range."""
    langs = list(dict.fromkeys(frame["language"]))
    domain = [float(frame["low"].min()), float(frame["high"].max())]
    return alt.Chart(frame, title=title).mark_bar(opacity=0.5, binSpacing=0).encode(
        x=alt.X("low:Q", title="activation", scale=alt.Scale(domain=domain, nice=False, zero=False)),
        x2="high:Q",
        y=alt.Y("share:Q", title="share of the language's tokens", stack=None),
        color=alt.Color("language:N", title="language", scale=alt.Scale(
            domain=langs, range=[LANG_COLORS.get(n, "#999") for n in langs])),
        tooltip=["language", alt.Tooltip("low:Q", format=".3g"), alt.Tooltip("high:Q", format=".3g"), "count",
                 alt.Tooltip("share:Q", format=".2%")])


def token_effects(frame: pd.DataFrame, title: str = "") -> alt.Chart:
    """Tokens a neuron pushes up (positive) or down (negative) by its direct logit effect: a frame of token,
    logit (one row per token), drawn highest first; the token labels shown quoted so whitespace is visible."""
    frame = frame.assign(label=[f"{i + 1}. {t!r}" for i, t in enumerate(frame["token"])])
    return alt.Chart(frame, title=title).mark_bar().encode(
        y=alt.Y("label:N", sort=list(frame["label"]), title=None),
        x=alt.X("logit:Q", title="logit change per unit of activation"),
        color=alt.condition(alt.datum.logit >= 0, alt.value("#dc322f"), alt.value("#268bd2")),
        tooltip=["token", alt.Tooltip("logit:Q", format=".4f")])


def context_html(text: str, offsets: list[tuple[int, int]], values: np.ndarray, labels: list[str | None],
                 scale: float, peak: int | None = None) -> str:
    """A top context with every token shaded on a shared `scale` (so contexts compare), the peak outlined."""
    parts, end = [], 0
    for i, ((start, stop), value, label) in enumerate(zip(offsets, values, labels)):
        if stop <= end:
            continue
        start = max(start, end)
        if start > end:
            parts.append(html.escape(text[end:start]))
        title = html.escape(f"{value:+.3f} | {label or 'no node'}")
        outline = "outline:2px solid #b58900;" if i == peak else ""
        parts.append(f'<span title="{title}" style="background:{_color(float(value), scale)};{outline}'
                     f'border-radius:2px">{html.escape(text[start:stop])}</span>')
        end = stop
    parts.append(html.escape(text[end:]))
    return ('<pre style="font-size:12px;line-height:1.5;white-space:pre-wrap;padding:6px;margin:2px 0;'
            'border:1px solid #ddd;border-radius:6px">' + "".join(parts) + "</pre>")


def pick_heatmap(frame: pd.DataFrame, x: str, y: str, value: str, name: str = "cell", **kwargs) -> alt.Chart:
    """`heatmap` whose cells can be clicked: a point selection `name` on (x, y), read back from
    `st.altair_chart(..., on_select="rerun")` as selection[name] = [{x: ..., y: ...}]."""
    chart = heatmap(frame, x, y, value, **kwargs)
    pick = alt.selection_point(name=name, fields=[x, y], on="click")
    if isinstance(chart, alt.LayerChart):
        chart.layer[0] = chart.layer[0].add_params(pick)
        return chart
    return chart.add_params(pick)


TRAIN_CURVE, EVAL_CURVE = "train (loss on the batch)", "eval (held-out, before → after)"


def loss_curves(frame: pd.DataFrame, title: str = "Loss", color: str = "method") -> alt.Chart:
    """Loss curves of several runs on one chart: colour = `color` (e.g. the method), dash and point shape =
    the curve (train / eval), each with its own legend so solid and dashed lines are told apart; point marks
    on every step, so a one-step run still shows. Columns: `color`, run (one line each), curve, step, loss."""
    curves = [c for c in (TRAIN_CURVE, EVAL_CURVE) if c in set(frame["curve"])] or [TRAIN_CURVE]
    dashes = {TRAIN_CURVE: [1, 0], EVAL_CURVE: [6, 4]}
    curve_scale = dict(domain=curves, range=[dashes[c] for c in curves])
    shapes = alt.Scale(domain=curves, range=["circle" if c == TRAIN_CURVE else "diamond" for c in curves])
    base = alt.Chart(frame).encode(
        x=alt.X("step:Q", title="step"), y=alt.Y("loss:Q", title="loss (nats)", scale=alt.Scale(zero=False)),
        color=alt.Color(f"{color}:N", title=color, legend=alt.Legend(orient="bottom", labelLimit=400)),
        detail="run:N",
        tooltip=[color, "run", "curve", "step", alt.Tooltip("loss:Q", format=".4f")])
    lines = base.mark_line(strokeWidth=1.5).encode(
        strokeDash=alt.StrokeDash("curve:N", title="curve", scale=alt.Scale(**curve_scale),
                                  legend=alt.Legend(orient="bottom", symbolType="stroke", symbolSize=300)))
    points = base.mark_point(filled=True, size=30).encode(
        shape=alt.Shape("curve:N", title="points", scale=shapes, legend=None))
    return alt.layer(lines, points).resolve_scale(color="shared").properties(title=title)
