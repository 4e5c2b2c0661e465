"""The spectral-residual reference row of the saliency-health table (halsal.report.reference):
cut to the evaluation crop, area-averaged to the hallucinated map's resolution, scored on the
same test images and boxes as the runs."""

import numpy as np
import pandas as pd
import pytest

from halsal.errors import HalsalError
from halsal.report.aggregate import SAL_COLUMNS
from halsal.report.health import HEALTH_COLUMNS, write_health
from halsal.report.reference import REFERENCE_LABEL, area_matrix, crop_and_resample, reference_rows


def test_area_matrix_averages_exactly():
    np.testing.assert_allclose(area_matrix(2, 4), [[0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]])
    a = area_matrix(3, 4)  # cells of 4/3 px: the second covers 1/3 of px 1 and of px 2, all of neither
    np.testing.assert_allclose(a.sum(1), 1.0)
    np.testing.assert_allclose(a[1], [0, 0.5, 0.5, 0])


def test_crop_and_resample_takes_the_centre_crop():
    maps = np.zeros((1, 12, 12), dtype=np.uint8)
    maps[0, 2:6, 2:6] = 255  # the crop's (offset 2) top-left 4 x 4 pixels
    got = crop_and_resample(maps, 8, (4, 4))
    want = np.zeros((4, 4))
    want[:2, :2] = 1.0
    np.testing.assert_allclose(got[0], want)
    with pytest.raises(HalsalError, match="input size 16"):
        crop_and_resample(maps, 16, (4, 4))


def _run(tmp_path, seed, rows, boxes, method="approach_b", k="1"):
    d = tmp_path / f"run-{method}-{k}-{seed}"
    d.mkdir()
    np.savez(d / "saliency.npz", before=np.zeros((len(rows), 4, 4), np.float16),
             after=np.zeros((len(rows), 4, 4), np.float16), rows=np.asarray(rows, np.int64),
             boxes=np.asarray(boxes, np.float64))
    return {"arch": "efficientnet_lite0", "dataset": "cub200", "method": method, "variant": "d4-stage2-eq2",
            "k": k, "seed": seed, "input_size": 8, "synthetic": False, "run_dir": str(d),
            **{c: (0.1 if method != "baseline" else np.nan) for c in SAL_COLUMNS}}


def test_reference_rows_score_the_runs_test_images(tmp_path):
    maps = np.zeros((3, 12, 12), dtype=np.uint8)
    maps[:, 2:6, 2:6] = 255  # each image's map: 1 on the crop's top-left quarter, 0 elsewhere
    np.save(tmp_path / "maps.npy", maps)
    on, off = [0, 0, 4, 4], [4, 4, 8, 8]  # input-pixel boxes: on the map's bright quarter, away from it
    runs = pd.DataFrame([_run(tmp_path, 0, [0, 2], [on, on]), _run(tmp_path, 0, [0, 2], [on, on], k="5"),
                         _run(tmp_path, 1, [1, 2], [on, off]),
                         _run(tmp_path, 1, [1, 2], [on, off], method="baseline")])
    ref = reference_rows(runs, {"cub200": tmp_path / "maps.npy"}, HEALTH_COLUMNS)
    assert len(ref) == 1 and list(ref.columns) == HEALTH_COLUMNS
    r = ref.iloc[0]
    assert (r.label, r.k, r.n_runs, r.n_dead) == (REFERENCE_LABEL, "all", 2, 0)  # one run per seed
    # inside mean / whole mean: 1 / 0.25 = 4 on a box on the bright quarter, 0 on one away from it;
    # seed 0: (4 + 4) / 2, seed 1: (4 + 0) / 2; the mean over seeds is 3
    assert r.test_object_ratio == pytest.approx(3.0)
    assert r.test_mean == pytest.approx(0.25)
    out = write_health(runs, tmp_path, reference_maps={"cub200": tmp_path / "maps.npy"})
    assert REFERENCE_LABEL in set(out.label)
    assert REFERENCE_LABEL in (tmp_path / "saliency_health.html").read_text()


def test_reference_rows_name_a_missing_maps_file(tmp_path):
    runs = pd.DataFrame([_run(tmp_path, 0, [0], [[0, 0, 4, 4]])])
    with pytest.raises(HalsalError, match="smic_maps rule for 'cub200'"):
        reference_rows(runs, {"cub200": tmp_path / "missing.npy"}, HEALTH_COLUMNS)


def test_tables_cli_takes_the_maps_of_each_dataset_from_its_json(tmp_path):
    """`halsal tables --reference-maps '{"<dataset>": path}'`: the dataset is the key, never the
    file's folder (here named after nothing), and {} or no option gives no reference row."""
    import json

    from halsal.cli import main as halsal_main

    maps = np.zeros((3, 12, 12), dtype=np.uint8)
    maps[:, 2:6, 2:6] = 255
    path = tmp_path / "anywhere" / "spectral-residual.npy"
    path.parent.mkdir()
    np.save(path, maps)
    on, off = [0, 0, 4, 4], [4, 4, 8, 8]
    runs = pd.DataFrame([_run(tmp_path, 0, [0, 2], [on, on]), _run(tmp_path, 1, [1, 2], [on, off]),
                         _run(tmp_path, 1, [1, 2], [on, off], method="baseline")]).assign(test_acc=0.5, val_acc=0.5)
    runs.to_csv(tmp_path / "runs.tsv", sep="\t", index=False)
    args = ["tables", "--runs", str(tmp_path / "runs.tsv"), "--variant", "d4-stage2-eq2", "--archs", "efficientnet_lite0",
            "--datasets", "cub200", "--methods", "baseline", "approach_b", "--ks", "1"]
    assert halsal_main(args + ["--outdir", str(tmp_path / "t"), "--reference-maps", json.dumps({"cub200": str(path)})]) == 0
    health = pd.read_csv(tmp_path / "t" / "saliency_health.tsv", sep="\t")
    ref = health[health.label == REFERENCE_LABEL]
    assert list(ref.dataset) == ["cub200"] and ref.test_object_ratio.iloc[0] == pytest.approx(3.0)
    for extra, outdir in ((["--reference-maps", "{}"], "none"), ([], "left-out")):
        assert halsal_main(args + ["--outdir", str(tmp_path / outdir)] + extra) == 0
        assert REFERENCE_LABEL not in set(pd.read_csv(tmp_path / outdir / "saliency_health.tsv", sep="\t").label)
    with pytest.raises(SystemExit):  # a list of paths, the old form, is refused
        halsal_main(args + ["--outdir", str(tmp_path / "old"), "--reference-maps", str(path)])
