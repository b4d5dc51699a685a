"""Which floating-point precision a model trains and runs in (``precision`` in params.yaml).

- ``float32``: everything in float32.
- ``mixed_bfloat16``: convolutions compute in bfloat16, weights and outputs stay float32.
- ``auto`` (the default): ``mixed_bfloat16`` where the hardware computes bfloat16 natively,
  ``float32`` elsewhere:

  - on a GPU (TensorFlow's default strategy trains on the first one), compute capability 8.0
    or newer (Ampere on), whose tensor cores run bfloat16;
  - on a CPU, the flag ``avx512_bf16`` or ``amx_bf16`` in ``/proc/cpuinfo`` and an
    ``ONEDNN_MAX_CPU_ISA`` setting, if any, that still lets oneDNN use them
    (``AVX512_CORE_BF16`` or above, or ``ALL``).

Without native support oneDNN emulates bfloat16 convolutions on AVX-512 CPUs (about 2.3 times
slower than float32) and cannot run them at all below AVX-512 (AVX2 CPUs fail with "could not
create a primitive descriptor"). An explicit ``mixed_bfloat16`` therefore runs, with a warning,
where oneDNN can emulate it, and falls back to ``float32``, with a warning, where it cannot.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

AUTO, FLOAT32, MIXED_BFLOAT16 = "auto", "float32", "mixed_bfloat16"
# oneDNN's ONEDNN_MAX_CPU_ISA values, from the smallest instruction set to the largest; each
# includes the ones before it. AVX512_CORE_FP16 and the AMX sets are aliases of AVX10 ones.
ONEDNN_ISAS = (
    "SSE41",
    "AVX",
    "AVX2",
    "AVX2_VNNI",
    "AVX2_VNNI_2",
    "AVX512_CORE",
    "AVX512_CORE_VNNI",
    "AVX512_CORE_BF16",
    "AVX512_CORE_FP16",
    "AVX10_1_512",
    "AVX512_CORE_AMX",
    "AVX10_1_512_AMX",
    "AVX512_CORE_AMX_FP16",
    "AVX10_1_512_AMX_FP16",
    "AVX10_2_512",
    "AVX10_2_512_AMX_2",
)
NO_ISA_LIMIT = ("", "ALL", "DEFAULT")
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# oneDNN's bfloat16 emulation needs AVX-512 with the BW, VL and DQ extensions (its avx512_core).
AVX512_CORE_FLAGS = ("avx512f", "avx512bw", "avx512vl", "avx512dq")
GPU_BF16_CAPABILITY = (8, 0)


@dataclasses.dataclass(frozen=True)
class Hardware:
    """What decides the precision: the GPU training would use, else the CPU as oneDNN sees it."""

    gpu_capability: tuple[int, int] | None = None
    cpu_flags: frozenset[str] = frozenset()
    max_cpu_isa: str | None = None


@dataclasses.dataclass(frozen=True)
class Resolution:
    precision: str
    reason: str
    warning: str | None = None


def isa_allows(max_cpu_isa: str | None, needed: str) -> bool:
    """Whether an ``ONEDNN_MAX_CPU_ISA`` value lets oneDNN use instruction set ``needed``.

    A value oneDNN does not list counts as a limit below ``needed``: float32 is the safe guess.
    """
    value = (max_cpu_isa or "").strip().upper()
    if value in NO_ISA_LIMIT:
        return True
    if value not in ONEDNN_ISAS:
        return False
    return ONEDNN_ISAS.index(value) >= ONEDNN_ISAS.index(needed)


def cpu_bf16_native(hardware: Hardware) -> bool:
    """Whether oneDNN computes bfloat16 convolutions natively on this CPU."""
    has_flag = any(flag in hardware.cpu_flags for flag in NATIVE_BF16_FLAGS)
    return has_flag and isa_allows(hardware.max_cpu_isa, "AVX512_CORE_BF16")


def cpu_bf16_emulated(hardware: Hardware) -> bool:
    """Whether oneDNN can run bfloat16 convolutions at all on this CPU, natively or emulated."""
    has_flags = all(flag in hardware.cpu_flags for flag in AVX512_CORE_FLAGS)
    return has_flags and isa_allows(hardware.max_cpu_isa, "AVX512_CORE")


def choose(requested: str, hardware: Hardware) -> Resolution:
    """The precision ``requested`` (auto, float32 or mixed_bfloat16) resolves to on
    ``hardware``, why, and a one-line warning where it is not what a user would want."""
    if requested == FLOAT32:
        return Resolution(FLOAT32, "asked for")
    if hardware.gpu_capability is not None:
        major, minor = hardware.gpu_capability
        capable = hardware.gpu_capability >= GPU_BF16_CAPABILITY
        where = f"GPU of compute capability {major}.{minor}"
        if requested == AUTO:
            precision = MIXED_BFLOAT16 if capable else FLOAT32
            return Resolution(precision, f"auto on a {where}")
        if capable:
            return Resolution(MIXED_BFLOAT16, f"asked for, native on a {where}")
        return Resolution(
            MIXED_BFLOAT16,
            f"asked for on a {where}",
            f"precision mixed_bfloat16 on a {where} (below 8.0) is not native and likely "
            "slower than float32; precision: auto would choose float32",
        )
    isa = f"ONEDNN_MAX_CPU_ISA={hardware.max_cpu_isa}" if hardware.max_cpu_isa else "no ISA limit"
    if cpu_bf16_native(hardware):
        how = "auto" if requested == AUTO else "asked for"
        return Resolution(MIXED_BFLOAT16, f"{how}, CPU with native bfloat16 ({isa})")
    where = f"CPU without native bfloat16 ({isa})"
    if requested == AUTO:
        return Resolution(FLOAT32, f"auto on a {where}")
    if cpu_bf16_emulated(hardware):
        return Resolution(
            MIXED_BFLOAT16,
            f"asked for on a {where}",
            f"precision mixed_bfloat16 on a {where}: oneDNN emulates it, about 2x slower than "
            "float32; precision: auto would choose float32",
        )
    return Resolution(
        FLOAT32,
        f"mixed_bfloat16 asked for, impossible on a {where}",
        f"precision mixed_bfloat16 cannot run on a {where}, which lacks AVX-512 bfloat16 "
        "convolutions; training in float32 instead (set precision: auto to silence this)",
    )


def cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The flags of the first processor listed in ``/proc/cpuinfo`` text (x86 ``flags``)."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


@functools.cache
def detect() -> Hardware:
    """This process's hardware; cached, since neither the devices nor the environment variable
    (read by oneDNN once, when TensorFlow loads) can change while it runs."""
    import tensorflow as tf

    capability = None
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        capability = tuple(details.get("compute_capability") or (0, 0))
    cpuinfo = Path("/proc/cpuinfo")
    flags = cpu_flags(cpuinfo.read_text()) if cpuinfo.is_file() else frozenset()
    return Hardware(capability, flags, os.environ.get("ONEDNN_MAX_CPU_ISA"))


_warned: set[str] = set()


def resolve(requested: str) -> Resolution:
    """``choose`` on this process's hardware; logs its warning once per process."""
    resolution = choose(requested, detect())
    if resolution.warning and resolution.warning not in _warned:
        _warned.add(resolution.warning)
        log.warning(resolution.warning)
    return resolution


def for_inference(trained: str) -> str:
    """The precision to run a model trained in ``trained``: the same where the hardware runs it
    natively, else float32 (the weights are float32 variables in either case)."""
    if trained == FLOAT32:
        return FLOAT32
    return choose(AUTO, detect()).precision
