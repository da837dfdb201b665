"""The built-in adapters: name -> (module, class). Modules import their kernel's package only when a
case is prepared, so listing and probing stay cheap."""

import importlib

ADAPTERS = {
    "numpy-ref": ("numpy_ref", "NumpyReference"),
    "torch-sdpa": ("torch_sdpa", "TorchSdpa"),
    "flex": ("flex", "Flex"),
    "fa2-varlen": ("fa_varlen", "Fa2Varlen"),
    "fa3-varlen": ("fa_varlen", "Fa3Varlen"),
    "magi-ffa": ("magi_ffa", "MagiFfa"),
    "flashmask": ("flashmask", "FlashMask"),
}


def load(name):
    module, cls = ADAPTERS[name]
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)()
