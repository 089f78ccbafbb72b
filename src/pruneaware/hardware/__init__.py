"""Latency models of the deployment device: per-layer latency tables, predicted model latency, latency targets."""

from pruneaware.hardware.backends import BACKENDS, backend, compare_ms, median_ms
from pruneaware.hardware.build import build_table, latency_table
from pruneaware.hardware.keys import TableKey
from pruneaware.hardware.predict import predict_latency
from pruneaware.hardware.table import LatencyTable

__all__ = ["BACKENDS", "LatencyTable", "TableKey", "backend", "build_table", "compare_ms", "latency_table", "median_ms", "predict_latency"]
