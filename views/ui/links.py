"""Links to one neuron: its page (views/neuron.py, addressed by ?layer=&neuron=) and the token inspector
preset on it. One place, so every page builds the same URL."""

from __future__ import annotations

import streamlit as st

NEURON_PAGE = "views/neuron.py"
NEURONS_PAGE = "views/neurons.py"
INSPECTOR_TAB = "Token inspector"
INTERVENE_TAB = "Intervene"


def neuron_params(layer: int, neuron: int) -> dict[str, str]:
    return {"layer": str(int(layer)), "neuron": str(int(neuron))}


def parse_neuron(layer: str | None, neuron: str | None, n_layers: int,
                 n_neurons: int) -> tuple[tuple[int, int] | None, str | None]:
    """(layer, neuron) from a URL's values, or None and what is wrong with them, in words."""
    values = []
    for name, raw, size in (("layer", layer, n_layers), ("neuron", neuron, n_neurons)):
        if raw is None or not str(raw).strip():
            return None, f"The link has no {name} (expected ?layer=L&neuron=N)."
        try:
            value = int(str(raw).strip())
        except ValueError:
            return None, f"The link's {name} {raw!r} is not a whole number."
        if not 0 <= value < size:
            return None, (f"The link's {name} {value} does not exist: this model has {name}s 0 to {size - 1}"
                          + (" in each layer." if name == "neuron" else "."))
        values.append(value)
    return (values[0], values[1]), None


def open_neuron(layer: int, neuron: int) -> None:
    """Go to the neuron's page (stops this run)."""
    st.switch_page(NEURON_PAGE, query_params=neuron_params(layer, neuron))


def neuron_link(layer: int, neuron: int, label: str | None = None) -> None:
    st.page_link(NEURON_PAGE, label=label or f"L{layer} N{neuron}", icon=":material/neurology:",
                 query_params=neuron_params(layer, neuron))


def open_in_inspector(layer: int, neuron: int, code: str | None = None) -> None:
    """The Neurons page's token inspector with this neuron (and this program) chosen (stops this run)."""
    st.session_state["inspect_layer"] = int(layer)
    st.session_state["inspect_neuron"] = int(neuron)
    if code is not None:
        st.session_state["inspect_code"] = code
    st.switch_page(NEURONS_PAGE, query_params={"tab": INSPECTOR_TAB})


def preset_intervene(layer: int, neuron: int, code: str | None = None) -> None:
    """The Intervene tab's choices set to this one neuron (and program)."""
    st.session_state["iv_which"] = "one"
    st.session_state["iv_layer"] = int(layer)
    st.session_state["iv_neuron"] = int(neuron)
    if code is not None:
        st.session_state["iv_code"] = code


def open_in_intervene(layer: int, neuron: int, code: str | None = None) -> None:
    """From another page: the Neurons page's Intervene tab with this one neuron chosen (stops this run)."""
    preset_intervene(layer, neuron, code)
    st.switch_page(NEURONS_PAGE, query_params={"tab": INTERVENE_TAB})


def intervene_here(layer: int, neuron: int, code: str | None = None) -> None:
    """A button callback on the Neurons page itself, whose tab is a widget bound to the URL: it can only be
    moved before the next run draws it, never by a page switch to the same page."""
    preset_intervene(layer, neuron, code)
    st.session_state["tab"] = INTERVENE_TAB
