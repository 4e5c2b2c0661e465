"""Completion records of fine-tuning runs: what lets a job that runs again skip finished runs.

Each run leaves ``complete.json`` beside its outputs, written after them and before
``metrics.json``: the run's fingerprint (its settings, the identity of its input files and
halsal's training code), the sha256 of every output file, and the metrics. A job that runs
again (after a kill, or because Snakemake deleted the outputs of a failed job) restores
``metrics.json`` from every record that still matches instead of training the run again.
The run's files are Snakemake outputs of the job (the report rules read them), so Snakemake
deletes them when the job fails. The record therefore keeps a hard link to each (``.kept/``,
not an output), from which :func:`restore` puts a deleted file back when its sha256 still matches.
Nothing here knows the paper's steps: :mod:`halsal.train.steps` builds the fingerprint's key.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

from halsal.data.datasets import file_sha256
from halsal.io import write_json

RECORD = "complete.json"  # the completion record of a run: fingerprint, file hashes, metrics
RUN_FILES = ("saliency.npz", "predictions.tsv", "history.tsv")  # written before the record
KEPT = ".kept"  # hard links to a finished run's files, which a failed job's clean-up does not remove


def stamp(path) -> list | None:
    """Identity of an input file for run fingerprints: size and modification time (a file that
    its rule wrote again, e.g. new Step-1 weights, no longer matches)."""
    if path is None:
        return None
    st = Path(path).stat()
    return [st.st_size, st.st_mtime_ns]


@functools.lru_cache(maxsize=1)
def code_digest() -> str:
    """sha256 over halsal's model and training code (and the k-shot selection): changed code
    retrains instead of restoring (Snakemake does not see changes inside the package)."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    files = [*(root / "models").glob("*.py"), *(root / "train").glob("*.py"), root / "data" / "splits.py"]
    for path in sorted(files):
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def fingerprint(key: dict) -> str:
    """sha256 of a run's key (JSON, sorted keys) plus :func:`code_digest`."""
    return hashlib.sha256(json.dumps({**key, "code": code_digest()}, sort_keys=True, default=str).encode()).hexdigest()


def write_record(out_dir, fingerprint_: str, metrics: dict, files=RUN_FILES) -> None:
    """The run's record, after its ``files`` and before its metrics.json."""
    out_dir = Path(out_dir)
    kept = out_dir / KEPT
    kept.mkdir(exist_ok=True)
    for name in files:
        _link(out_dir / name, kept / name)
    write_json(out_dir / RECORD, {"fingerprint": fingerprint_,
                                  "files": {name: file_sha256(out_dir / name) for name in files}, "metrics": metrics})


def _link(src: Path, dst: Path) -> None:
    """``dst`` becomes a hard link to ``src`` (a copy where the file system has none)."""
    import shutil

    tmp = dst.with_name(dst.name + ".tmp")
    tmp.unlink(missing_ok=True)
    try:
        tmp.hardlink_to(src)
    except OSError:
        shutil.copy2(src, tmp)
    tmp.replace(dst)


def _present(out_dir: Path, name: str, digest: str) -> bool:
    """Whether the run's file ``name`` has ``digest``, put back from its kept link if it was deleted
    (a file that is there but changed is not replaced: the run is trained again)."""
    path = out_dir / name
    if path.exists():
        return path.is_file() and file_sha256(path) == digest
    kept = out_dir / KEPT / name
    if kept.is_file() and file_sha256(kept) == digest:
        _link(kept, path)
        return True
    return False


def restore(out_dir, fingerprint_: str) -> dict | None:
    """The metrics of a run that an earlier job finished, written back to metrics.json; None
    when the run has to be trained (no record, other settings or inputs, a file changed)."""
    out_dir = Path(out_dir)
    try:
        record = json.loads((out_dir / RECORD).read_text())
        if record["fingerprint"] != fingerprint_:
            return None
        if not all(_present(out_dir, name, digest) for name, digest in record["files"].items()):
            return None
        metrics = record["metrics"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    path = out_dir / "metrics.json"
    try:
        same = json.loads(path.read_text()) == metrics
    except (OSError, ValueError):
        same = False
    if not same:
        write_json(path, metrics)
    (out_dir / "checkpoint.pt").unlink(missing_ok=True)
    return metrics
