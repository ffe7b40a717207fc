"""Device facts and settings shared by generation and training."""

from __future__ import annotations

import contextlib
import os


def fast_bf16(device) -> bool:
    """True where bf16 matmuls are fast: CUDA with bf16, or a CPU with AMX tiles / AVX512-BF16
    (elsewhere CPU bf16 is emulated and slower than float32)."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:
        return False


def bf16_autocast(setting: str, device) -> bool:
    """Whether to run under bf16 autocast on `device` for an `autocast` setting (RL trainer and fine-tunes alike):
    none / bf16 / auto = where bf16 is fast. bf16 where it is emulated is refused: slower than float32."""
    from cocos.errors import UserError

    fast = fast_bf16(device)
    if setting == "bf16" and not fast:
        raise UserError("autocast: bf16 is not fast on this hardware (emulated, slower than float32): use auto or none")
    return setting == "bf16" or (setting == "auto" and fast)


def sdpa_without_cudnn(device):
    """Attention without torch's cuDNN SDPA backend (its pick for bf16 on Hopper GPUs), which builds a graph per
    new shape: measured on an H200, HF generate in bf16 ran 2.9x slower on each new batch of prompts (465 vs
    1,287 tok/s); flash / memory-efficient attention need no warm-up. A no-op off CUDA."""
    import torch

    if torch.device(device).type != "cuda":
        return contextlib.nullcontext()
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # torch < 2.3: no cuDNN attention either
        return contextlib.nullcontext()

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


def name_deepspeed_accelerator(device) -> None:
    """On a CPU run, tell DeepSpeed (when installed) that the accelerator is the CPU: transformers asks it on every
    save, and its detection otherwise logs "WARNING ... Setting accelerator to CPU. If you have GPU or other
    accelerator, we were unable to detect it." in every CPU run's console. A DS_ACCELERATOR the user set stays."""
    import torch

    if torch.device(device).type == "cpu":
        os.environ.setdefault("DS_ACCELERATOR", "cpu")


def release_free_memory() -> None:
    """Hand freed heap memory back to the OS (glibc). Without it the log-prob passes' large, varying-shape
    tensors leave a process holding 9-13 GB between steps where ~3 GB are live (measured with the default
    model), and two runs side by side on a 24 GB machine were OOM-killed."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
