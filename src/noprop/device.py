"""Device choice, peak-memory measurement, and denormal flushing on CPU and CUDA."""

from __future__ import annotations

import contextlib
import ctypes
import re
import resource
import sys
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path

import torch

from noprop.settings import ConfigError

DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")


def check_device(name: str) -> str:
    """``name`` if it is ``auto``, ``cpu``, ``cuda`` or ``cuda:N``; else a one-line error."""
    if not DEVICE_PATTERN.fullmatch(name):
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N (a GPU index); got {name!r}")
    return name


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available; asking for a CUDA GPU that is not there is an error."""
    check_device(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(name.split(":")[1]) if ":" in name else 0
        if count == 0:
            raise ConfigError(f"device {name!r} requested but no CUDA GPU is available; use --device cpu")
        if index >= count:
            raise ConfigError(f"device {name!r} requested but this machine has {count} GPU(s), "
                              f"cuda:0 to cuda:{count - 1}")
    return torch.device(name)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float:
    """CUDA: peak allocated tensor memory. CPU: the process's peak resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


_GLIBC_M_TRIM_THRESHOLD = -1
_GLIBC_M_MMAP_MAX = -4
_allocator_tuned = False


def retain_freed_memory() -> bool:
    """Ask glibc to keep freed memory for reuse instead of returning it to the OS (once per process).

    By default glibc serves large allocations (from 128 KB up to a threshold that grows to 32 MB)
    with a fresh ``mmap`` and unmaps them on free, and trims the top of its heap, so a training step
    can pay a page fault per 4 KB page of its activations, every step (the paper's block on
    CIFAR-10, batch 128, two blocks taking turns in float32: ~10,000 faults per block step; one
    block in bf16: ~100). With mmap off and trimming off, freed blocks are reused: the resident
    size stays at its peak. The trainer sets it on a CPU. Returns whether the
    setting took effect (False off glibc).
    """
    global _allocator_tuned
    if _allocator_tuned:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    _allocator_tuned = bool(mallopt(_GLIBC_M_MMAP_MAX, 0)) and bool(mallopt(_GLIBC_M_TRIM_THRESHOLD, 2**30))
    return _allocator_tuned


_flush_depth = 0
_flush_on = False


@contextlib.contextmanager
def flushed_denormals(enabled: bool = True) -> Iterator[bool]:
    """Flush denormal floats to zero on the CPU for the block; yields whether flushing is on.

    Values below ``torch.finfo(float32).tiny`` (~1.2e-38) take the CPU's slow path: a long run whose
    weights or Adam moments decay into that range slows down several times (docs/benchmarks.md,
    "Denormals"). ``torch.set_flush_denormal`` sets the x86 FTZ/DAZ (or Arm FZ) bits, so such
    values become 0; it returns ``False`` on CPUs without them. Nested blocks share one setting;
    the outermost restores the default (off). CUDA kernels are not affected.
    """
    global _flush_depth, _flush_on
    if not enabled:
        yield _flush_on
        return
    if _flush_depth == 0:
        _flush_on = _set_flush_denormal(True)
    _flush_depth += 1
    try:
        yield _flush_on
    finally:
        _flush_depth -= 1
        if _flush_depth == 0 and _flush_on:
            _set_flush_denormal(False)
            _flush_on = False


def _set_flush_denormal(on: bool) -> bool:
    """``torch.set_flush_denormal(on)`` in this thread and in every thread of torch's OpenMP team.

    The flags are per thread, and ``torch.set_flush_denormal`` sets the caller's only: OpenMP
    threads started before it keep theirs, so a two-thread op left half its results denormal and a
    CIFAR-10 run's epoch went from ~55 s to over 10 minutes. New threads inherit the creator's flags,
    so only the team that already exists needs the call: one OpenMP parallel region runs it in each."""
    supported = bool(torch.set_flush_denormal(on))
    run_in_openmp_threads(lambda: torch.set_flush_denormal(on))
    return supported


@cache
def _openmp_parallel() -> Callable[..., None] | None:
    """``GOMP_parallel(fn, data, num_threads, flags)`` of the OpenMP runtime torch has loaded
    (libgomp, or Intel's/LLVM's, which export it too); ``None`` where there is none to be found.

    Other packages bring their own copies (scikit-learn's libgomp): their threads are not torch's,
    so the one in torch's own folders comes first."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    torch_dir = str(Path(torch.__file__).resolve().parent)  # torch/lib, or torch.libs beside it
    libraries = sorted({line.split()[-1] for line in maps.splitlines()
                        if re.search(r"/lib(gomp|iomp5|omp)[^/]*\.so", line)},
                       key=lambda path: (not path.startswith(torch_dir), path))
    for path in libraries:
        try:
            function = ctypes.CDLL(path).GOMP_parallel
        except (OSError, AttributeError):
            continue
        function.argtypes = [_OPENMP_BODY, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
        function.restype = None
        return function
    return None


_OPENMP_BODY = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


def run_in_openmp_threads(action: Callable[[], object]) -> bool:
    """Run ``action`` once in each of the ``torch.get_num_threads()`` threads of torch's OpenMP
    team (the calling thread is one); False where no OpenMP runtime is found (nothing runs)."""
    parallel = _openmp_parallel()
    if parallel is None:
        return False
    body = _OPENMP_BODY(lambda _: action())  # kept referenced until the region has ended
    parallel(body, None, torch.get_num_threads(), 0)
    return True


PRECISIONS = ("auto", "fp32", "bf16")
#: x86 flags of native bf16 arithmetic: AVX-512 BF16 (Cooper Lake, Zen 4 and later) and AMX.
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


@cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes in bf16 natively (Linux ``/proc/cpuinfo`` flags; else ``False``).
    Without it bf16 autocast is emulated and usually slower than float32."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    lines = [line for line in text.splitlines() if line.startswith("flags")]
    flags = lines[0].split(":", 1)[1].split() if lines else []
    return bool(NATIVE_BF16_FLAGS & set(flags))


def resolve_precision(precision: str, device: torch.device) -> str:
    """``fp32`` or ``bf16`` (autocast) for a run. ``auto``: bf16 on a CPU with native bf16, else
    fp32; on CUDA ``auto`` adds no autocast of its own (the fused NoProp-DT step uses bf16 there)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    if precision != "auto":
        return precision
    return "bf16" if device.type == "cpu" and cpu_has_native_bf16() else "fp32"


def capturing_cuda_graph() -> bool:
    """Whether the current CUDA stream is recording a graph (:mod:`noprop.training.graphs`)."""
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


def bf16_autocast(device: torch.device) -> torch.autocast:
    """bf16 autocast on ``device``; its cache of cast weights is off while a CUDA graph records,
    as PyTorch's graph notes require (a cached cast would outlive the recorded step)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=not capturing_cuda_graph())


def autocast_for(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast context of a resolved precision (a no-op for fp32)."""
    if precision == "bf16":
        return bf16_autocast(device)
    return contextlib.nullcontext()


#: Values of the ``channels_last`` setting (:func:`channels_last_for`).
CHANNELS_LAST_MODES = ("auto", "on", "off")


def bf16_on_cpu(precision: str, device: torch.device) -> bool:
    """Whether a run computes in bf16 on a CPU: where the ``auto`` settings tuned for that case
    (channels-last images, ``fast`` dropout masks) switch on."""
    return precision == "bf16" and device.type == "cpu"


def channels_last_for(setting: str, precision: str, device: torch.device) -> bool:
    """Whether training steps hand the model their images channels-last (NHWC), from the run's
    ``channels_last`` setting and its resolved ``precision``.

    ``auto``: for bf16 on a CPU, where oneDNN's bf16 convolutions and max pooling run faster on it
    (docs/benchmarks.md, "Where a CPU step's time goes"); ``on``: in every precision (float32 runs
    faster on a CPU too, but its convolution gradients round differently, ~1e-9, so it is no longer
    bit-identical to ``off``); ``off``: never. Dropout masks do not depend on it
    (:class:`noprop.dropout.Dropout` draws them in logical order)."""
    if setting not in CHANNELS_LAST_MODES:
        raise ConfigError(f"channels_last must be one of {', '.join(CHANNELS_LAST_MODES)}; got {setting!r}")
    if setting != "auto":
        return setting == "on"
    return bf16_on_cpu(precision, device)


def step_layout(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """A batch of images (4-D) in the layout a step runs in; other inputs as they are."""
    if channels_last and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


@contextlib.contextmanager
def inference_numerics(precision: str, device: torch.device, flush_denormal: bool) -> Iterator[None]:
    """The arithmetic a run's evaluation ran with: autocast of its resolved ``precision`` and its
    denormal flushing. Every inference outside the trainer (evaluate, predict, the Python API)
    enters this, so that it scores what the trainer scored."""
    with flushed_denormals(flush_denormal), autocast_for(precision, device):
        yield


def resident(*tensors: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, ...]:
    """``tensors`` copied to a CUDA ``device`` once when they fit in a quarter of its free memory
    (then batches are gathered on the device, with no host-to-device copy in a step); else as given."""
    size = sum(t.nbytes for t in tensors)
    if device.type == "cuda" and size < torch.cuda.mem_get_info(device)[0] // 4:
        return tuple(t.to(device) for t in tensors)
    return tensors
