"""The notebooks of docs/notebooks run as they are: every code cell, in order, in one
namespace, in a fresh folder (what "Run all" does, without a Jupyter kernel)."""

import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "docs" / "notebooks").glob("*.ipynb"))


def test_there_is_a_notebook():
    assert NOTEBOOKS


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_every_code_cell_runs(notebook, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cells = [c for c in json.loads(notebook.read_text())["cells"] if c["cell_type"] == "code"]
    assert cells
    namespace: dict = {"__name__": "__main__"}
    for i, cell in enumerate(cells):
        source = "".join(cell["source"])
        # a cell's last expression is what Jupyter shows: evaluate it too, so it must not fail
        exec(compile(source, f"{notebook.name} cell {i}", "exec"), namespace)
    import pandas as pd

    assert isinstance(namespace["result"].rounds, pd.DataFrame)
    assert len(namespace["table"]) == 2 and set(namespace["per_round"]["round"]) == {1, 2}
