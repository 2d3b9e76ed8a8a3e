"""The run report: training curves, RM evaluation, per-stage metrics and answers, settings."""

from .build import build_report, format_summary

__all__ = ["build_report", "format_summary"]
