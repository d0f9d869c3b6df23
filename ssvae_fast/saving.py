"""The one-file format of the models (`M2`, `M1`, `M1M2`): their constructor arguments and parameters,
read back with `torch.load(weights_only=True)` (tensors and plain values only)."""

from __future__ import annotations

import torch


def save(model, path, fmt: str) -> None:
    """Write `model.config` and the parameters to `path` under the format tag `fmt`."""
    torch.save({"format": fmt, "config": model.config, "state_dict": model.state_dict()}, path)


def load(cls, path, fmt: str, build, map_location="cpu"):
    """The model `save` wrote to `path` as `fmt`: build(config) then its parameters, the tensors on
    `map_location`. ValueError naming `cls` when the file is not such a checkpoint (FileNotFoundError as is)."""
    name = cls.__name__
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # pickle, zip and weights_only errors all mean "not a checkpoint we wrote"
        raise ValueError(f"{path}: not an {name} checkpoint written by {name}.save ({exc.__class__.__name__})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != fmt:
        raise ValueError(f"{path}: not an {name} checkpoint written by {name}.save")
    model = build(checkpoint["config"])
    model.load_state_dict(checkpoint["state_dict"], assign=True)  # the tensors as loaded: their device
    return model
