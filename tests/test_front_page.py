"""The report's front page (reports/workflow.rst) describes the run it heads (GitHub issue 27):
Snakemake renders it as a Jinja2 template with ``snakemake.config``, where the Snakefile puts
:func:`halsal.front_page.facts`."""

import jinja2

from halsal import front_page
from tests.conftest import REPO
from tests.test_plan import load


def render(config_name: str, **overrides) -> str:
    plan = load(config_name, **overrides)

    class Snakemake:  # what Snakemake's report passes the template
        config = {**plan.config, front_page.KEY: front_page.facts(plan)}

    template = jinja2.Environment(undefined=jinja2.StrictUndefined).from_string((REPO / "reports/workflow.rst").read_text())
    return " ".join(template.render(snakemake=Snakemake).split())


def test_the_photos_report_names_its_network_seeds_and_real_data():
    text = render("photos.yaml")
    assert "EfficientNet-Lite0 (the map modulates its features at stage2; not in the paper)" in text
    assert "10 seeds at k = 1 (0, 1, 2, 3, 4, 5, 6, 7, 8, 9), 5 seeds at k = 5 (0, 1, 2, 3, 4)" in text and "k = 1, 5 training images per class" in text
    assert "cub200 (folder, at most 40 images per class; 5 val and 25 test images per class)" in text
    assert "AlexNet" not in text and "SYNTHETIC" not in text and "never compared with the paper" in text
    assert "Methods: Baseline-RGB, Approach A, Approach B." in text


def test_the_demo_report_names_alexnet_and_says_its_data_are_synthetic():
    text = render("config.yaml")
    assert "AlexNet (the map modulates its features before pool2, the paper's choice)" in text
    assert "SYNTHETIC" in text and "EfficientNet" not in text and "never compared" not in text


def test_seeds_by_k_and_another_fusion_point_reach_the_front_page():
    text = render("config.yaml", seeds_by_k={"1": [0, 1, 2, 3]}, model__fusion="conv3")
    assert "AlexNet (the map modulates its features at conv3)" in text
    assert "4 seeds at k = 1 (0, 1, 2, 3)" in text
