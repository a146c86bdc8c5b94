"""Resolve the compute device once per run (auto -> cuda when available, else cpu)."""

from __future__ import annotations

import logging

from engine.errors import InputError

logger = logging.getLogger(__name__)


def resolve_device(requested: str) -> str:
    """Return ``"cuda"`` or ``"cpu"`` for a requested ``auto``/``cpu``/``cuda``.

    Raises
    ------
    InputError
        When ``cuda`` is requested but no CUDA GPU is usable.
    """
    if requested not in ("auto", "cpu", "cuda"):
        raise InputError(f"Unknown device {requested!r}: use auto, cpu or cuda.")
    if requested == "cpu":
        return "cpu"
    try:
        import torch

        has_cuda = bool(torch.cuda.is_available())
    except ImportError:  # torch missing: the CPU path still works for SfM
        has_cuda = False
    if requested == "cuda" and not has_cuda:
        raise InputError(
            "No CUDA GPU is available on this machine: use --device auto or --device cpu."
        )
    device = "cuda" if has_cuda else "cpu"
    logger.info("Compute device: %s", device)
    return device
