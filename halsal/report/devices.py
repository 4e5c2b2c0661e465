"""Where each stage ran: the resolved device and decode backend per stage, for results.md.

Read from what the jobs recorded (halsal/gpu.py ``run_record``): each fine-tuning run's
metrics.json (found through runs.tsv's ``run_dir``), Step 0's backbone.json and Step 1's
saliency JSON. The decode backend of a stage is the one that wrote the image cache it read
(prepare.json), so the ``prepare`` rows come from the runs of each dataset. Records written
before these fields existed show "not recorded".
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

NOT_RECORDED = "not recorded"


def _device(info: dict) -> str:
    if not info.get("device"):
        return NOT_RECORDED
    name = info.get("device_name")
    return info["device"] + (f" ({name})" if name and name != info["device"] else "")


def _join(values) -> str:
    return ", ".join(sorted(set(values))) or NOT_RECORDED


def device_rows(runs_tsv=None, backbone_jsons=(), saliency_jsons=()) -> pd.DataFrame:
    rows = []
    for kind, paths in (("Step 0", backbone_jsons), ("Step 1", saliency_jsons)):
        for path in paths:
            info = json.loads(Path(path).read_text())
            what = ", ".join(str(info[k]) for k in ("arch", "variant") if info.get(k))
            rows.append({"stage": f"{kind} ({what})", "jobs/runs": 1, "device": _device(info),
                         "decode backend": info.get("decode_backend") or NOT_RECORDED})
    runs = pd.read_csv(runs_tsv, sep="\t") if runs_tsv and Path(runs_tsv).exists() else pd.DataFrame()
    metrics = []
    for run in runs.itertuples() if "run_dir" in runs else ():
        path = Path(run.run_dir) / "metrics.json"
        m = json.loads(path.read_text()) if path.exists() else {}
        metrics.append({"dataset": run.dataset, "method": run.method, "device": _device(m),
                        "backend": m.get("decode_backend") or NOT_RECORDED})
    frame = pd.DataFrame(metrics, columns=["dataset", "method", "device", "backend"])
    for dataset, g in frame.groupby("dataset", sort=True):
        rows.append({"stage": f"prepare: {dataset}", "jobs/runs": 1, "device": "—", "decode backend": _join(g.backend)})
    for method, g in frame.groupby("method", sort=False):
        rows.append({"stage": f"finetune: {method}", "jobs/runs": len(g), "device": _join(g.device),
                     "decode backend": _join(g.backend)})
    return pd.DataFrame(rows, columns=["stage", "jobs/runs", "device", "decode backend"])


def devices_md(runs_tsv=None, backbone_jsons=(), saliency_jsons=()) -> str:
    """The markdown paragraph and table of :func:`device_rows` (empty string: nothing recorded)."""
    table = device_rows(runs_tsv, backbone_jsons, saliency_jsons)
    if table.empty:
        return ""
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return ("Device and decode backend per stage, as each job recorded them (metrics.json, the Step 0/1 "
            "JSON; a job asking for a GPU that does not work stops instead of running on the CPU):\n\n"
            + "\n".join(lines) + "\n")
