"""Reports derived from results.json (never written alongside it): junit.xml and report.html
(page), the per-cell pages (cells), the compatibility matrix for publishing (export), and what
they share (layout, figures, charts, overview, cell_history)."""

from __future__ import annotations

from .page import html_report, junit_xml, write_reports

__all__ = ["html_report", "junit_xml", "write_reports"]
