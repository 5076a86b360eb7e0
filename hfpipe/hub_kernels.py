"""No code from the Hub unless the user asks: bitsandbytes' CPU kernels stay local.

transformers (5.25+) depends on ``kernels``; with it installed, bitsandbytes 0.50 on a CPU with
AVX512-BF16 calls ``kernels.get_kernel("kernels-community/quantization-bitsandbytes")`` while it is
imported, which downloads and runs compiled code from the Hub (offline: two WARNING lines). peft
imports bitsandbytes whenever it is installed and Trainer imports peft, so every hfpipe verb would
trigger it, even one that quantizes nothing. hfpipe lets that import go ahead without the Hub: the
fetch is refused and bitsandbytes runs its own bundled CPU code (the same numerics as without
``kernels``; the Hub build only fuses the 4-bit GEMM). ``HFPIPE_HUB_KERNELS=1`` lets bitsandbytes
fetch its Hub kernel again (the README's QLoRA section says so).

Why an import hook: the fetch happens inside ``import bitsandbytes``, which a third library
(peft, through transformers) performs; no setting of bitsandbytes or kernels turns it off.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import logging
import os
import sys

BITSANDBYTES_KERNEL_REPO = "kernels-community/quantization-bitsandbytes"
OPT_IN = "HFPIPE_HUB_KERNELS"
# bitsandbytes' own note that it fell back to its bundled kernel: expected here, not the user's doing.
_FALLBACK_NOTE = "Failed to load CPU gemm_4bit_forward"


class HubKernelRefused(RuntimeError):
    """What ``kernels.get_kernel`` raises for bitsandbytes' repository while hfpipe guards it."""


def hub_kernels_allowed() -> bool:
    return os.environ.get(OPT_IN, "").strip().lower() in {"1", "true", "yes", "on"}


class _DropFallbackNote(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_FALLBACK_NOTE)


@contextlib.contextmanager
def _without_hub_kernels():
    """While it runs, ``kernels.get_kernel`` refuses bitsandbytes' repo and its fallback note is dropped."""
    try:
        import kernels
    except ImportError:  # no `kernels`: bitsandbytes falls back by itself (still with its note)
        kernels = None
    original = getattr(kernels, "get_kernel", None)

    def get_kernel(repo_id, *args, **kwargs):
        if repo_id == BITSANDBYTES_KERNEL_REPO:
            raise HubKernelRefused(f"{repo_id}: Hub kernels are off in hfpipe unless {OPT_IN}=1")
        return original(repo_id, *args, **kwargs)

    note_filter, logger = _DropFallbackNote(), logging.getLogger("bitsandbytes.backends.cpu.ops")
    logger.addFilter(note_filter)
    if original is not None:
        kernels.get_kernel = get_kernel
    try:
        yield
    finally:
        if original is not None:
            kernels.get_kernel = original
        logger.removeFilter(note_filter)


class _GuardedBitsandbytesImport(importlib.abc.MetaPathFinder):
    """Finds bitsandbytes as usual and runs its first import under :func:`_without_hub_kernels`."""

    def find_spec(self, name, path=None, target=None):
        if name != "bitsandbytes":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module

        def guarded_exec_module(module):
            with _without_hub_kernels():
                exec_module(module)

        spec.loader.exec_module = guarded_exec_module  # this spec's own loader instance
        return spec


def keep_bitsandbytes_off_the_hub() -> None:
    """Installs the guard (once) unless the user opted in; a no-op when bitsandbytes is already loaded."""
    if hub_kernels_allowed() or "bitsandbytes" in sys.modules:
        return
    if not any(isinstance(finder, _GuardedBitsandbytesImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _GuardedBitsandbytesImport())
