"""Byte views of the objects the collectives take, without copying, and their dtype."""

from __future__ import annotations

import sys

from ._oxccl import OxcclInvalidError

# struct/numpy format character -> oxccl dtype (sizes checked against the buffer's itemsize).
_FORMATS = {
    "f": "float32",
    "d": "float64",
    "e": "float16",
    "b": "int8",
    "B": "uint8",
    "c": "uint8",
    "?": "uint8",
}
_INT = {(True, 4): "int32", (True, 8): "int64", (False, 4): "uint32", (False, 8): "uint64"}
_SIGNED = set("hilqn")
_UNSIGNED = set("HILQN")

_TORCH_DTYPES = None


def _torch_dtypes():
    global _TORCH_DTYPES
    if _TORCH_DTYPES is None:
        import torch

        _TORCH_DTYPES = {
            torch.float32: "float32",
            torch.float64: "float64",
            torch.float16: "float16",
            torch.bfloat16: "bfloat16",
            torch.int8: "int8",
            torch.uint8: "uint8",
            torch.int32: "int32",
            torch.int64: "int64",
            torch.uint32: "uint32",
            torch.uint64: "uint64",
            # Moved bit for bit; reductions on it are refused by the torch backend.
            torch.bool: "uint8",
        }
    return _TORCH_DTYPES


def _is_torch_tensor(obj) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.Tensor)


def torch_dtype_name(t) -> str:
    try:
        return _torch_dtypes()[t.dtype]
    except KeyError:
        raise OxcclInvalidError(
            f"dtype {t.dtype} is not supported (float32, float64, float16, bfloat16, int8, "
            "uint8, int32, int64, uint32, uint64, bool)"
        ) from None


def tensor_bytes(t):
    """The memory of a contiguous CPU tensor in the native module's raw form
    `(address, nbytes, owner)`: no copy, and the tensor stays alive while a call uses it."""
    if not t.is_cpu:  # ~10x cheaper than `t.device.type`
        raise OxcclInvalidError(f"oxccl works on CPU tensors, not {t.device}")
    if not t.is_contiguous():
        raise OxcclInvalidError(
            f"tensor of shape {tuple(t.shape)} and strides {t.stride()} is not contiguous "
            "(call .contiguous())"
        )
    return (t.data_ptr(), t.nbytes, t)


def _format_dtype(fmt: str, itemsize: int) -> str | None:
    order = fmt[0] if fmt and fmt[0] in "@=<>!" else ""
    if order in (">", "!") and sys.byteorder == "little" and itemsize > 1:
        return None
    code = fmt[len(order):]
    if len(code) != 1:
        return None
    if code in _FORMATS:
        return _FORMATS[code]
    if code in _SIGNED or code in _UNSIGNED:
        return _INT.get((code in _SIGNED, itemsize))
    return None


def as_bytes(obj, dtype: str | None = None, writable: bool = False):
    """(uint8 buffer over `obj`'s memory, dtype name). `dtype` overrides (or must match) the
    object's own."""
    if _is_torch_tensor(obj):
        own = torch_dtype_name(obj)
        view = tensor_bytes(obj)
    else:
        try:
            mv = memoryview(obj)
        except TypeError:
            raise OxcclInvalidError(
                f"{type(obj).__name__} has no buffer protocol (use a numpy array, a CPU "
                "torch.Tensor, a bytearray, ...)"
            ) from None
        if not mv.c_contiguous:
            raise OxcclInvalidError(
                f"buffer of shape {mv.shape} and strides {mv.strides} is not C-contiguous"
            )
        if writable and mv.readonly:
            raise OxcclInvalidError("output buffer is read-only")
        own = _format_dtype(mv.format, mv.itemsize)
        view = mv.cast("B") if mv.format != "B" or mv.ndim != 1 else mv
        if own is None and dtype is None:
            raise OxcclInvalidError(
                f"cannot tell the dtype of buffer format {mv.format!r}: pass dtype="
            )
    return view, (dtype or own)
