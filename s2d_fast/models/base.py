"""What the engine asks of every registered model, and the parts S2DNet and plain TSM share.

A model maps uint8 candidates `(B, T, 3, H, W)` and their valid counts `n_valid (B,)` to a dict
with at least `log_prob` (B, A), the final log-distribution over actions. It knows its own
loss, which of its parameters each training stage trains and at which learning-rate ratio, and
which uniform frames it reads first (for the pictures of where it looked).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from s2d_fast.config import ConfigError
from s2d_fast.kernels import gather_frames

from .sampler import linspace_indices, uniform_indices


class VideoModel(nn.Module):
    """The common interface; subclasses build their networks and define `forward` and `loss`."""

    # Parameter-name prefixes that the sampling stage starts fresh instead of from the warmup.
    fresh_in_sampling: tuple[str, ...] = ()
    # Parameters the warmup never trains: taken from a warmup checkpoint that has them.
    untrained_in_warmup: tuple[str, ...] = ()
    # Whether the sampling stage keeps the sampler where the warmup had it (S2DNet: a property).
    sampler_held: bool = False

    def __init__(self, cfg, num_classes: int):
        super().__init__()
        self.num_classes = num_classes
        self.kernel_backend = cfg.KERNELS.BACKEND
        self.train_only = list(cfg.S2D.TRAIN_ONLY_PARAMS)
        self.stage = "warmup"
        self.register_buffer("mean", torch.tensor(cfg.DATA.MEAN, dtype=torch.float32), persistent=False)
        self.register_buffer("std", torch.tensor(cfg.DATA.STD, dtype=torch.float32), persistent=False)
        self._always_frozen: frozenset[str] = frozenset()

    def freeze_for_good(self) -> None:
        """Record the parameters the backbones froze at construction (partial BN): no stage trains them."""
        self._always_frozen = frozenset(n for n, p in self.named_parameters() if not p.requires_grad)

    # -- stages and what trains ----------------------------------------------------------------

    @property
    def uniform_input(self) -> tuple[int, int]:
        """(frames, side) of the uniform frames the model reads first."""
        raise NotImplementedError

    def trains(self, name: str) -> bool:
        """Whether the parameter `name` trains in the current stage: not if frozen for good, and
        in the sampling stage only under S2D.TRAIN_ONLY_PARAMS's prefixes when it names any."""
        if name in self._always_frozen:
            return False
        if self.stage == "sampling" and self.train_only:
            return name.startswith(tuple(self.train_only))
        return True

    def set_stage(self, stage: str) -> None:
        """Switch to the warmup or the sampling stage: sets which parameters train."""
        if stage == "sampling" and self.train_only:
            names = [n for n, _ in self.named_parameters()]
            for prefix in self.train_only:
                if not any(n.startswith(prefix) for n in names):
                    tops = sorted({n.split(".")[0] for n in names})
                    raise ConfigError(
                        f"S2D.TRAIN_ONLY_PARAMS: no parameter name starts with {prefix!r}; "
                        f"top-level modules: {', '.join(tops)}"
                    )
        self.stage = stage
        for name, p in self.named_parameters():
            p.requires_grad_(self.trains(name))
        self.train(self.training)

    def new_classifiers(self, cfg) -> tuple[str, ...]:
        """Parameter-name prefixes of the classifiers that are new on a pretrained backbone."""
        return ()

    def lr_ratio(self, name: str, cfg) -> float:
        """Learning-rate factor of the parameter `name` in the current stage (before TSM's bias
        and BN rules): in warmup a new classifier on a pretrained backbone learns at
        TRAIN.NEW_FC_LR_RATIO (TSM; the authors' groups give every Linear layer that instead); the
        sampling stage fine-tunes, so it has none."""
        if cfg.TRAIN.PARAM_GROUPS == "tsm" and self.stage != "sampling" and name.startswith(self.new_classifiers(cfg)):
            return cfg.TRAIN.NEW_FC_LR_RATIO
        return 1.0

    def lr_ratios(self, cfg) -> dict[str, float]:
        return {name: self.lr_ratio(name, cfg) for name, _ in self.named_parameters()}

    def load_warmup(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Start the sampling stage from a warmup checkpoint of the same model: everything but
        `fresh_in_sampling` from it, and `untrained_in_warmup` where the checkpoint has it (a
        warmup built with another of those parts left them as they were built); any other
        difference is an error naming the keys."""
        fresh, untrained = self.fresh_in_sampling, self.untrained_in_warmup
        mine = {k: v for k, v in self.state_dict().items() if not (fresh and k.startswith(fresh))}
        theirs = {k: v for k, v in state_dict.items() if not (fresh and k.startswith(fresh))}
        theirs = {k: v for k, v in theirs.items() if k in mine or not k.startswith(untrained)}
        problems = [f"missing {k}" for k in mine if k not in theirs and not k.startswith(untrained)]
        problems += [f"unexpected {k}" for k in theirs if k not in mine]
        problems += [f"{k} has shape {tuple(v.shape)}, the model {tuple(mine[k].shape)}"
                     for k, v in theirs.items() if k in mine and v.shape != mine[k].shape]
        if problems:
            raise ConfigError(
                f"the warmup checkpoint does not fit this model ({'; '.join(problems[:4])}): the sampling "
                "stage needs the warmup's SNET, DNET, DATA.NUM_CLASS and S2D.CONTEXT_DIM / FUSION_STAGES"
            )
        self.load_state_dict(theirs, strict=False)

    def sampler_parameters(self) -> list[nn.Parameter]:
        """What only the sampling stage trains (none for a model without a sampler)."""
        return []

    def loss(self, out: dict[str, torch.Tensor], labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """`{"loss": the scalar to minimise, ...: detached parts to log}`."""
        raise NotImplementedError

    # -- the shared first step of every forward -------------------------------------------------

    def uniform_frames(self, frames: torch.Tensor, n_valid: torch.Tensor, k: int, size: int,
                       choice: str = "segments", resize: str = "bilinear") -> torch.Tensor:
        """k candidates spread over the valid ones (`segments`: TSN's segment centres; `linspace`:
        the authors' floor((n-1) i/(k-1))), normalised and resized to `size` (`bilinear`,
        antialiased; `nearest`, the authors' legacy nearest): `(B*k, 3, size, size)`."""
        index = uniform_indices(n_valid, k) if choice == "segments" else linspace_indices(n_valid, k)
        x = gather_frames(frames, index, mean=self.mean, std=self.std, backend=self.kernel_backend).flatten(0, 1)
        if x.shape[-1] != size or x.shape[-2] != size:
            if resize == "nearest":
                x = F.interpolate(x, size=(size, size), mode="nearest")
            else:
                x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        return x
