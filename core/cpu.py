"""What this CPU offers, read from the kernel (no guessing from the model name): the same code runs on an AMD
EPYC with AVX2 one day and an Intel Xeon with AVX-512, VNNI and AMX-BF16 the next.

Faster number formats are used only where the CPU runs them natively *and* the result matches float32 (each
path checks that itself): bfloat16 matmuls through oneDNN only pay with AMX-BF16 or AVX512-BF16; elsewhere
TensorFlow emulates them, slower than float32.
"""
from __future__ import annotations

import functools
import os
import platform
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CpuFeatures:
    model: str
    flags: frozenset[str]

    @property
    def avx2(self) -> bool:
        return "avx2" in self.flags

    @property
    def avx512(self) -> bool:
        return "avx512f" in self.flags

    @property
    def vnni(self) -> bool:
        """int8 dot products (AVX512-VNNI or AVX-VNNI)."""
        return bool({"avx512_vnni", "avx_vnni"} & self.flags)

    @property
    def native_bf16(self) -> bool:
        """bfloat16 matmuls in hardware (AMX tiles or AVX512-BF16)."""
        return bool({"amx_bf16", "avx512_bf16"} & self.flags)

    def summary(self) -> str:
        offers = [name for name, has in (("AVX2", self.avx2), ("AVX-512", self.avx512), ("VNNI", self.vnni),
                                         ("bf16", self.native_bf16), ("AMX", "amx_tile" in self.flags)) if has]
        return f"{self.model} ({', '.join(offers) or 'no AVX2'})"


@functools.lru_cache(maxsize=1)
def cpu_features() -> CpuFeatures:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip().lower()
            if key == "model name":
                model = value.strip()
            elif key in ("flags", "features"):  # x86 / ARM
                flags.update(value.split())
                break  # the first core speaks for all
    except OSError:
        pass
    return CpuFeatures(model, frozenset(flags))


def use_bf16() -> bool:
    """Mixed bfloat16 for the fine-tune's training steps (`core.training.finetune_cached`): only with
    FEWSHOT_BF16=1 (which also forces it on a CPU without it, where it is emulated and slow).

    Not on by default even where the CPU has it natively (`CpuFeatures.native_bf16`): measured on an EPYC with
    AVX512-BF16 (BENCHMARKS.md, "bfloat16 fine-tuning"), it was 1.3x faster per epoch but not on the whole
    fine-tune of the demo (0.94x), and its training drifts from float32's enough (validation loss up to 0.015
    apart after 8 epochs) that early stopping kept another epoch on 3 of 6 splits: predicted probabilities up to
    0.033 from float32's model, where this project keeps a faster path only when it matches (accuracy did not
    change). FEWSHOT_BF16=0 or unset: float32."""
    return os.environ.get("FEWSHOT_BF16", "0") == "1"
