"""neuro/ type-checks (mypy, configured in pyproject.toml [tool.mypy]), and the check catches what the Literal
choices (neuro/choices.py) are for: a misspelled choice is reported before anything runs."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(importlib.util.find_spec("mypy") is None,
                                reason="mypy is not installed (pip install -r requirements-dev.txt)")


def _mypy(*args: str) -> subprocess.CompletedProcess:
    # the config (and its cache folder, cache/mypy) come from pyproject.toml in the repository root
    return subprocess.run([sys.executable, "-m", "mypy", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=900)


def test_neuro_type_checks():
    result = _mypy()
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
    assert "Success" in result.stdout


# Each line marked BAD passes a misspelled choice; the lines around it pass the right ones. Run, only the BAD
# lines fail (with a run-time import they would not fail before the run reached them).
SNIPPET = '''\
from neuro.analysis.selectivity import SelectionParams, select_neurons
from neuro.experiments.finetune import FinetuneConfig, default_lr
from neuro.experiments.transfer import TransferConfig

SelectionParams(normalize="language_layer", score="attribution")
SelectionParams(normalize="language_layers")  # BAD
FinetuneConfig(model="m", target="python", method="random", neuron_set="specific+universal")
FinetuneConfig(model="m", target="python", method="nuerons")  # BAD
default_lr("full")
default_lr("Full")  # BAD
TransferConfig(model="m", source="python", layer_choice="lower", method="full")
TransferConfig(model="m", source="python", layer_choice="concepts")  # BAD


def pick(stats) -> None:
    select_neurons(stats, "lape")
    select_neurons(stats, "lap")  # BAD
'''


def test_a_misspelled_choice_is_reported(tmp_path):
    snippet = tmp_path / "uses_choices.py"
    snippet.write_text(SNIPPET)
    result = _mypy(str(snippet))
    bad = [i for i, line in enumerate(SNIPPET.splitlines(), 1) if line.endswith("# BAD")]
    flagged = sorted({int(line.split(":")[1]) for line in result.stdout.splitlines()
                      if line.startswith(str(snippet)) and ": error:" in line})
    assert result.returncode == 1, result.stdout + result.stderr
    assert flagged == bad, result.stdout
    assert 'incompatible type "Literal[\'nuerons\']"' in result.stdout
    assert "Literal['neurons', 'random', 'full', 'lora']" in result.stdout  # the alias says what was meant
