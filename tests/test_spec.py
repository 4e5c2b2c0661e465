"""The paper's vocabulary is defined once (halsal.spec), torch-free, and everything agrees with it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from halsal import spec

REPO = Path(__file__).resolve().parents[1]

# Fails the process on the first import of torch (what loading the workflow must not do).
NO_TORCH = """
import builtins, sys
real = builtins.__import__
def guard(name, *args, **kw):
    if name == "torch" or name.startswith("torch."):
        raise SystemExit("torch was imported")
    return real(name, *args, **kw)
builtins.__import__ = guard
"""


def test_spec_imports_no_torch():
    code = NO_TORCH + "import halsal.spec\nassert 'torch' not in sys.modules\nprint('ok')"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr


def test_loading_the_workflow_imports_no_torch(tmp_path):
    code = NO_TORCH + ("from snakemake.cli import main\n"
                       f"sys.argv = ['snakemake', '-n', '--quiet', 'rules', '-s', {str(REPO / 'Snakefile')!r}, "
                       f"'--directory', {str(tmp_path)!r}, '--configfile', {str(REPO / 'config/paper.yaml')!r}]\n"
                       "main()")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / ".cache"), "PYTHONPATH": str(REPO)})
    assert res.returncode == 0 and "torch was imported" not in res.stdout + res.stderr, res.stderr[-2000:]
    assert "finetune" in res.stdout


def test_variant_round_trip_and_errors():
    assert spec.parse_variant(spec.format_variant(4, "layer2.0", "eq2")) == {"depth": 4, "fusion": "layer2.0",
                                                                             "modulation": "eq2"}
    with pytest.raises(ValueError, match="d<depth>-<fusion>"):
        spec.parse_variant("d4_pool2_eq2")
    with pytest.raises(ValueError, match="'conv5' is not a fusion point of alexnet; choose one of pool1, pool2"):
        spec.check_fusion("alexnet", "conv5")


def test_models_steps_and_report_use_the_spec():
    from halsal.models import MODEL_CLASSES, variant_options

    for arch in spec.ARCHS:  # the networks split exactly at the spec's fusion points
        assert set(MODEL_CLASSES[arch].FUSION_POINTS) == set(spec.FUSION_POINTS[arch])
        assert spec.DEFAULT_FUSION[arch] in spec.FUSION_POINTS[arch]
    assert variant_options("resnet152", "d4-layer2.0-eq2")["fusion"] == "layer2.0"


def test_the_paper_tables_rows_are_the_spec_methods():
    """Every row of the paper's Tables 1-2 (the shipped TSVs) is one of spec's methods, by label,
    and the report prints each method under that label."""
    from halsal.report.paper import METHOD_LABELS, paper_table

    table = paper_table()
    for arch in spec.PAPER_ARCHS:
        rows = set(table[table["arch"].str.lower().str.replace("-", "") == arch]["method"])
        assert rows == set(spec.METHOD_NAMES), (arch, rows)
    assert all(METHOD_LABELS[name] == m.label for name, m in spec.METHODS.items())
