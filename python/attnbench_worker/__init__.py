"""attnbench's kernel-worker protocol in Python: the helper (`helper`) and the built-in adapters
(`adapters`). Run an adapter with `python -m attnbench_worker NAME`; docs/EXTERNAL-KERNELS.md has the
protocol and a worked example."""

from .helper import PROTOCOL, Adapter, Inputs, NumpyAdapter, Prepared, TorchAdapter, Unsupported, serve

__all__ = ["PROTOCOL", "Adapter", "Inputs", "NumpyAdapter", "Prepared", "TorchAdapter", "Unsupported", "serve"]
