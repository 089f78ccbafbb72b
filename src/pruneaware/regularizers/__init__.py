"""Element regularizers: a penalty or proximal update (L1), or a reparametrization of the weights through a dense shadow (L0 gates, SR-STE, learned movement scores)."""

from pruneaware.regularizers.base import L1, Regularizer
from pruneaware.regularizers.l0 import L0
from pruneaware.regularizers.movement import SoftMovement, TopKMovement
from pruneaware.regularizers.sr_ste import SRSTE

__all__ = ["L0", "L1", "SRSTE", "Regularizer", "SoftMovement", "TopKMovement"]
