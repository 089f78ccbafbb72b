"""Latency models of the deployment device: per-layer latency tables, predicted model latency, latency targets."""

from pruneaware.hardware.backends import BACKENDS, backend
from pruneaware.hardware.build import build_table, latency_table
from pruneaware.hardware.keys import TableKey
from pruneaware.hardware.predict import predict_latency
from pruneaware.hardware.table import LatencyTable

__all__ = ["BACKENDS", "LatencyTable", "TableKey", "backend", "build_table", "latency_table", "predict_latency"]
