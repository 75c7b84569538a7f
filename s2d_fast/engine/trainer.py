"""Training: warmup (the sampler fixed) and sampling (the sampler learns, or is held: S2D.SAMPLER_LR_RATIO 0).

One process or many (DDP, see `distributed.py`); eager or compiled; fp32, bf16 or fp16 with a
gradient scaler. Checkpoints hold everything a resume needs (model, optimiser, schedule,
scaler, epoch, iteration, random states), so that a run killed at any point and resumed ends
with the same weights as one never interrupted (TRAIN.DETERMINISTIC on the CPU).
"""

from __future__ import annotations

import contextlib
import logging
import random
import signal
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from s2d_fast.checkpoint import checkpoint_path, link_checkpoint, load_checkpoint, save_checkpoint
from s2d_fast.config import ConfigError, learning_rates, process_batch_size, save_config
from s2d_fast.data.datasets import class_names
from s2d_fast.data.loader import build_loader
from s2d_fast.errors import UserError
from s2d_fast.models import VideoModel, build_model

from .distributed import DistContext, Outcome, all_gather_objects, any_rank, init_distributed, launch, shutdown_distributed
from .evaluate import evaluate
from .mixup import mix_batch, mixed_loss
from .optim import build_optimizer
from .runtime import autocast, compile_model, seed_everything, setup_logging, to_device, training_amp
from .visualize import sampling_grid_tensor

logger = logging.getLogger("s2d_fast")


class NonFiniteLossError(UserError, FloatingPointError):
    """The loss became NaN or infinite; the message names the first such iteration."""


class StopRequest:
    """SIGTERM or SIGINT asks the loop to finish its step, write a checkpoint and exit with
    128 + the signal's number. A second signal while a checkpoint is written waits for the
    write; outside a write it stops at once (`RunInterrupted`), the last checkpoint intact. A
    StopRequest entered inside another takes over a stop the outer one already received."""

    def __init__(self):
        self.signal: int | None = None
        self._writing = False
        self._previous = {}

    @property
    def requested(self) -> bool:
        return self.signal is not None

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
            outer = getattr(self._previous[sig], "__self__", None)
            if isinstance(outer, StopRequest) and outer.requested and not self.requested:
                # e.g. `bench proof`'s worker while it set this run up: the stop is this run's too
                self.signal = outer.signal
                logger.info("%s received before training began: one step, then a checkpoint",
                            signal.Signals(self.signal).name)
        return self

    def _handle(self, signum, frame):
        name = signal.Signals(signum).name
        if self.signal is None:
            self.signal = signum
            logger.info("%s received: finishing this step, then writing a checkpoint", name)
        elif self._writing:
            logger.info("%s received again: the checkpoint is being written; stopping right after", name)
        else:
            raise RunInterrupted(f"{name} received twice: stopped at once; the last checkpoint written is kept",
                                 exit_code=128 + signum)

    @contextlib.contextmanager
    def writing(self):
        """A checkpoint write that further signals wait for."""
        self._writing = True
        try:
            yield
        finally:
            self._writing = False

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class RunInterrupted(UserError):
    """A run stopped by a signal before it could write a checkpoint."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def rng_state() -> dict:
    """Every random generator the training step draws from, as plain tensors and ints."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos, "has_gauss": has_gauss, "cached": cached},
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _start_checkpoint(cfg) -> Path | None:
    """What this stage starts from: with TRAIN.AUTO_RESUME, this stage's own last checkpoint
    in OUTPUT_DIR (so that running the same command again continues it); else TRAIN.RESUME;
    else, for sampling, this run's warmup checkpoint."""
    own = checkpoint_path(cfg.OUTPUT_DIR, cfg.TRAIN.STAGE, "last")
    if cfg.TRAIN.AUTO_RESUME and own.is_file():
        if cfg.TRAIN.RESUME:
            logger.info("continuing %s (TRAIN.AUTO_RESUME), not TRAIN.RESUME %s, which it started from; "
                        "TRAIN.AUTO_RESUME False starts over from that", own, cfg.TRAIN.RESUME)
        return own
    if cfg.TRAIN.RESUME:
        return Path(cfg.TRAIN.RESUME)
    if cfg.TRAIN.STAGE == "sampling":
        path = checkpoint_path(cfg.OUTPUT_DIR, "warmup", "last")
        if not path.is_file():
            raise ConfigError(
                f"the sampling stage starts from a warmup checkpoint, and there is none at {path}; "
                "run `s2d-fast train --stage warmup` with the same OUTPUT_DIR first, or set TRAIN.RESUME"
            )
        return path
    return None


def describe_batch_and_lr(cfg, world: int) -> str:
    """The run's global batch and learning rate, and where they come from, for the log."""
    base_lr, _, batch = learning_rates(cfg, world)
    per = process_batch_size(cfg, world)
    accum = f" x {cfg.TRAIN.ACCUM_STEPS} accumulated" if cfg.TRAIN.ACCUM_STEPS > 1 else ""
    rate = (f"TRAIN.BASE_LR {cfg.TRAIN.BASE_LR:g} per video x {batch}" if cfg.TRAIN.BASE_LR_SCOPE == "video"
            else "TRAIN.BASE_LR, for the whole batch")
    return (f"global batch {batch} ({per} per process x {world} process{'es' if world > 1 else ''}{accum}), "
            f"learning rate {base_lr:.3g} ({rate}), schedule {cfg.TRAIN.LR_SCHEDULE}")


def _sampler_scalars(out: dict, n_valid: torch.Tensor, cfg) -> dict[str, torch.Tensor]:
    """Where the sampler looks, averaged over the batch: temporal centre as a fraction of the
    video, temporal stride in candidate frames, and the zoom (identity stride / stride)."""
    if "t_center" not in out:
        return {}
    identity = cfg.DATA.CROP_SIZE / cfg.DNET.INPUT_SIZE
    return {
        "sampler/t_center": (out["t_center"] / (n_valid - 1).clamp(min=1)).mean(),
        "sampler/t_stride": out["t_stride"].mean(),
        "sampler/zoom": (identity / out["strides"]).mean(),
    }


def clip_groups(model: VideoModel, scope: str) -> list[list[nn.Parameter]]:
    """The parameter sets whose gradient norms TRAIN.CLIP_GRAD_NORM bounds, each on its own.
    `sampler-apart`: f_theta apart from the networks. Its evidence-loss gradient can be tens of
    times the networks' (norm ~30 against ~1 for DNet on the built-in dataset); clipped with
    them, it shrinks every step DNet takes."""
    params = [p for p in model.parameters() if p.requires_grad]
    if scope == "all":
        return [params]
    sampler = {id(p) for p in model.sampler_parameters()}
    groups = [[p for p in params if id(p) not in sampler], [p for p in params if id(p) in sampler]]
    return [g for g in groups if g]


class Trainer:
    """One stage of training in this process (one rank of a distributed run): `run` loops over
    the epochs, `train_one_epoch` over the batches, `train_step` is one batch."""

    def __init__(self, cfg, ctx: DistContext):
        self.cfg, self.ctx = cfg, ctx
        self.stage = cfg.TRAIN.STAGE
        self.output_dir = Path(cfg.OUTPUT_DIR)
        self.device = ctx.device
        self.train_loader = build_loader(cfg, "train", distributed=ctx.distributed)
        # TRAIN.EVAL_PERIOD 0: no validation, so the validation list is not even read.
        self.val_loader = build_loader(cfg, "val", distributed=ctx.distributed) if cfg.TRAIN.EVAL_PERIOD else None
        self.num_classes = self.train_loader.dataset.num_classes
        self.accum = cfg.TRAIN.ACCUM_STEPS
        self.steps_per_epoch = len(self.train_loader) // self.accum
        if self.steps_per_epoch == 0:
            raise ConfigError(
                f"TRAIN.ACCUM_STEPS {self.accum} exceeds the {len(self.train_loader)} batches of an epoch"
            )
        start = _start_checkpoint(cfg)
        state = load_checkpoint(start) if start is not None else None
        # Resumed or started from a warmup, the backbones come from the checkpoint.
        self.model: VideoModel = build_model(cfg, self.num_classes, pretrained=state is None)
        self.model.set_stage(self.stage)
        if state is not None:
            self._load_model(state, start)
        to_device(self.model, self.device, cfg.TRAIN.CHANNELS_LAST)
        if cfg.TRAIN.SYNC_BN and ctx.distributed:
            if self.device.type == "cuda":
                self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
            elif ctx.is_main:
                logger.info("TRAIN.SYNC_BN: PyTorch's SyncBatchNorm runs on GPUs only; the CPU processes keep "
                            "their own BatchNorm statistics")
        self.optimizer, self.scheduler = build_optimizer(self.model, cfg, self.steps_per_epoch, ctx.world_size)
        self.amp = training_amp(cfg, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == "fp16")
        self.clip_groups = clip_groups(self.model, cfg.TRAIN.CLIP_GRAD_SCOPE)
        self.epoch, self.iteration, self.best_top1 = 0, 0, -1.0
        # Training time of the stage, over every run that trained it (a resumed run adds to what
        # its checkpoint says), validation excluded; `_epoch_tic` is set while an epoch trains.
        self.train_seconds, self._epoch_tic = 0.0, None
        self.step_lr = self.scheduler.get_last_lr()[0]
        self.metrics: dict = {}  # of the last validation
        if state is not None and state["stage"] == self.stage:
            self._resume(state, start)
        wrapped = self.model
        if ctx.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            wrapped = DistributedDataParallel(self.model, device_ids=ids)
        self.forward = compile_model(wrapped, cfg.TRAIN.COMPILE, cfg.TRAIN.COMPILE_MODE, training=True)
        self.writer = SummaryWriter(str(self.output_dir / "tensorboard" / self.stage)) if ctx.is_main else None
        self.class_names = class_names(cfg, self.num_classes)
        self.last_vis = -cfg.TRAIN.VIS_PERIOD  # the first logged step gets a picture
        self.stop: StopRequest | None = None  # while `run` runs

    def _load_model(self, state: dict, path: Path) -> None:
        if state["stage"] == "warmup" and self.stage == "sampling":
            self.model.load_warmup(state["model"])
        else:
            self.model.load_state_dict(state["model"])
        logger.info("loaded %s (stage %s, epoch %d)", path, state["stage"], state["epoch"])

    def _resume(self, state: dict, path: Path) -> None:
        """The same stage: carry on where it stopped, not from scratch."""
        saved = "adamw" if "betas" in state["optimizer"]["param_groups"][0] else "sgd"  # AdamW's groups carry betas
        if saved != self.cfg.TRAIN.OPTIMIZER:
            raise ConfigError(
                f"{path} continues a run trained with TRAIN.OPTIMIZER {saved}, and this one has "
                f"{self.cfg.TRAIN.OPTIMIZER}: set TRAIN.OPTIMIZER {saved}, or TRAIN.AUTO_RESUME False to start over"
            )
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.iteration = state["epoch"], state["iteration"]
        self.best_top1 = state["best_top1"]
        self.metrics = state.get("metrics") or {}
        self.train_seconds = state.get("train_seconds", 0.0)  # checkpoints before it was kept: this run's only
        set_rng_state(state["rng"][min(self.ctx.rank, len(state["rng"]) - 1)])

    @property
    def batches_per_epoch(self) -> int:
        """An epoch's batches: whole optimiser steps only."""
        return self.steps_per_epoch * self.accum

    # -- checkpoints ---------------------------------------------------------------------------

    def _state(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "iteration": self.iteration,
            "stage": self.stage,
            "num_classes": self.num_classes,
            "metrics": self.metrics,
            "best_top1": self.best_top1,
            "train_seconds": self.training_seconds(),
            "rng": all_gather_objects(rng_state(), self.ctx),  # each rank's own generators
            "config": self.cfg.dump(),
            "class_names": self.class_names,
        }

    def training_seconds(self) -> float:
        """The stage's training time so far, the epoch in progress included."""
        return self.train_seconds + (time.perf_counter() - self._epoch_tic if self._epoch_tic is not None else 0.0)

    def save(self, *, epoch_end: bool = False, best: bool = False) -> None:
        """The last checkpoint, and as further names of the same file (one write per save) the
        best one and, every TRAIN.CHECKPOINT_PERIOD epochs, an epoch one (the newest
        TRAIN.KEEP_CHECKPOINTS kept)."""
        state = self._state()  # every rank joins the gather of random states
        if not self.ctx.is_main:
            return
        with self.stop.writing() if self.stop is not None else nullcontext():
            self._write(state, epoch_end, best)

    def _write(self, state: dict, epoch_end: bool, best: bool) -> None:
        last = save_checkpoint(state, checkpoint_path(self.output_dir, self.stage, "last"))
        if best:
            link_checkpoint(last, checkpoint_path(self.output_dir, self.stage, "best"))
        if epoch_end and self.epoch % self.cfg.TRAIN.CHECKPOINT_PERIOD == 0:
            link_checkpoint(last, self.output_dir / "checkpoints" / f"{self.stage}-epoch{self.epoch:04d}.pt")
            kept = sorted((self.output_dir / "checkpoints").glob(f"{self.stage}-epoch*.pt"))
            for old in kept[: max(0, len(kept) - self.cfg.TRAIN.KEEP_CHECKPOINTS)]:
                old.unlink()

    # -- one batch -----------------------------------------------------------------------------

    def train_step(self, batch: dict, amp) -> tuple[dict, dict]:
        """Forward, loss and backward of one batch, and the optimiser step when it closes one
        of TRAIN.ACCUM_STEPS; returns the model's output and its losses."""
        frames = batch["frames"].to(self.device, non_blocking=True)
        n_valid = batch["n_valid"].to(self.device, non_blocking=True)
        labels = batch["label"].to(self.device, non_blocking=True)
        frames, order, lam = mix_batch(frames, self.cfg.MIXUP)
        boundary = self.closes_step()
        sync = nullcontext() if boundary or not self.ctx.distributed else self.forward_no_sync()
        with sync:
            with amp:
                out = self.forward(frames, n_valid)
                losses = mixed_loss(self.model.loss, out, labels, order, lam)
            self.scaler.scale(losses["loss"] / self.accum).backward()
        if boundary:
            self.step_lr = self.scheduler.get_last_lr()[0]  # the rate this step ran at, for the logs
            self.scaler.unscale_(self.optimizer)
            if self.cfg.TRAIN.CLIP_GRAD_NORM > 0:
                for group in self.clip_groups:
                    nn.utils.clip_grad_norm_(group, self.cfg.TRAIN.CLIP_GRAD_NORM)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            self.scheduler.step()
        return out, losses

    def closes_step(self) -> bool:
        """Whether the current batch is the last of an optimiser step."""
        return (self.iteration + 1) % self.accum == 0

    def forward_no_sync(self):
        """DDP's no_sync for the micro-steps of gradient accumulation."""
        module = getattr(self.forward, "_orig_mod", self.forward)
        return module.no_sync()

    def _check_finite(self, first_bad: torch.Tensor) -> None:
        bad = int(first_bad.item())
        if bad >= 0:
            raise NonFiniteLossError(
                f"the loss became NaN or infinite at epoch {self.epoch + 1}, iteration {bad}; stopping with "
                f"the last good checkpoint kept in {self.output_dir / 'checkpoints'} (try a lower TRAIN.BASE_LR)"
            )

    def _log_step(self, losses: dict, out: dict, batch: dict) -> dict[str, float]:
        """The step's losses and sampler placement to TensorBoard (and, every TRAIN.VIS_PERIOD
        steps, a picture of where the sampler looked); returns them as floats."""
        step = self.epoch * self.batches_per_epoch + self.iteration
        extra = _sampler_scalars(out, batch["n_valid"].to(self.device), self.cfg)
        values = {k: v.item() for k, v in {**losses, **extra}.items()}
        if self.writer is None:
            return values
        for k, v in values.items():
            self.writer.add_scalar(k if "/" in k else f"train/{k}", v, step)
        self.writer.add_scalar("train/lr", self.step_lr, step)
        if self.cfg.TRAIN.VIS_PERIOD and step - self.last_vis >= self.cfg.TRAIN.VIS_PERIOD:
            image = sampling_grid_tensor(self.model, batch["frames"], batch["n_valid"], out,
                                         class_names=self.class_names)
            self.writer.add_image("sampling", image, step)
            self.last_vis = step
        return values

    # -- one epoch -----------------------------------------------------------------------------

    def train_one_epoch(self, amp, stop: StopRequest) -> tuple[dict[str, float], bool]:
        """The rest of the current epoch: the mean of the logged losses, and whether a stop
        request ended it early (after writing a checkpoint)."""
        self.model.train()
        batches, log_period = self.batches_per_epoch, self.cfg.TRAIN.LOG_PERIOD
        self.train_loader.sampler.set_epoch(self.epoch, start=self.iteration * self.train_loader.batch_size)
        # The first bad iteration is remembered on the device: no host sync per step.
        first_bad = torch.full((), -1, dtype=torch.int64, device=self.device)
        sums: dict[str, float] = {}
        count = 0
        bar = tqdm(total=batches, initial=self.iteration, desc=f"{self.stage} {self.epoch + 1}/{self.cfg.TRAIN.EPOCHS}",
                   leave=False, disable=None if self.ctx.is_main else True, dynamic_ncols=True)
        with bar:
            for batch in self.train_loader:
                if self.iteration >= batches:
                    break
                boundary = self.closes_step()
                out, losses = self.train_step(batch, amp)
                bad = ~torch.isfinite(losses["loss"].detach()) & (first_bad < 0)
                first_bad = torch.where(bad, torch.tensor(self.iteration, device=self.device), first_bad)
                self.iteration += 1
                bar.update(1)
                last = self.iteration == batches
                if self.iteration % log_period == 0 or last:
                    self._check_finite(first_bad)
                    values = self._log_step(losses, out, batch)
                    for k, v in values.items():
                        sums[k] = sums.get(k, 0.0) + v
                    count += 1
                    bar.set_postfix(loss=f"{values['loss']:.3f}")
                    stopping = any_rank(stop.requested, self.ctx)
                else:
                    stopping = stop.requested and not self.ctx.distributed
                periodic = self.cfg.TRAIN.CHECKPOINT_ITERS and self.iteration % self.cfg.TRAIN.CHECKPOINT_ITERS == 0
                if (stopping or periodic) and boundary and not last:
                    self._check_finite(first_bad)
                    self.save()
                if stopping and boundary and not last:  # at the last step the epoch ends first (run)
                    logger.info("stopped at epoch %d, iteration %d; checkpoint written", self.epoch + 1, self.iteration)
                    return {}, True
        self._check_finite(first_bad)
        return {k: v / max(count, 1) for k, v in sums.items()}, False

    def validate(self) -> bool:
        """Evaluate on the validation list if this epoch is due (every TRAIN.EVAL_PERIOD, and the
        last); returns whether the result is the best so far."""
        period = self.cfg.TRAIN.EVAL_PERIOD
        if not period or not (self.epoch % period == 0 or self.epoch == self.cfg.TRAIN.EPOCHS):
            return False
        self.metrics, _ = evaluate(self.model, self.val_loader, self.device, self.ctx, amp_dtype=self.amp)
        m = self.metrics
        logger.info("epoch %d/%d val top1=%.2f top5=%.2f mAP=%.2f (%d videos)",
                    self.epoch, self.cfg.TRAIN.EPOCHS, m["top1"], m["top5"], m["mAP"], m["num_videos"])
        if self.writer is not None:
            for k in ("top1", "top5", "mAP"):
                self.writer.add_scalar(f"val/{k}", m[k], self.epoch)
        best = m["top1"] > self.best_top1
        if best:
            self.best_top1 = m["top1"]
        return best

    # -- the stage -----------------------------------------------------------------------------

    def run(self) -> dict:
        epochs = self.cfg.TRAIN.EPOCHS
        if self.epoch >= epochs:
            if epochs == 0:
                logger.info("TRAIN.EPOCHS is 0: nothing to train")
            else:
                logger.info("stage %s is trained already (epoch %d of %d) in %s; nothing to do", self.stage,
                            self.epoch, epochs, checkpoint_path(self.output_dir, self.stage))
            return self._result(done_before=True)
        validation = (f"{len(self.val_loader.dataset)} validation videos" if self.val_loader is not None
                      else "no validation (TRAIN.EVAL_PERIOD 0)")
        logger.info(
            "stage %s: %d training videos and %s, %d classes, epochs %d-%d on %s x%d",
            self.stage, len(self.train_loader.dataset), validation, self.num_classes,
            self.epoch + 1, epochs, self.device, self.ctx.world_size,
        )
        logger.info("%s", describe_batch_and_lr(self.cfg, self.ctx.world_size))
        if self.model.sampler_held:
            logger.info("f_theta is held (S2D.SAMPLER_LR_RATIO 0): the networks train on where the warmup sampled")
        if self.cfg.TRAIN.AMP == "auto":
            logger.info("TRAIN.AMP auto: %s", "bf16 autocast, this CPU has native bf16" if self.amp == "bf16" else "float32")
        amp = autocast(self.device, self.amp)
        with StopRequest() as self.stop:
            while self.epoch < epochs:
                self._epoch_tic, epoch_lr = time.perf_counter(), self.scheduler.get_last_lr()[0]
                losses, stopped = self.train_one_epoch(amp, self.stop)
                self.train_seconds, self._epoch_tic = self.training_seconds(), None
                if stopped:
                    return self._result(stopped_by=self.stop.signal or signal.SIGTERM)
                self.epoch += 1
                self.iteration = 0
                summary = " ".join(f"{k.split('/')[-1]}={v:.4f}" for k, v in losses.items())
                logger.info("epoch %d/%d %s lr=%.3g", self.epoch, epochs, summary, epoch_lr)
                skipped = self.train_loader.dataset.notes.num_skipped
                if skipped:
                    logger.info("%d unreadable training samples replaced so far (DATA.ON_BAD_SAMPLE skip)", skipped)
                self.save(epoch_end=True, best=self.validate())
                if self.epoch < epochs and any_rank(self.stop.requested, self.ctx):
                    logger.info("stopped after epoch %d; checkpoint written", self.epoch)
                    return self._result(stopped_by=self.stop.signal or signal.SIGTERM)
        if self.writer is not None:
            self.writer.close()
        logger.info("stage %s done: %.1f s of training; checkpoint %s",
                    self.stage, self.train_seconds, checkpoint_path(self.output_dir, self.stage))
        return self._result()

    def _result(self, *, stopped_by: int | None = None, done_before: bool = False) -> dict:
        """`train_seconds` counts every run of the stage; `stopped_by`: the signal that stopped
        the run (a checkpoint was written); `done_before`: the stage had all its epochs already."""
        return {"metrics": self.metrics, "train_seconds": self.train_seconds, "stopped": stopped_by is not None,
                "signal": stopped_by, "done_before": done_before, "epoch": self.epoch, "iteration": self.iteration,
                "checkpoint": str(checkpoint_path(self.output_dir, self.stage))}


def _train_process(cfg) -> dict:
    ctx = init_distributed(cfg)
    try:
        setup_logging(Path(cfg.OUTPUT_DIR) if ctx.is_main else None, f"log_{cfg.TRAIN.STAGE}.txt", quiet=not ctx.is_main)
        if cfg.TRAIN.DETERMINISTIC:
            torch.use_deterministic_algorithms(True)
        seed_everything(cfg.RNG_SEED)
        if ctx.is_main:
            save_config(cfg, Path(cfg.OUTPUT_DIR) / f"config_{cfg.TRAIN.STAGE}.yaml")
        return Trainer(cfg, ctx).run()
    finally:
        shutdown_distributed()


def train(cfg) -> Outcome:
    """Train one stage as configured, in this process or in NUM_GPUS spawned ones; the
    outcome's value holds the final validation metrics and the checkpoint path."""
    return launch(cfg, _train_process, cfg)
