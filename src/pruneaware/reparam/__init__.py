"""Regularizers that reparametrize the weights through a dense shadow: L0 gates and SR-STE."""

from pruneaware.reparam.l0 import L0
from pruneaware.reparam.sr_ste import SRSTE

__all__ = ["L0", "SRSTE"]
