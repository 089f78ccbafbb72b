"""The quantization toolkit, loaded only when quantization is asked for: torchao's PT2E flow.

torchao is imported lazily so that pruneaware works without it; a missing install fails with one
line naming the package to install.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from types import SimpleNamespace
from collections.abc import Iterator

from pruneaware.core.errors import UsageError

TORCHAO_PIN = "torchao==0.18.0"
"""The torchao version the QAT flow was built and measured with."""


def pt2e() -> SimpleNamespace:
    """torchao's PT2E quantization entry points (prepare, convert, the x86 quantizer, train/eval switches)."""
    try:
        with _quiet_import():
            from torchao.quantization.pt2e import allow_exported_model_train_eval, move_exported_model_to_eval, move_exported_model_to_train
            from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_qat_pt2e
            from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
                X86InductorQuantizer,
                get_default_x86_inductor_quantization_config,
            )
    except ImportError as error:
        raise UsageError(f"quantization-aware training needs torchao ({error}); install it with: pip install {TORCHAO_PIN}") from None
    return SimpleNamespace(
        allow_train_eval=allow_exported_model_train_eval,
        to_eval=move_exported_model_to_eval,
        to_train=move_exported_model_to_train,
        prepare_qat=prepare_qat_pt2e,
        convert=convert_pt2e,
        X86Quantizer=X86InductorQuantizer,
        x86_config=get_default_x86_inductor_quantization_config,
    )


@contextmanager
def _quiet_import() -> Iterator[None]:
    """torchao 0.18 registers an Enum with torch's pytree on import, which torch 2.14 logs a warning about."""
    logger = logging.getLogger("torch.utils._pytree")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
