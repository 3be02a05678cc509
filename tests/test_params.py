"""One source per parameter (neuro.params): the CLI's options and the pages' controls take default, range,
step, label and help from the config dataclass's field, so changing the field changes both, out-of-range
values are usage errors, and no caller types the defaults again."""

import argparse
import math
import pathlib
import tokenize
from dataclasses import dataclass
from typing import get_args

import pytest
from conftest import open_page
from streamlit.testing.v1 import AppTest

from neuro.analysis.selectivity import LapeParams, SelectionParams
from neuro.choices import Normalization, Score
from neuro.cli import build_parser, main
from neuro.cli.params import Parser, add_params
from neuro.experiments.finetune import FinetuneConfig
from neuro.experiments.transfer import TransferConfig
from neuro.params import check, param, spec, specs
from neuro.paths import REPO_DIR


@dataclass(frozen=True)
class Knobs:
    share: float = param(0.25, low=0.0, high=1.0, shown=(0.1, 0.9), step=0.05, label="Share",
                         help="a made-up share")
    count: int = param(3, low=1, label="Count", help="a made-up count")
    name: str = "plain"  # not a param: no option, no control

    def __post_init__(self):
        check(self)


@dataclass(frozen=True)
class MoreKnobs(Knobs):
    share: float = param(0.6, low=0.0, high=1.0, step=0.05, label="Share", help="another share")


def _parser(cls) -> argparse.ArgumentParser:
    p = Parser(prog="knobs")
    add_params(p, cls, ["share", "count"])
    return p


# --------------------------------------------------------------------------- the field helper

def test_spec_reads_the_field():
    s = spec(Knobs, "share")
    assert (s.type, s.default, s.low, s.high, s.step, s.label) == (float, 0.25, 0.0, 1.0, 0.05, "Share")
    assert (s.min_value, s.max_value, s.flag) == (0.1, 0.9, "--share")
    count = spec(Knobs(), "count")  # an instance gives its class's spec
    assert (count.type, count.default, count.min_value, count.max_value) == (int, 3, 1, None)
    assert [s.name for s in specs(Knobs)] == ["share", "count"]
    with pytest.raises(KeyError, match="name"):
        spec(Knobs, "name")


def test_dataclass_checks_its_ranges():
    Knobs(share=0.0, count=1)  # both bounds inclusive
    with pytest.raises(ValueError, match=r"share must lie in \[0, 1\], got 1.5"):
        Knobs(share=1.5)
    with pytest.raises(ValueError, match="count must be >= 1, got 0"):
        Knobs(count=0)
    with pytest.raises(ValueError, match="share must"):
        Knobs(share=math.nan)
    # the selection parameters keep their own messages, now from their fields
    SelectionParams(top_fraction=1.0)
    with pytest.raises(ValueError, match=r"top_fraction must lie in \(0, 1\], got 0.0"):
        SelectionParams(top_fraction=0.0)
    with pytest.raises(ValueError, match="ratio must be >= 1, got 0.99"):
        SelectionParams(ratio=0.99)
    with pytest.raises(ValueError, match=r"activation_quantile must lie in \[0, 1\]"):
        LapeParams(activation_quantile=-0.1)


def test_the_fields_keep_their_defaults():
    """The defaults the paper's reproduction and the shipped results were made with."""
    assert SelectionParams() == SelectionParams(candidate_quantile=0.90, ratio=1.5, top_fraction=0.01,
                                                normalize="language_layer", score="pls")
    assert LapeParams() == LapeParams(top_fraction=0.01, filter_quantile=0.95, activation_quantile=0.95)
    config = FinetuneConfig(model="m", target="python")
    assert (config.steps, config.lr, config.batch_tokens, config.lora_rank) == (100, 1e-3, 2048, 0)
    config = TransferConfig(model="m", source="python")
    assert (config.steps, config.lr, config.rank, config.batch_size, config.max_new_tokens) == (150, 1e-3, 8, 8, 40)
    assert "steps" in config.to_json() and FinetuneConfig.from_json({"model": "m", "target": "go"}).steps == 100


# --------------------------------------------------------------------------- the CLI

def test_generated_options_follow_the_field():
    args = _parser(Knobs).parse_args([])
    assert (args.share, args.count) == (0.25, 3)
    assert _parser(MoreKnobs).parse_args([]).share == 0.6  # a changed default: the parser follows
    assert _parser(Knobs).parse_args(["--share", "0.5", "--count", "7"]).count == 7
    text = _parser(MoreKnobs).format_help()
    assert "another share (default 0.6; must lie in [0, 1])" in " ".join(text.split())
    assert "--name" not in text


@pytest.mark.parametrize("argv, message", [
    (["--share", "1.2"], "argument --share: share must lie in [0, 1], got 1.2"),
    (["--count", "0"], "argument --count: count must be >= 1, got 0"),
    (["--count", "2.5"], "argument --count: expected a whole number, got '2.5'"),
    (["--share", "lots"], "argument --share: expected a number, got 'lots'"),
])
def test_out_of_range_is_a_usage_error(capsys, argv, message):
    with pytest.raises(SystemExit) as exit:
        _parser(Knobs).parse_args(argv)
    assert exit.value.code == 2
    assert message in capsys.readouterr().err


def test_commands_keep_their_options_and_defaults():
    """The option names and defaults the docs and tests use, now generated."""
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    neurons = sub["neurons"].parse_args([])
    assert (neurons.candidate_quantile, neurons.ratio, neurons.top_fraction) == (0.90, 1.5, 0.01)
    finetune = sub["finetune"].parse_args(["--target", "python"])
    assert (finetune.candidate_quantile, finetune.ratio, finetune.top_fraction) == (0.90, 1.5, 0.01)
    assert (finetune.steps, finetune.lora_rank) == (100, 0)
    transfer = sub["transfer"].parse_args(["--source", "python"])
    # every default is the field's (--steps was once the CLI's own 100 beside TransferConfig's 150)
    assert (transfer.steps, transfer.rank, transfer.batch_size, transfer.max_new_tokens) == (150, 8, 8, 40)
    assert transfer.steps == spec(TransferConfig, "steps").default
    assert "(default 150;" in " ".join(sub["transfer"].format_help().split())
    for name in ("ablate", "intervene", "steer", "neuron"):  # they share the selection options
        assert sub[name].get_default("candidate_quantile") == 0.90
    assert "quantile of all neurons' max PLS" in " ".join(sub["neurons"].format_help().split())


def test_cli_usage_error_reaches_the_json_summary(capsys):
    assert main(["neurons", "--top-fraction", "0", "--json"]) == 2
    out = capsys.readouterr()
    assert out.out.strip() == '{"error": "argument --top-fraction: top_fraction must lie in (0, 1], got 0.0"}'
    assert "usage:" in out.err
    assert main(["finetune", "--target", "go", "--steps", "-1"]) == 2
    out = capsys.readouterr()
    assert out.out == "" and "steps must lie in [0, 1000000], got -1" in out.err


# --------------------------------------------------------------------------- the pages

def _knob_page():
    """Run alone by AppTest.from_function: its own made-up dataclass."""
    from dataclasses import dataclass

    import streamlit as st

    from neuro.params import param, spec
    from views.ui.params import number_input, slider

    @dataclass(frozen=True)
    class Page:
        share: float = param(0.25, low=0.0, high=1.0, shown=(0.1, 0.9), step=0.05, fmt="%.2f", label="Share",
                             help="a made-up share")
        count: int = param(3, low=1, high=40, label="Count", help="a made-up count")

    share = slider(spec(Page, "share"), key="share")
    count = number_input(spec(Page, "count"), key="count", help="the page's own help")
    st.write(f"{type(share).__name__} {type(count).__name__}")


def test_controls_follow_the_field():
    at = AppTest.from_function(_knob_page, default_timeout=30).run()
    assert not at.exception, at.exception
    share, count = at.slider(key="share"), at.number_input(key="count")
    assert (share.label, share.min, share.max, share.step, share.value) == ("Share", 0.1, 0.9, 0.05, 0.25)
    assert (share.help, share.proto.format) == ("a made-up share", "%.2f")
    assert (count.label, count.min, count.max, count.value, count.help) == ("Count", 1, 40, 3, "the page's own help")
    assert at.markdown[0].value == "float int"
    count.set_value(12).run()
    assert count.value == 12 and at.markdown[0].value == "float int"


def test_neurons_page_sliders_come_from_the_fields(monkeypatch, tiny_env):
    """The page's candidate-quantile, ratio and top-fraction sliders: the fields' range, step and default."""
    at = open_page(monkeypatch, tiny_env("params_page"), "views/neurons.py")
    assert not at.exception, at.exception
    expected = {"neurons_q": ("Candidate threshold quantile", 0.5, 0.999, 0.005, 0.90),
                "neurons_ratio": ("Specificity ratio (top / second)", 1.0, 5.0, 0.1, 1.5),
                "neurons_top": ("Top fraction by max PLS", 0.001, 0.10, 0.001, 0.01)}
    for key, want in expected.items():
        s = at.slider(key=key)
        assert s.label == want[0] and [s.min, s.max, s.step, s.value] == pytest.approx(list(want[1:])), key
    assert at.slider(key="neurons_top").proto.format == "%.3f"
    assert "quantile of all neurons' max PLS" in at.slider(key="neurons_q").help


def test_steering_page_top_fraction_comes_from_the_field(monkeypatch, tiny_env):
    """The steering page's top-fraction input: SelectionParams.top_fraction's shown range, step, default and
    format (it once typed 0.001..0.5 by hand)."""
    at = open_page(monkeypatch, tiny_env("params_page"), "views/steering.py")
    assert not at.exception, at.exception
    s, box = spec(SelectionParams, "top_fraction"), at.number_input(key="steer_top")
    assert [box.min, box.max, box.step, box.value] == pytest.approx([s.min_value, s.max_value, s.step, s.default])
    assert [box.min, box.max, box.value] == pytest.approx([0.001, 0.10, 0.01])  # the field's numbers, by hand
    assert box.proto.format == "%.3f" and box.label.startswith(s.label)


def test_neuron_page_radios_offer_the_aliases(monkeypatch, tiny_env):
    """The neuron page's scale (and score) radios offer exactly the Literal aliases' values, in their order,
    with the selection's defaults preselected."""
    at = open_page(monkeypatch, tiny_env("params_page"), "views/neuron.py")
    assert not at.exception, at.exception
    for key, alias, default in (("neuron_scale", Normalization, SelectionParams().normalize),
                                ("neuron_score", Score, SelectionParams().score)):
        radio, values = at.radio(key=key), get_args(alias)
        assert len(radio.options) == len(values), key
        assert [radio.options.index(radio.format_func(v)) for v in values] == list(range(len(values))), key
        assert radio.value == default, key
    assert at.radio(key="neuron_scale").options == ["raw", "per language", "per language and layer (default)"]


# --------------------------------------------------------------------------- no second copy

def _numbers(root: str) -> list[tuple[str, int, str]]:
    out = []
    for path in sorted((REPO_DIR / root).rglob("*.py")):
        with open(path, "rb") as f:
            out += [(str(path.relative_to(REPO_DIR)), t.start[0], t.line.strip()) for t in tokenize.tokenize(f.readline)
                    if t.type == tokenize.NUMBER and t.string in NUMBERS and ("ratio" in t.line.lower()
                                                                              or t.string.startswith("0."))]
    return out


NUMBERS = {"0.90", "0.9", "1.5"}  # the candidate quantile's and the ratio's defaults


def test_defaults_are_not_typed_again_in_callers():
    """views/ and neuro/cli/ name no candidate-quantile default (0.90) and no ratio default (1.5): they read the
    fields. (Strings do not count: prose may quote the paper's numbers.)"""
    assert _numbers("views") + _numbers("neuro/cli") == []
    assert pathlib.Path(REPO_DIR / "views" / "ui" / "params.py").exists()
