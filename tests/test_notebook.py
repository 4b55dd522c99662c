"""In a Jupyter notebook: epoch lines under the cell, no terminal escape codes.

A real kernel (ipykernel, on this interpreter) runs a small notebook through nbclient. tqdm's
notebook bar is a widget that needs ipywidgets; without it ``tqdm.auto`` falls back to the text
bar (carriage returns, which a notebook draws in place), and so does torchwatch with
``progress="auto"``, without tqdm's warning about ipywidgets. The last cell asks for the bar
(``progress=True``): the same bar.
"""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

WIDGETS = importlib.util.find_spec("ipywidgets") is not None
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"

SETUP = """\
import os
os.environ.pop("CI", None)  # the bar's own rule; this notebook decides on the notebook rule
import torch
from torch import nn
import torchwatch as tw

torch.manual_seed(0)
torch.set_num_threads(1)
model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
data = [(torch.randn(16, 4), torch.randn(16, 1)) for _ in range(20)]

def train_one_epoch(loader):
    total = 0.0
    for x, y in tw.steps(loader):
        loss = nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad(); loss.backward(); optimizer.step()
        total += loss.detach()
    return total / len(loader)
"""

LOOP = """\
tw.init(logdir="runs/nb", model=model, optimizer=optimizer, total_epochs=2)
train = tw.watch_epoch(train_one_epoch)
for epoch in range(2):
    train(data)
    with tw.phase("val"):
        for x, y in data[:5]:
            tw.log(loss=nn.functional.mse_loss(model(x), y), n=len(x))
tw.close()
"""

FORCED_BAR = """\
tw.init(logdir="runs/nb-bar", model=model, optimizer=optimizer, progress=True)
tw.watch_epoch(train_one_epoch)(data)
tw.close()
"""


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """The notebook's cells after a kernel on this interpreter ran them."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    root = tmp_path_factory.mktemp("nb")
    spec = root / "kernels" / "tw-python"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "torchwatch tests", "language": "python",
    }))
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(src) for src in (SETUP, LOOP, FORCED_BAR)]
    specs = KernelSpecManager(kernel_dirs=[str(root / "kernels")])
    manager = KernelManager(kernel_name="tw-python", kernel_spec_manager=specs)
    client = nbclient.NotebookClient(notebook, km=manager, timeout=120,
                                     resources={"metadata": {"path": str(root)}})
    client.execute()
    return notebook.cells


def streams(cell, name):
    return "".join(o["text"] for o in cell.outputs
                   if o["output_type"] == "stream" and o["name"] == name)


def test_epoch_lines_appear_under_the_cell(executed):
    """Each finished phase prints its epoch line in the cell's output."""
    lines = streams(executed[1], "stdout").splitlines()
    assert [line.split("  ")[0] for line in lines] == [
        "Epoch [1/2] train", "Epoch [1/2] val", "Epoch [2/2] train", "Epoch [2/2] val"]
    assert all(" loss " in line and " | " in line for line in lines)


def test_no_terminal_escape_codes_in_the_cell_output(executed):
    """The watched loop's cell has no escape codes and its epoch lines no carriage returns; the
    bar is the widget where ipywidgets is installed, else tqdm's text bar on stderr (tqdm.auto's
    fallback) without tqdm's warning about ipywidgets."""
    cell = executed[1]
    text = "".join(o.get("text", "") for o in cell.outputs)
    assert "\x1b[" not in text and "\r" not in streams(cell, "stdout")
    widgets = [o for o in cell.outputs if WIDGET_MIME in o.get("data", {})]
    if WIDGETS:
        assert widgets and "\r" not in text
    else:
        errors = streams(cell, "stderr")
        assert not widgets and "/20 [" in errors and "IProgress" not in errors


def test_a_forced_bar_without_widgets_is_the_text_bar(executed):
    """progress=True in a notebook without ipywidgets gets tqdm's text bar, carriage returns
    and all, as progress="auto" does."""
    cell = executed[2]
    if WIDGETS:
        assert any(WIDGET_MIME in o.get("data", {}) for o in cell.outputs)
    else:
        assert "\r" in streams(cell, "stderr")
    assert streams(cell, "stdout").startswith("Epoch [1] train  loss ")
