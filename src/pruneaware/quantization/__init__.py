"""Quantization-aware training of pruned models and conversion to int8, with the sparsity kept exactly.

Built on torchao's PT2E flow (``prepare_qat_pt2e`` with the x86 quantizer, ``convert_pt2e``), lowered
to oneDNN int8 kernels for CPU inference. The fake-quantized module shares the model's parameters,
so a ``Pruner``'s masks, enforced after every optimizer step, hold through QAT and into the int8 weights.
In a recipe, the ``quantization: {qat: ...}`` section adds the ``qat`` stage
(``pruneaware.quantization.stage.QuantizationAwareTraining``), which runs that flow over the last epochs.
"""

from pruneaware.quantization.convert import Int8Model, convert_int8
from pruneaware.quantization.prepare import prepare_qat
from pruneaware.quantization.spec import QATSpec, QuantizationSpec
from pruneaware.quantization.weights import QuantizedWeight, int8_weights
from pruneaware.quantization.zeros import check_zeros_kept, int8_as_float

__all__ = [
    "Int8Model",
    "QATSpec",
    "QuantizationSpec",
    "QuantizedWeight",
    "check_zeros_kept",
    "convert_int8",
    "int8_as_float",
    "int8_weights",
    "prepare_qat",
]
