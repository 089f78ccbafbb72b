"""Comparisons: many recipes on one model, dataset, seed list and epoch budget, summarized in one table and one plot."""

from pruneaware.compare.records import RunRecord, read_records
from pruneaware.compare.runner import plan_runs, run_comparison
from pruneaware.compare.spec import ComparisonSpec, MethodSpec, comparison_path
from pruneaware.compare.table import aggregate, markdown_table

__all__ = ["ComparisonSpec", "MethodSpec", "RunRecord", "aggregate", "comparison_path", "markdown_table", "plan_runs", "read_records", "run_comparison"]
