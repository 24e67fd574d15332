"""Device profiles for the cost model: peak rates of one accelerator.

All compute peaks are *dense* (no 2:4 structured sparsity) tensor-core rates
for the 16-bit and 8-bit types, and the plain (non tensor-core) FP32 rate for
``float32``: ONNX float32 semantics, i.e. without TF32. Link bandwidths are
*per direction* (NVIDIA quotes PCIe and NVLink as the bidirectional sum, so
they are halved here). Datasheet numbers are peaks: real kernels reach
60-90 % of them and real PCIe copies 80-90 %, so simulated times are
optimistic in absolute terms; ratios between two plans on the same profile
are what the simulator is meant for.

Sources:

* H100 SXM5 / H100 PCIe: NVIDIA H100 Tensor Core GPU datasheet (2023):
  FP32 67 / 51 TFLOPS, BF16 and FP16 989.4 / 756 TFLOPS dense (1979 / 1513
  with sparsity), INT8 1979 / 1513 TOPS dense, HBM 3.35 / 2.0 TB/s,
  NVLink 900 / 600 GB/s (bidirectional; 600 = NVLink bridge), PCIe Gen5
  128 GB/s (bidirectional).
* A100 40GB / 80GB SXM: NVIDIA A100 Tensor Core GPU datasheet (2021):
  FP32 19.5 TFLOPS, BF16/FP16 312 TFLOPS dense, INT8 624 TOPS dense,
  HBM 1,555 / 2,039 GB/s, NVLink 600 GB/s, PCIe Gen4 64 GB/s (both
  bidirectional).
* L4: NVIDIA L4 Tensor Core GPU datasheet (2023): FP32 30.3 TFLOPS,
  BF16/FP16 121 TFLOPS dense (242 sparse), INT8 242.5 TOPS dense (485
  sparse), GDDR6 300 GB/s, PCIe Gen4 x16 64 GB/s bidirectional; no NVLink,
  so peer copies go over PCIe.
* t4: NVIDIA T4 Tensor Core GPU datasheet (2019): FP32 8.1 TFLOPS, mixed
  FP16/FP32 65 TFLOPS, INT8 130 TOPS, 16 GB GDDR6 at 320 GB/s, PCIe Gen3
  x16 (32 GB/s bidirectional); no BF16 (the FP16 rate is used), no NVLink.
  The FlexGen / ZeRO-Inference T4 figures were measured on this card.
* a6000: NVIDIA RTX A6000 datasheet (2021): FP32 38.7 TFLOPS, tensor
  309.7 TFLOPS with sparsity, so 154.8 dense FP16/BF16, INT8 309.7 TOPS
  dense, 48 GB GDDR6 at 768 GB/s, PCIe Gen4 x16 (64 GB/s bidirectional),
  NVLink bridge 112.5 GB/s bidirectional.
* rtx4090 (the 24 GB consumer card): NVIDIA Ada GPU architecture whitepaper
  (v2.1, 2023), GeForce RTX 4090 column: FP32 82.6 TFLOPS, FP16/BF16 tensor
  with FP32 accumulate 165.2 TFLOPS dense (the rate frameworks use; 330.3
  with FP16 accumulate), INT8 660.6 TOPS dense, 24 GB GDDR6X at 1008 GB/s,
  PCIe Gen4 x16; no NVLink.
* cpu: a generic server CPU socket, order of magnitude only: 1 TFLOP/s
  FP32 (e.g. 32 cores x 2 AVX-512 FMA x 16 lanes x ~1 GHz sustained), no
  native 16-bit speed-up, 2x for INT8 (VNNI), 50 GB/s memory bandwidth, and
  "host link" = memcpy between two buffers at ~10 GB/s.

Launch overhead and copy setup latency are not datasheet numbers; they are
typical measured values (a CUDA kernel launch plus framework dispatch costs
a few microseconds; an async memcpy of pinned memory about 10 us before the
first byte moves) and can be overridden with :func:`dataclasses.replace`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

T = 1e12
G = 1e9
US = 1e-6

#: dtypes with their own peak; every other dtype uses the float32 peak.
PEAK_DTYPES = ("float32", "float16", "bfloat16", "int8")


@dataclass(frozen=True)
class DeviceProfile:
    """Peak rates of one device (SI units: FLOP/s, bytes/s, seconds)."""

    name: str
    peak_flops: Mapping[str, float]  # dtype name -> FLOP/s (dense)
    hbm_bw: float  # device memory bandwidth, bytes/s
    h2d_bw: float  # host -> device, bytes/s (one direction)
    d2h_bw: float  # device -> host, bytes/s (one direction)
    peer_bw: float  # device -> device, bytes/s (one direction)
    launch_s: float  # per compute node
    copy_latency_s: float  # per copy node
    source: str = field(default="", compare=False)

    def peak(self, dtype: str) -> float:
        """FLOP/s for an op whose first output has ``dtype`` (unknown dtypes: the float32 peak)."""
        p = self.peak_flops.get(dtype)
        return p if p else self.peak_flops["float32"]

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "peak_flops": dict(self.peak_flops),
            "hbm_bw": self.hbm_bw,
            "h2d_bw": self.h2d_bw,
            "d2h_bw": self.d2h_bw,
            "peer_bw": self.peer_bw,
            "launch_s": self.launch_s,
            "copy_latency_s": self.copy_latency_s,
        }


def _peaks(fp32: float, fp16: float, bf16: float, int8: float) -> Mapping[str, float]:
    return MappingProxyType({"float32": fp32, "float16": fp16, "bfloat16": bf16, "int8": int8})


GPU_LAUNCH_S = 4 * US
GPU_COPY_LATENCY_S = 10 * US

#: One row per GPU, in datasheet units: FP32, FP16/BF16 tensor (dense) and
#: INT8 (dense) in TFLOPS / TOPS; HBM, host link and peer link in GB/s, one
#: direction. The 16-bit tensor rate serves both float16 and bfloat16 (a card
#: without BF16, the T4, runs it at the FP16 rate), and the host link is the
#: same both ways (PCIe is symmetric).
_GPUS: tuple[tuple[str, float, float, float, float, float, float, str], ...] = (
    ("h100-sxm", 67, 989.4, 1979, 3350, 64, 450, "NVIDIA H100 datasheet, SXM5 80GB"),
    ("h100-pcie", 51, 756, 1513, 2000, 64, 300, "NVIDIA H100 datasheet, PCIe 80GB (NVLink bridge for peers)"),
    ("a100-40gb", 19.5, 312, 624, 1555, 32, 300, "NVIDIA A100 datasheet, SXM4 40GB"),
    ("a100-80gb", 19.5, 312, 624, 2039, 32, 300, "NVIDIA A100 datasheet, SXM4 80GB"),
    ("l4", 30.3, 121, 242.5, 300, 32, 32, "NVIDIA L4 datasheet (no NVLink: peers over PCIe Gen4)"),
    ("t4", 8.1, 65, 130, 320, 16, 16, "NVIDIA T4 datasheet, 16GB (PCIe Gen3; no BF16: FP16 rate)"),
    ("a6000", 38.7, 154.8, 309.7, 768, 32, 56.25, "NVIDIA RTX A6000 datasheet, 48GB (PCIe Gen4, NVLink bridge)"),
    ("rtx4090", 82.6, 165.2, 660.6, 1008, 32, 32, "NVIDIA Ada whitepaper, GeForce RTX 4090 24GB (PCIe Gen4; no NVLink)"),
)


def _gpu(name: str, fp32: float, tensor16: float, int8: float, hbm: float, host_link: float, peer: float,
         source: str) -> DeviceProfile:
    """A GPU profile from one row of :data:`_GPUS` (rates in TFLOPS and GB/s)."""
    return DeviceProfile(name, _peaks(fp32 * T, tensor16 * T, tensor16 * T, int8 * T), hbm * G, host_link * G,
                         host_link * G, peer * G, GPU_LAUNCH_S, GPU_COPY_LATENCY_S, source)


PROFILES: dict[str, DeviceProfile] = {
    p.name: p
    for p in (
        *(_gpu(*row) for row in _GPUS),
        DeviceProfile("cpu", _peaks(1 * T, 1 * T, 1 * T, 2 * T), 50 * G, 10 * G, 10 * G, 10 * G,
                      5 * US, 1 * US, "generic CPU socket (order of magnitude)"),
    )
}

ALIASES: dict[str, str] = {
    "h100": "h100-sxm",
    "h100-sxm5": "h100-sxm",
    "h100-80gb": "h100-sxm",
    "a100": "a100-80gb",
    "a100-sxm": "a100-80gb",
    "a100-40g": "a100-40gb",
    "a100-80g": "a100-80gb",
    "host": "cpu",
    "t4-16gb": "t4",
    "rtx-a6000": "a6000",
    "a6000-48gb": "a6000",
    "4090": "rtx4090",
    "rtx-4090": "rtx4090",
}

#: GPU memory of each profile's card (bytes), for simulations that size a budget from the device.
MEMORY_BYTES: dict[str, int] = {
    "h100-sxm": 80 * 2**30, "h100-pcie": 80 * 2**30, "a100-40gb": 40 * 2**30, "a100-80gb": 80 * 2**30,
    "l4": 24 * 2**30, "t4": 16 * 2**30, "a6000": 48 * 2**30, "rtx4090": 24 * 2**30,
}


class UnknownDeviceError(ValueError):
    """No profile of that name."""


def profile_names() -> list[str]:
    return sorted(PROFILES)


def get_profile(name: str | DeviceProfile) -> DeviceProfile:
    """Profile by name or alias (case-insensitive); a DeviceProfile is returned as is."""
    if isinstance(name, DeviceProfile):
        return name
    key = name.strip().lower().replace("_", "-")
    key = ALIASES.get(key, key)
    try:
        return PROFILES[key]
    except KeyError:
        aliases = ", ".join(f"{a}={t}" for a, t in sorted(ALIASES.items()))
        raise UnknownDeviceError(
            f"unknown device {name!r}; known profiles: {', '.join(profile_names())} (aliases: {aliases})"
        ) from None
