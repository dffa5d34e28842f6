"""The kernel layer's errors (raised by the loader, the NVRTC check and the CPU emulator)."""


class KernelUnavailableError(RuntimeError):
    """A CUDA kernel was requested where it cannot run (no GPU or no cuda-python)."""


class KernelCompileError(RuntimeError):
    """NVRTC rejected a kernel source; the message carries the compiler log."""
