"""The model's state as a flat float vector, an ordered dict of tensors, or an ArrayRecord.

The aggregation rules work on updates Δ = w_client − w_global over every floating-point entry
of the state dict (parameters and BatchNorm running statistics, in state-dict order).
Integer buffers (BatchNorm's ``num_batches_tracked``) are bookkeeping, not learned, and are not
exchanged.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from flwr.app import ArrayRecord


def float_state(model: torch.nn.Module) -> "OrderedDict[str, torch.Tensor]":
    return OrderedDict(
        (k, v.detach().clone()) for k, v in model.state_dict().items() if v.is_floating_point()
    )


def load_float_state(model: torch.nn.Module, state) -> None:
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(f"state does not fit the model: missing={missing} unexpected={unexpected}")


def to_array_record(state) -> ArrayRecord:
    return ArrayRecord(OrderedDict((k, v.detach().cpu()) for k, v in state.items()))


def from_array_record(record: ArrayRecord) -> "OrderedDict[str, torch.Tensor]":
    return record.to_torch_state_dict()


def flatten(state) -> torch.Tensor:
    return torch.cat([v.reshape(-1).float() for v in state.values()])


def unflatten(vector: torch.Tensor, like) -> "OrderedDict[str, torch.Tensor]":
    need = sum(v.numel() for v in like.values())
    if need != vector.numel():
        raise ValueError(f"vector has {vector.numel()} entries, state needs {need}")
    out, i = OrderedDict(), 0
    for k, v in like.items():
        out[k] = vector[i : i + v.numel()].view_as(v).to(v.dtype)
        i += v.numel()
    return out
