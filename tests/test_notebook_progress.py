"""``notebook_progress()`` in a real Jupyter kernel: a notebook executed headless (nbclient)
downloads a recording from a local profile with the bar, and its saved output holds a
tqdm progress widget that reached the byte total."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

SETUP = """
from pathlib import Path
from ursa import DataInterface, Profile
from ursa.testing import build_recording

root = Path({root!r})
profile = Profile(name="nb", root=str(root / "store"), assets_bucket=f"file://{{root}}/store/assets/")
rec = build_recording(profile, seed=91)
data = DataInterface(profile)
rows = data.query(recording_hash=rec.recording_hash)
"""

DOWNLOAD = """
from ursa.progress import notebook_progress

paths = data.download(rows, root / "out", progress=notebook_progress())
print("total", sum(p.stat().st_size for p in paths))
"""


def widget_models(nb: Any) -> dict[str, Any]:
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    return {
        model_id: model["state"] | {"_model": model["model_name"]}
        for model_id, model in state.items()
    }


def test_notebook_bar_is_a_live_widget_that_reaches_the_total(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "home").mkdir(exist_ok=True)  # conftest points HOME here; IPython writes to it
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(SETUP.format(root=str(tmp_path))),
        nbformat.v4.new_code_cell(DOWNLOAD),
    ]
    client = nbclient.NotebookClient(
        nb, timeout=120, kernel_name="python3", store_widget_state=True
    )
    client.execute(cwd=str(tmp_path))
    outputs = nb.cells[1].outputs
    printed = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    total = int(printed.split("total")[1].split()[0])
    views = [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert views, f"no widget was displayed: {json.dumps(outputs)[:500]}"
    assert views[0]["data"]["text/plain"].startswith("ursa:")  # the repr at display time
    models = widget_models(nb)
    bars = [m for m in models.values() if m["_model"] == "FloatProgressModel"]
    assert len(bars) == 1
    assert bars[0]["value"] == bars[0]["max"] == total > 0
    assert bars[0]["bar_style"] == "success"
    labels = [
        m.get("value", "").replace("\u2007", " ")  # tqdm pads with figure spaces
        for m in models.values()
        if m["_model"] == "HTMLModel"
    ]
    assert any("imu / default" in label for label in labels), labels
