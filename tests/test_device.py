"""A device this machine does not have is refused with a clear message before anything loads, and the CLI
turns that into exit code 2 and one JSON {"error": ...} on stdout (not an AssertionError from deep in torch)."""

from __future__ import annotations

import json

import pytest
import torch

from neuro.cli import main
from neuro.model import loading
from neuro.model.errors import ModelLoadError
from neuro.model.loading import check_device, load_model


@pytest.mark.parametrize("device", [None, "cpu", "cpu:0", torch.device("cpu")])
def test_the_cpu_and_the_default_pass(device):
    check_device(device)


def test_an_unknown_device_string_is_refused():
    for bad in ("gpu", "cuda:x", "cuda:-1:2"):
        with pytest.raises(ModelLoadError, match="unknown device"):
            check_device(bad)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_refused_before_the_model_is_read(tmp_path):
    with pytest.raises(ModelLoadError, match="no CUDA on this machine"):
        check_device("cuda:0")
    # refused before the source is even looked at: a folder that does not exist is not the error
    with pytest.raises(ModelLoadError, match="no CUDA"):
        load_model(tmp_path / "missing", device="cuda")


def test_a_cuda_index_past_the_gpus_is_out_of_range(monkeypatch):
    monkeypatch.setattr(loading.torch.cuda, "is_available", lambda: True)  # a machine with two GPUs
    monkeypatch.setattr(loading.torch.cuda, "device_count", lambda: 2)
    check_device("cuda")
    check_device("cuda:1")
    with pytest.raises(ModelLoadError, match=r"out of range: this machine has 2 CUDA device\(s\), cuda:0 to cuda:1"):
        check_device("cuda:2")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cli_info_on_cuda_without_cuda_exits_2_with_one_json_error(capsys):
    code = main(["info", "--device", "cuda", "--json"])
    out = capsys.readouterr().out
    assert code == 2
    report = json.loads(out)  # stdout is exactly one JSON document
    assert set(report) == {"error"} and "no CUDA on this machine" in report["error"]
