"""The report commands (placeholder while halsal/report/cli.py moves here)."""

from __future__ import annotations


def register(sub) -> None:
    from halsal.report import cli as report_cli

    report_cli.register(sub)
