"""Criteria that probe the model at an update (SNIP, GraSP, SynFlow, OBD); importing this registers them."""

from pruneaware.core.calibration import Calibration
from pruneaware.criteria.probing.grasp import GraSP
from pruneaware.criteria.probing.obd import OBD
from pruneaware.criteria.probing.snip import SNIP
from pruneaware.criteria.probing.synflow import SynFlow

__all__ = ["OBD", "SNIP", "Calibration", "GraSP", "SynFlow"]
