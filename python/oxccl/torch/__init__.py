"""`import oxccl.torch` registers the `torch.distributed` backend "oxccl" (CPU tensors):

    import oxccl.torch
    import torch.distributed as dist
    dist.init_process_group("oxccl")      # under torchrun, as with "gloo"

See `OxcclBackend` for the calls it supports and their limits.
"""

import torch.distributed as dist

from .backend import OxcclBackend, create_backend

__all__ = ["OxcclBackend", "create_backend"]

if "OXCCL" not in dist.Backend._plugins:
    dist.Backend.register_backend("oxccl", create_backend, devices=["cpu"])
