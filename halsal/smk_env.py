"""Process environment for the workflow's jobs (called once from workflow/rules/common.smk).

Rules run ``python -m halsal`` from this checkout. The checkout goes on PYTHONPATH, which
reaches conda environments and cluster jobs through the environment; outside conda, the
Python that runs Snakemake goes first on PATH, so ``python`` in a rule has the pinned stack
even when the venv is not activated (``.venv/bin/snakemake ...``).
"""

from __future__ import annotations

import os
import sys


def setup(basedir: str, use_conda: bool) -> None:
    paths = [basedir, os.environ.get("PYTHONPATH", "")]
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    if not use_conda:
        os.environ["PATH"] = os.pathsep.join((os.path.dirname(sys.executable), os.environ.get("PATH", "")))
