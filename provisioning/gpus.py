"""What the bot knows about GKE accelerator types: which machine family each fits.

Used by the command grammar (default machine type for a GPU request, rejecting a machine
type that cannot carry the GPU) and by the node-pool step.  GKE refuses a GPU node pool
whose machine family does not fit the accelerator (N1 for T4, G2 for L4, A2 for A100,
A3 for H100); checking here turns that late API error into an immediate usage message.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GpuFamily:
    machine_prefixes: tuple[str, ...]
    default_machine_type: str


# Accelerator name -> the machine families that can carry it.  Counts per node that a
# given machine type accepts are GKE's to check; this table only keeps families apart.
GPU_FAMILIES: dict[str, GpuFamily] = {
    "nvidia-tesla-t4": GpuFamily(("n1-",), "n1-standard-8"),
    "nvidia-tesla-v100": GpuFamily(("n1-",), "n1-standard-8"),
    "nvidia-tesla-p4": GpuFamily(("n1-",), "n1-standard-8"),
    "nvidia-tesla-p100": GpuFamily(("n1-",), "n1-standard-8"),
    "nvidia-l4": GpuFamily(("g2-",), "g2-standard-8"),
    "nvidia-tesla-a100": GpuFamily(("a2-highgpu-", "a2-megagpu-"), "a2-highgpu-1g"),
    "nvidia-a100-80gb": GpuFamily(("a2-ultragpu-",), "a2-ultragpu-1g"),
    "nvidia-h100-80gb": GpuFamily(("a3-highgpu-",), "a3-highgpu-8g"),
    "nvidia-h100-mega-80gb": GpuFamily(("a3-megagpu-",), "a3-megagpu-8g"),
}


def default_machine_type(gpu_type: str) -> str | None:
    family = GPU_FAMILIES.get(gpu_type)
    return family.default_machine_type if family else None


def machine_fits_gpu(machine_type: str, gpu_type: str) -> bool:
    """True when GKE would accept ``gpu_type`` on ``machine_type`` (unknown GPUs pass)."""
    family = GPU_FAMILIES.get(gpu_type)
    if family is None:
        return True
    return machine_type.startswith(family.machine_prefixes)
