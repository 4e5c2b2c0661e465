"""The Snakemake report opens in a real browser: headless Chromium via Playwright.

Builds a tiny workflow (the project's common.smk + report.smk over stand-in rules that copy a
fake results tree), runs it and `snakemake --report`, then opens the page in
/usr/bin/chromium: the categories are listed, Table 1 (with the dead-map warning: the fixture
kills one Approach B map), the Saliency health table and a qualitative grid open, the
console shows no errors, nothing is fetched from the network (the page is self-contained),
and a screenshot is saved as report.png under the test's tmp_path (or the folder named by
HALSAL_TEST_ARTIFACTS, see conftest.py's ``artifacts_dir``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
CATEGORIES = ["Tables", "Accuracy vs k", "Ablations", "Qualitative", "Run details"]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def _chromium() -> str:
    path = os.environ.get("HALSAL_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        pytest.skip("Chromium not found (run .ci/browser.sh, which installs the Debian package `chromium`)")
    return path


@pytest.fixture(scope="module")
def report_html(tmp_path_factory, fake_results) -> Path:
    # HALSAL_REPORT_REPO: test the rules of another checkout (default: this one).
    repo = Path(os.environ.get("HALSAL_REPORT_REPO", Path(__file__).resolve().parents[1]))
    root = fake_results.build_workflow(tmp_path_factory.mktemp("wf"), sys.executable, repo=repo)
    env = dict(os.environ, PATH=f"{root / 'bin'}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               MPLCONFIGDIR=str(root / ".cache" / "mpl"), XDG_CACHE_HOME=str(root / ".cache"),
               # common.smk imports halsal.plan and halsal.settings at parse time
               PYTHONPATH=os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]),
                                                        os.environ.get("PYTHONPATH")])))
    for args in (["--cores", "2"], ["--cores", "1", "--report", "report.html"]):
        res = subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=root, env=env,
                             capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return root / "report.html"


def test_report_renders_in_chromium(report_html, tmp_path, artifacts_dir):
    chromium = _chromium()
    sync_api = pytest.importorskip("playwright.sync_api", reason="Python package playwright not installed "
                                   "(pip install -c requirements/constraints.txt playwright)")
    console, page_errors, requests = [], [], []
    with sync_api.sync_playwright() as p:
        # A fresh profile (--user-data-dir) per test: Playwright's persistent context sets it.
        browser = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=chromium, headless=True,
            args=[a for a in CHROMIUM_ARGS if a != "--headless"], viewport={"width": 1500, "height": 1000})
        page = browser.new_page()
        page.on("console", lambda m: console.append((m.type, m.text)))
        page.on("pageerror", lambda e: page_errors.append(str(e)))
        page.on("request", lambda r: requests.append(r.url))
        page.goto(report_html.as_uri())
        page.wait_for_load_state("load")

        # The sidebar lists every category of the report.
        for cat in CATEGORIES:
            assert page.get_by_text(cat, exact=True).count() >= 1, f"category {cat!r} not listed"

        # Open Table 1: an HTML result, shown in an iframe.
        page.get_by_text("Tables", exact=True).first.click()
        page.get_by_text("Accuracy (paper Tables 1-2)").first.click()
        page.locator("tr", has_text="Table 1: AlexNet").locator("a[iconname=eye]").click()
        frame = page.frame_locator("iframe").first
        table = frame.locator("table").first
        table.wait_for(timeout=15000)
        text = frame.locator("body").inner_text()
        assert "Baseline-RGB" in text and "Approach B" in text
        assert "SYNTHETIC data" in text and "not run" in text  # SMIC is not configured
        assert "31.0 \u00b1 1.0" in text  # baseline, k=1, seeds 0-2 of the fixture
        # The fixture's killed map (Approach B, k=K, seed 1): a visible warning above the table.
        warning = frame.locator(".dead-warning")
        assert warning.is_visible()
        wtext = warning.inner_text()
        assert "Approach B on synth_fine" in wtext and "k=K, 1 of 3" in wtext and "Baseline-RGB at test time" in wtext
        assert warning.bounding_box()["y"] < table.bounding_box()["y"]
        page.screenshot(path=str(tmp_path / "table.png"))

        # Open the Saliency health table: the dead run counted, the alive ones not.
        page.goto(report_html.as_uri())
        page.get_by_text("Tables", exact=True).first.click()
        page.get_by_text("Saliency health", exact=True).first.click()
        page.locator("tr", has_text="Saliency health: dead maps").locator("a[iconname=eye]").click()
        frame = page.frame_locator("iframe").first
        frame.locator("table").first.wait_for(timeout=15000)
        assert frame.locator(".dead-warning").is_visible()
        dead_row = frame.locator("tr.dead")
        assert dead_row.count() == 1 and "Approach B" in dead_row.inner_text() and "1 of 3" in dead_row.inner_text()
        assert "0 of 3" in frame.locator("table").first.inner_text()
        page.screenshot(path=str(tmp_path / "health.png"))

        # Open one image: the Table 3 style grid of the synthetic dataset.
        page.goto(report_html.as_uri())
        page.get_by_text("Qualitative", exact=True).first.click()
        page.get_by_text("synth_fine", exact=True).first.click()
        page.locator("tr", has_text="success").locator("a[iconname=eye]").first.click()
        page.wait_for_function("() => [...document.images].some(i => i.complete && i.naturalWidth > 200)",
                               timeout=15000)
        widths = page.evaluate("() => [...document.images].map(i => i.naturalWidth)")
        assert max(widths) > 200, widths
        shot = artifacts_dir / "report.png"
        page.screenshot(path=str(shot), full_page=False)
        browser.close()
    print(f"report screenshot: {shot}")
    assert shot.stat().st_size > 10_000
    errors = [t for kind, t in console if kind == "error"]
    assert not errors and not page_errors, (errors, page_errors)
    external = [u for u in requests if not u.startswith(("file:", "data:", "blob:", "about:"))]
    assert not external, f"the report fetched from the network: {external[:5]}"
