"""Regularizers: on elements a penalty or proximal update (L1) or a reparametrization through a dense shadow (L0 gates, SR-STE, learned movement scores); on channel groups the penalties of ``regularizers.channel``."""

from pruneaware.regularizers.base import L1, Regularizer
from pruneaware.regularizers.l0 import L0
from pruneaware.regularizers.movement import SoftMovement, TopKMovement
from pruneaware.regularizers.sr_ste import SRSTE

__all__ = ["L0", "L1", "SRSTE", "Regularizer", "SoftMovement", "TopKMovement"]
