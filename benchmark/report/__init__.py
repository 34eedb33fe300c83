"""Reports built from result records only (metrics are never recomputed here)."""

from benchmark.report.markdown import write_report
from benchmark.report.sources import ReportInputs, from_directory
from benchmark.report.tables import metric_frame, summary_table

__all__ = [
    "ReportInputs",
    "from_directory",
    "metric_frame",
    "summary_table",
    "write_report",
]
