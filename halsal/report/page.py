"""One HTML page of the report: the shared style, the title and the SYNTHETIC banner."""

from __future__ import annotations

import html

from halsal.report.aggregate import SYNTHETIC_NOTE

CSS = """
body{font-family:DejaVu Sans,Arial,sans-serif;font-size:13px;margin:12px;color:#222}
h2{font-size:16px;margin:4px 0 8px}
.synthetic{background:#fff3cd;border:1px solid #e0b000;padding:6px 10px;font-weight:bold;margin:6px 0}
.notrun{background:#eef;border:1px solid #99c;padding:6px 10px;margin:6px 0}
table{border-collapse:collapse;margin:6px 0}
th,td{border:1px solid #bbb;padding:3px 6px;text-align:center;vertical-align:top}
th{background:#f0f0f0} td.name{text-align:left;max-width:18em}
.ours{font-weight:bold} .paper{color:#666;font-size:11px}
.missing{color:#b00;font-style:italic} .not-run{color:#888;font-style:italic}
.pos{color:#070} .neg{color:#b00} .noise{color:#888}
p.note{color:#555;font-size:12px;max-width:70em}
.dead-warning{background:#f8d7da;border:2px solid #b00;color:#600;padding:6px 10px;margin:6px 0;max-width:80em}
.dead-warning ul{margin:4px 0 0 0;padding-left:20px}
tr.dead td{background:#fbe3e4}
"""


def html_document(title: str, body: str, css: str = CSS) -> str:
    """A self-contained page (no external resources: the Snakemake report embeds it)."""
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{css}</style></head><body>{body}</body></html>\n")


def html_page(title: str, body: str, synthetic: bool) -> str:
    """A table page: its title as a heading, the SYNTHETIC banner where the numbers are synthetic."""
    banner = f'<div class="synthetic">{html.escape(SYNTHETIC_NOTE)}</div>' if synthetic else ""
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body><h2>{html.escape(title)}</h2>{banner}{body}</body></html>\n")
