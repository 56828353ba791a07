"""Training engine: PK sampler, transforms, optimiser/schedule, checkpoints, the trainer.

The public entry points are :func:`atreid.engine.trainer.train_variant` (the training job
behind ``atreid train``) and :func:`atreid.engine.checkpoint.load_trained_model`.
"""

from atreid.engine.checkpoint import load_trained_model, save_trained_model
from atreid.engine.optim import build_optimizer, lr_factor, parameter_groups, set_epoch_lr
from atreid.engine.sampler import PKSampler
from atreid.engine.transforms import SeededTransform, test_transform, train_transform

__all__ = [
    "PKSampler",
    "SeededTransform",
    "build_optimizer",
    "load_trained_model",
    "lr_factor",
    "parameter_groups",
    "save_trained_model",
    "set_epoch_lr",
    "test_transform",
    "train_transform",
    "train_variant",
]


def __getattr__(name: str):
    # The trainer pulls in the model and losses; import it only when asked for.
    if name == "train_variant":
        # start-up: pandas, pyarrow, yaml loaded only when this runs
        from atreid.engine.trainer import train_variant

        return train_variant
    raise AttributeError(f"module 'atreid.engine' has no attribute {name!r}")
