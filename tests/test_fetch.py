"""Dataset fetch layer, fully offline.

Fixture archives (tiny PIL images, .mat files via scipy.io.savemat) are served by a local
http.server bound to 127.0.0.1 only; the checksum registry is passed in with the fixtures'
digests. Nothing here reaches the internet.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import socket
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.io import savemat

from halsal.data.fetch import fetch_dataset, load_checksums, read_ready
from halsal.data.fetch.download import download_file
from halsal.data.fetch import extract as fetch_extract
from halsal.data.fetch.extract import extract_archive
from halsal.errors import HalsalError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
FLOWER_NAMES = ["pink primrose", "hard-leaved pocket orchid", "canterbury bells"]


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def jpeg(color, size=(12, 10), fmt="JPEG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, fmt)
    return buf.getvalue()


def mat_bytes(tmp: Path, **arrays) -> bytes:
    path = tmp / "x.mat"
    savemat(path, arrays)
    return path.read_bytes()


def targz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


# ---------------------------------------------------------------- local HTTP server


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        srv = self.server
        data = srv.files.get(self.path.lstrip("/"))
        rng = self.headers.get("Range")
        if data is None:
            srv.log.append({"path": self.path, "range": rng, "status": 404})
            self.send_error(404)
            return
        start, status = 0, 200
        if rng and srv.honour_range:
            start, status = int(rng.split("=")[1].split("-")[0]), 206
        body = data[start:]
        # logged before sending, so the client never sees the reply before the log does
        srv.log.append({"path": self.path, "range": rng, "status": status, "sent": len(body)})
        self.send_response(status)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)  # loopback only
    srv.files, srv.log, srv.honour_range = {}, [], True
    srv.base = f"http://127.0.0.1:{srv.server_address[1]}"
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=5)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- dataset fixtures

LABELS = [1, 1, 2, 2, 3, 3]
SPLITS = {"trnid": [1, 3, 5], "valid": [2, 4], "tstid": [6]}


def flowers_files(tmp: Path) -> dict[str, bytes]:
    colors = [(200, 0, 0), (0, 200, 0), (0, 0, 200), (200, 200, 0), (0, 200, 200), (90, 90, 90)]
    tgz = targz({f"jpg/image_{i:05d}.jpg": jpeg(c) for i, c in enumerate(colors, 1)})
    return {
        "102flowers.tgz": tgz,
        "imagelabels.mat": mat_bytes(tmp, labels=np.array([LABELS])),
        "setid.mat": mat_bytes(tmp, **{k: np.array([v]) for k, v in SPLITS.items()}),
    }


def registry(name: str, files: dict[str, bytes], base: str, **extra) -> dict:
    entry = {"files": {n: {"md5": md5(d), "urls": [f"{base}/{n}"]} for n, d in files.items()}}
    return {name: {**entry, **extra}}


@pytest.fixture
def flowers(server, tmp_path):
    files = flowers_files(tmp_path)
    server.files.update(files)
    return files, registry("flowers102", files, server.base, class_names=FLOWER_NAMES)


# ---------------------------------------------------------------- tests


def test_shipped_registry_is_usable_by_every_fetcher():
    """Every dataset a fetcher builds has a registry entry whose files carry a 32-hex md5 and a
    list of URLs (a typo here would only show as a failed download on a user's machine)."""
    from halsal.data.fetch import BUILDERS

    reg = load_checksums()
    for name in set(BUILDERS) - {"folder"}:  # folder: the user's own images, nothing to download
        files = reg[name]["files"]
        assert files, name
        for fname, entry in files.items():
            assert re.fullmatch(r"[0-9a-f]{32}", entry["md5"]), (name, fname)
            assert isinstance(entry["urls"], list) and all(u.startswith("https://") for u in entry["urls"]), (name, fname)
    assert len(reg["flowers102"]["class_names"]) == 102  # the fetcher names its 102 class folders from these


def test_flowers_checksum_pass_builds_ready_tree_and_rerun_is_noop(flowers, server, tmp_path):
    _, reg = flowers
    root = tmp_path / "flowers"
    assert fetch_dataset("flowers102", root, checksums=reg, progress=False) == root
    idx = pd.read_csv(root / "images.tsv", sep="\t", keep_default_na=False)
    assert list(idx.columns) == ["path", "class_id", "class_name", "official_split"]
    assert idx["path"].tolist()[:2] == [
        "images/001_pink_primrose/image_00001.jpg", "images/001_pink_primrose/image_00002.jpg"]
    assert idx["class_id"].tolist() == LABELS
    assert idx["official_split"].tolist() == ["train", "val", "train", "val", "train", "test"]
    assert idx["class_name"].tolist()[2] == "hard-leaved pocket orchid"
    assert all((root / p).is_file() for p in idx["path"])
    assert Image.open(root / idx["path"][5]).size == (12, 10)
    classes = pd.read_csv(root / "classes.tsv", sep="\t")
    assert classes.to_dict("list") == {"class_id": [1, 2, 3], "name": FLOWER_NAMES}
    ready = read_ready(root)
    assert ready["name"] == "flowers102" and ready["paths"] == "relative"
    assert ready["counts"]["images"] == 6 and ready["counts"]["classes"] == 3
    assert ready["counts"]["per_split"] == {"test": 1, "train": 3, "val": 2}
    assert ready["checksums_verified"]["setid.mat"]["md5"] == reg["flowers102"]["files"]["setid.mat"]["md5"]
    assert not (root / ".extract").exists() and not (root / ".halsal-partial").exists()
    n_requests, stamp = len(server.log), (root / "READY.json").stat().st_mtime_ns
    fetch_dataset("flowers102", root, checksums=reg, progress=False)
    assert len(server.log) == n_requests and (root / "READY.json").stat().st_mtime_ns == stamp
    with pytest.raises(HalsalError, match="already holds a ready 'flowers102'"):
        fetch_dataset("cub200", root, checksums=reg, progress=False)


def test_checksum_fail_reports_digests_and_leaves_no_file(flowers, tmp_path):
    files, reg = flowers
    reg["flowers102"]["files"]["imagelabels.mat"]["md5"] = "0" * 32
    root = tmp_path / "bad"
    with pytest.raises(HalsalError) as err:
        fetch_dataset("flowers102", root, checksums=reg, progress=False)
    msg = str(err.value)
    assert "imagelabels.mat" in msg and "0" * 32 in msg and md5(files["imagelabels.mat"]) in msg
    dl = root / "downloads"
    assert not (dl / "imagelabels.mat").exists() and not (dl / "imagelabels.mat.part").exists()
    assert read_ready(root) is None


def test_resume_fetches_only_the_rest(server, tmp_path):
    payload = np.random.default_rng(0).bytes(300_000)
    server.files["big.bin"] = payload
    (tmp_path / "big.bin.part").write_bytes(payload[:120_000])
    entry = {"md5": md5(payload), "urls": [f"{server.base}/big.bin"]}
    out = download_file("big.bin", entry, tmp_path, progress=False)
    assert out.read_bytes() == payload and not (tmp_path / "big.bin.part").exists()
    assert server.log == [{"path": "/big.bin", "range": "bytes=120000-", "status": 206, "sent": 180_000}]


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    server.honour_range = False
    payload = np.random.default_rng(1).bytes(100_000)
    server.files["big.bin"] = payload
    (tmp_path / "big.bin.part").write_bytes(b"x" * 40_000)  # stale bytes must not survive
    entry = {"md5": md5(payload), "urls": [f"{server.base}/big.bin"]}
    out = download_file("big.bin", entry, tmp_path, progress=False)
    assert md5(out.read_bytes()) == md5(payload)
    assert server.log[0]["range"] == "bytes=40000-" and server.log[0]["status"] == 200


def _evil_tar(path: Path, kind: str, outside: Path) -> None:
    with tarfile.open(path, "w") as tf:
        ok = tarfile.TarInfo("data/ok.txt")
        ok.size = 2
        tf.addfile(ok, io.BytesIO(b"ok"))
        if kind == "dotdot":
            bad = tarfile.TarInfo("../evil.txt")
        elif kind == "absolute":
            bad = tarfile.TarInfo(str(outside / "abs_evil.txt"))
        else:
            bad = tarfile.TarInfo("data/escape")
            bad.type, bad.linkname = tarfile.SYMTYPE, "../../outside"
        if kind != "symlink":
            bad.size = 4
            tf.addfile(bad, io.BytesIO(b"evil"))
        else:
            tf.addfile(bad)


@pytest.mark.parametrize("data_filter", [True, False], ids=["data-filter", "explicit-check-only"])
@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink"])
def test_unsafe_tar_is_refused(tmp_path, kind, data_filter, monkeypatch):
    # explicit-check-only: what Pythons older than 3.11.4 (no tarfile data filter) get
    monkeypatch.setattr(fetch_extract, "_HAS_DATA_FILTER", data_filter and fetch_extract._HAS_DATA_FILTER)
    outside = tmp_path / "outside"
    outside.mkdir()
    archive = tmp_path / f"{kind}.tar"
    _evil_tar(archive, kind, outside)
    target = tmp_path / "a" / "target"
    with pytest.raises(HalsalError) as err:
        extract_archive(archive, target, progress=False)
    assert str(archive) in str(err.value) and "member" in str(err.value)
    assert not (tmp_path / "a" / "evil.txt").exists() and not (outside / "abs_evil.txt").exists()
    assert not (target / "data" / "escape").exists()
    # outside the target, only what the test itself made exists
    after = {p for p in tmp_path.rglob("*") if p != target and target not in p.parents}
    assert after == {outside, archive, tmp_path / "a"}


def test_offline_error_names_url_and_placement_then_manual_placement_works(flowers, tmp_path):
    files, reg = flowers
    port = closed_port()
    for n, e in reg["flowers102"]["files"].items():
        e["urls"] = [f"http://127.0.0.1:{port}/{n}"]
    root = tmp_path / "offline"
    with pytest.raises(HalsalError) as err:
        fetch_dataset("flowers102", root, checksums=reg, progress=False)
    msg = str(err.value)
    place = root / "downloads" / "102flowers.tgz"
    assert f"http://127.0.0.1:{port}/102flowers.tgz" in msg and str(place) in msg
    assert md5(files["102flowers.tgz"]) in msg
    # the user fetches the files elsewhere and drops them in: no network needed now
    for n, data in files.items():
        (root / "downloads" / n).write_bytes(data)
    fetch_dataset("flowers102", root, checksums=reg, progress=False)
    assert read_ready(root)["counts"]["images"] == 6


def test_misplaced_corrupt_file_is_moved_aside(flowers, tmp_path):
    files, reg = flowers
    root = tmp_path / "r"
    (root / "downloads").mkdir(parents=True)
    (root / "downloads" / "setid.mat").write_bytes(b"not a mat file")
    with pytest.raises(HalsalError, match=r"expected .* actual "):
        fetch_dataset("flowers102", root, checksums=reg, progress=False)
    assert (root / "downloads" / "setid.mat.bad").exists()
    assert not (root / "downloads" / "setid.mat").exists()


def test_interrupted_build_is_rebuilt(flowers, tmp_path):
    _, reg = flowers
    root = tmp_path / "half"
    (root / "images" / "junk").mkdir(parents=True)
    (root / ".halsal-partial").write_text("flowers102\n")
    fetch_dataset("flowers102", root, checksums=reg, progress=False)
    assert not (root / "images" / "junk").exists() and read_ready(root)["counts"]["images"] == 6
    other = tmp_path / "foreign"
    (other / "images").mkdir(parents=True)  # not ours: must not be deleted
    with pytest.raises(HalsalError, match="choose an empty --root"):
        fetch_dataset("flowers102", other, checksums=reg, progress=False)
    assert (other / "images").is_dir()


def test_cub200_fixture_archive(server, tmp_path):
    base = "CUB_200_2011/"
    members = {
        base + "classes.txt": b"1 001.Black_footed_Albatross\n2 002.Laysan_Albatross\n",
        base + "images.txt": b"1 001.Black_footed_Albatross/a_1.jpg\n2 001.Black_footed_Albatross/a_2.jpg\n"
                             b"3 002.Laysan_Albatross/l_1.jpg\n",
        base + "image_class_labels.txt": b"1 1\n2 1\n3 2\n",
        base + "train_test_split.txt": b"1 1\n2 0\n3 1\n",
        base + "images/001.Black_footed_Albatross/a_1.jpg": jpeg((1, 2, 3)),
        base + "images/001.Black_footed_Albatross/a_2.jpg": jpeg((4, 5, 6)),
        base + "images/002.Laysan_Albatross/l_1.jpg": jpeg((7, 8, 9)),
    }
    files = {"CUB_200_2011.tgz": targz(members)}
    server.files.update(files)
    root = tmp_path / "cub"
    fetch_dataset("cub200", root, checksums=registry("cub200", files, server.base), progress=False)
    idx = pd.read_csv(root / "images.tsv", sep="\t")
    assert idx.values.tolist() == [
        ["images/001_black_footed_albatross/a_1.jpg", 1, "Black_footed_Albatross", "train"],
        ["images/001_black_footed_albatross/a_2.jpg", 1, "Black_footed_Albatross", "test"],
        ["images/002_laysan_albatross/l_1.jpg", 2, "Laysan_Albatross", "train"],
    ]


def test_cars196_without_source_explains_placement(tmp_path):
    root = tmp_path / "cars"
    with pytest.raises(HalsalError) as err:
        fetch_dataset("cars196", root, progress=False)
    msg = str(err.value)
    # every file of the shipped registry, with the checksum it will be verified against
    files = load_checksums()["cars196"]["files"]
    assert len(files) == 4
    for fname, entry in files.items():
        assert fname in msg and entry["md5"] in msg, fname
    for needle in (str(root / "downloads"), "--source"):
        assert needle in msg


def test_cars196_from_extracted_classic_layout(tmp_path):
    src = tmp_path / "kaggle"
    for d in ("cars_train/cars_train", "cars_test/cars_test", "devkit"):
        (src / d).mkdir(parents=True)
    for split in ("train", "test"):
        for i in (1, 2):
            (src / f"cars_{split}/cars_{split}/{i:05d}.jpg").write_bytes(jpeg((i * 50, 0, 0)))
    ann = lambda rows: np.array(rows, dtype=[("fname", "O"), ("class", "O")])  # noqa: E731
    savemat(src / "devkit/cars_meta.mat", {"class_names": np.array([["AM General Hummer SUV 2000", "Ram C/V Cargo Van 2012"]], dtype=object)})
    savemat(src / "devkit/cars_train_annos.mat", {"annotations": ann([("00001.jpg", 1), ("00002.jpg", 2)])})
    savemat(src / "cars_test_annos_withlabels.mat", {"annotations": ann([("00001.jpg", 2), ("00002.jpg", 2)])})
    root = tmp_path / "cars"
    # the shipped registry knows the real cars_test_annos_withlabels.mat: our fake is refused,
    # and the user's file is left where it was
    expected = load_checksums()["cars196"]["files"]["cars_test_annos_withlabels.mat"]["md5"]
    with pytest.raises(HalsalError, match=f"expected {expected}, actual"):
        fetch_dataset("cars196", root, source=src, progress=False)
    assert (src / "cars_test_annos_withlabels.mat").is_file()
    fetch_dataset("cars196", root, source=src, progress=False, checksums={"cars196": {}})
    idx = pd.read_csv(root / "images.tsv", sep="\t")
    assert idx.values.tolist() == [
        ["images/001_am_general_hummer_suv_2000/train_00001.jpg", 1, "AM General Hummer SUV 2000", "train"],
        ["images/002_ram_c_v_cargo_van_2012/test_00001.jpg", 2, "Ram C/V Cargo Van 2012", "test"],
        ["images/002_ram_c_v_cargo_van_2012/test_00002.jpg", 2, "Ram C/V Cargo Van 2012", "test"],
        ["images/002_ram_c_v_cargo_van_2012/train_00002.jpg", 2, "Ram C/V Cargo Van 2012", "train"],
    ]
    assert (src / "cars_train/cars_train/00001.jpg").is_file()  # the user's files stay


def test_imagenet_val_wnid_layout_subset_is_deterministic(tmp_path):
    src = tmp_path / "val"
    for w in ("n01440764", "n01443537"):
        (src / w).mkdir(parents=True)
        for i in range(6):
            (src / w / f"ILSVRC2012_val_{i:08d}.JPEG").write_bytes(jpeg((i, 0, 0)))
    a, b = tmp_path / "a", tmp_path / "b"
    fetch_dataset("imagenet_val", a, source=src, subset_per_class=3, seed=7, progress=False)
    fetch_dataset("imagenet_val", b, source=src, subset_per_class=3, seed=7, progress=False)
    ia, ib = (pd.read_csv(r / "images.tsv", sep="\t") for r in (a, b))
    assert ia.equals(ib) and len(ia) == 6 and set(ia["official_split"]) == {"val"}
    assert ia["path"][0].startswith("images/0001_n01440764/")
    assert pd.read_csv(a / "classes.tsv", sep="\t").columns.tolist() == ["class_id", "name", "wnid"]
    with pytest.raises(HalsalError, match="subset_per_class"):
        fetch_dataset("imagenet_val", a, source=src, subset_per_class=4, progress=False)


def test_imagenet_val_missing_source_names_what_is_missing(tmp_path):
    with pytest.raises(HalsalError) as err:
        fetch_dataset("imagenet_val", tmp_path / "in", progress=False)
    msg = str(err.value)
    assert "ILSVRC2012_img_val.tar" in msg and "ILSVRC2012_devkit_t12.tar.gz" in msg
    assert str(tmp_path / "in" / "downloads") in msg


def test_folder_rejects_bad_trees(tmp_path):
    one = tmp_path / "one" / "images" / "a"
    one.mkdir(parents=True)
    (one / "x.png").write_bytes(jpeg((1, 1, 1), fmt="PNG"))
    with pytest.raises(HalsalError, match="at least 2"):
        fetch_dataset("folder", tmp_path / "r1", source=tmp_path / "one", progress=False)
    (tmp_path / "one" / "images" / "b").mkdir()
    (tmp_path / "one" / "images" / "b" / "notes.txt").write_text("hi")
    with pytest.raises(HalsalError, match="has no image files"):
        fetch_dataset("folder", tmp_path / "r2", source=tmp_path / "one", progress=False)
    with pytest.raises(HalsalError, match="does not exist"):
        fetch_dataset("folder", tmp_path / "r3", source=tmp_path / "nope", progress=False)


def test_folder_indexes_shared_flowers_tiny_in_place(tmp_path):
    src = SHARED / "flowers102-tiny"
    if not (src / "images").is_dir():
        pytest.skip(f"real photographs not available at {src}")
    root = tmp_path / "ft"
    fetch_dataset("folder", root, source=src, progress=False)
    idx = pd.read_csv(root / "images.tsv", sep="\t", keep_default_na=False)
    assert len(idx) == 120 and idx["class_id"].nunique() == 10
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in idx["path"])
    tiger = idx[idx["class_id"] == 6]
    assert set(tiger["class_name"]) == {"tiger lily"} and len(tiger) == 12
    shared = pd.read_csv(src / "images.tsv", sep="\t")
    want = dict(zip((str(src / p) for p in shared["path"]), shared["official_split"]))
    assert dict(zip(idx["path"], idx["official_split"])) == want
    ready = json.loads((root / "READY.json").read_text())
    assert ready["paths"] == "absolute" and ready["counts"]["classes"] == 10
    assert not (root / "images").exists()


def test_safe_tar_with_inner_symlink_extracts(tmp_path):
    archive = tmp_path / "ok.tar"
    with tarfile.open(archive, "w") as tf:
        f = tarfile.TarInfo("d/real.txt")
        f.size = 3
        tf.addfile(f, io.BytesIO(b"abc"))
        link = tarfile.TarInfo("d/sub/alias.txt")
        link.type, link.linkname = tarfile.SYMTYPE, "../real.txt"
        tf.addfile(link)
    names = extract_archive(archive, tmp_path / "t", progress=False)
    assert names == ["d/real.txt", "d/sub/alias.txt"]
    assert (tmp_path / "t/d/sub/alias.txt").read_text() == "abc"


def test_unsafe_zip_is_refused(tmp_path):
    import zipfile

    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok.txt", "ok")
        zf.writestr("../evil.txt", "evil")
    target = tmp_path / "t"
    with pytest.raises(HalsalError, match=r"member '\.\./evil\.txt'"):
        extract_archive(archive, target, progress=False)
    assert not (tmp_path / "evil.txt").exists() and not (target / "ok.txt").exists()


def _synsets(wnids: list[str]) -> np.ndarray:
    rows = [(i, w, f"name{i}, other", 0) for i, w in enumerate(wnids, 1)]
    rows.append((len(rows) + 1, "n00000001", "not a leaf", 2))  # inner synset: ignored
    return np.array(rows, dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("num_children", "O")])


def test_imagenet_val_from_tar_and_devkit_with_subset(tmp_path):
    # devkit ids are not in sorted-wnid order: class ids must follow sorted wnids
    wnids = ["n02000000", "n01000000"]
    gt = [1, 2, 1, 2, 1, 2, 1, 2]  # devkit ids per val image 1..8
    val_tar = tmp_path / "ILSVRC2012_img_val.tar"
    with tarfile.open(val_tar, "w") as tf:
        for i in range(1, 9):
            data = jpeg((i * 20, 0, 0))
            info = tarfile.TarInfo(f"ILSVRC2012_val_{i:08d}.JPEG")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    meta = mat_bytes(tmp_path, synsets=_synsets(wnids))
    devkit = tmp_path / "ILSVRC2012_devkit_t12.tar.gz"
    devkit.write_bytes(targz({
        "ILSVRC2012_devkit_t12/data/meta.mat": meta,
        "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt": "\n".join(map(str, gt)).encode(),
    }))
    files = {p.name: p.read_bytes() for p in (val_tar, devkit)}
    reg = registry("imagenet_val", files, "http://unused")
    root = tmp_path / "in"
    fetch_dataset("imagenet_val", root, source=[val_tar, devkit], subset_per_class=2, seed=3,
                  checksums=reg, progress=False)
    idx = pd.read_csv(root / "images.tsv", sep="\t")
    assert idx.groupby("class_id").size().to_dict() == {1: 2, 2: 2}
    # class 1 = n01000000 = devkit id 2 = even image numbers
    c1 = idx[idx["class_id"] == 1]
    assert all(int(p[-10:-5]) % 2 == 0 for p in c1["path"]) and set(c1["class_name"]) == {"name2"}
    assert all(p.startswith("images/0001_n01000000/") for p in c1["path"])
    ready = read_ready(root)
    assert set(ready["checksums_verified"]) == {"ILSVRC2012_img_val.tar", "ILSVRC2012_devkit_t12.tar.gz"}
    assert ready["options"] == {"subset_per_class": 2, "seed": 3}
    assert val_tar.is_file() and devkit.is_file()  # the user's archives are untouched
    with pytest.raises(HalsalError, match="no labels"):
        fetch_dataset("imagenet_val", tmp_path / "nolabels", source=val_tar, checksums=reg, progress=False)


def test_http_404_names_url_and_placement(server, tmp_path):
    entry = {"md5": "1" * 32, "urls": [f"{server.base}/gone.tgz"]}
    with pytest.raises(HalsalError) as err:
        download_file("gone.tgz", entry, tmp_path / "dl", progress=False)
    msg = str(err.value)
    assert f"{server.base}/gone.tgz: HTTP 404" in msg and str(tmp_path / "dl" / "gone.tgz") in msg
    assert "1" * 32 in msg and not list((tmp_path / "dl").iterdir())


def test_folder_ready_tree_is_tied_to_its_source(tmp_path):
    for src in ("s1", "s2"):
        for c in ("a", "b"):
            (tmp_path / src / c).mkdir(parents=True)
            (tmp_path / src / c / "x.jpg").write_bytes(jpeg((3, 3, 3)))
    root = tmp_path / "r"
    fetch_dataset("folder", root, source=tmp_path / "s1", progress=False)
    idx = pd.read_csv(root / "images.tsv", sep="\t", keep_default_na=False)
    assert idx.values.tolist() == [[str(tmp_path / "s1/a/x.jpg"), 1, "a", ""],
                                   [str(tmp_path / "s1/b/x.jpg"), 2, "b", ""]]
    fetch_dataset("folder", root, source=tmp_path / "s1", progress=False)  # no-op
    with pytest.raises(HalsalError, match="already indexes"):
        fetch_dataset("folder", root, source=tmp_path / "s2", progress=False)
