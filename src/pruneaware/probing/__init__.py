"""Criteria that probe the model at an update (SNIP, GraSP, SynFlow, OBD); importing this registers them."""

from pruneaware.probing.calibration import Calibration
from pruneaware.probing.grasp import GraSP
from pruneaware.probing.obd import OBD
from pruneaware.probing.snip import SNIP
from pruneaware.probing.synflow import SynFlow

__all__ = ["OBD", "SNIP", "Calibration", "GraSP", "SynFlow"]
