"""Two-process DDP with gloo on the CPU: identical weights on both ranks after training,
evaluation over two ranks scores every validation video exactly once, and a lost rank makes
the other fail within DIST.TIMEOUT instead of hanging."""

import os
import time

import pytest
import torch
import torch.multiprocessing as mp

from s2d_fast.config import load_config
from s2d_fast.engine.distributed import _free_port, init_distributed, shutdown_distributed
from s2d_fast.engine.evaluate import evaluate, predict_scores
from s2d_fast.engine.trainer import Trainer

from helpers import tiny_run


def _rank(rank: int, world: int, port: int, overrides: list[str], out: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    cfg = load_config(None, overrides)
    ctx = init_distributed(cfg)
    try:
        torch.manual_seed(cfg.RNG_SEED)
        trainer = Trainer(cfg, ctx)
        trainer.run()
        metrics, (indices, _, _) = evaluate(trainer.model, trainer.val_loader, ctx.device, ctx)
        shard = predict_scores(trainer.model, trainer.val_loader, ctx.device)["indices"]
        # Parameters, not BN statistics: DDP broadcasts rank 0's buffers at each forward, and
        # each rank's last forward then updates its own.
        weights = {n: p.detach() for n, p in trainer.model.named_parameters()}
        torch.save({"model": weights, "metrics": metrics["top1"],
                    "gathered": torch.from_numpy(indices), "shard": torch.from_numpy(shard)},
                   os.path.join(out, f"rank{rank}.pt"))
    finally:
        shutdown_distributed()


def test_two_ranks_train_in_lockstep_and_score_each_video_once(tiny_dataset, tmp_path):
    overrides = tiny_run(tiny_dataset, tmp_path / "run", "TRAIN.STAGE", "warmup", "TRAIN.EPOCHS", "1",
                         "TEST.BATCH_SIZE", "5")
    mp.spawn(_rank, args=(2, _free_port(), overrides, str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for key in r0["model"]:
        assert torch.equal(r0["model"][key], r1["model"][key]), key
    # the shards are disjoint, cover the list, and the gathered result has each video once
    shard0, shard1 = set(r0["shard"].tolist()), set(r1["shard"].tolist())
    assert not shard0 & shard1 and shard0 | shard1 == set(range(12))
    assert r0["gathered"].tolist() == list(range(12)) == r1["gathered"].tolist()
    assert r0["metrics"] == r1["metrics"]
    # rank 0 wrote the checkpoint, and it holds the weights both ranks share
    saved = torch.load(tmp_path / "run" / "checkpoints" / "warmup-last.pt", weights_only=True)["model"]
    for key in r0["model"]:
        assert torch.equal(saved[key], r0["model"][key]), key


def _stalled_rank(rank: int, world: int, port: int, overrides: list[str]) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    cfg = load_config(None, overrides)
    ctx = init_distributed(cfg)
    if rank == 1:
        time.sleep(600)  # alive but gone from the collectives: a hung or lost peer
    Trainer(cfg, ctx).run()


def test_a_lost_rank_makes_the_others_fail_within_the_timeout(tiny_dataset, tmp_path):
    overrides = tiny_run(tiny_dataset, tmp_path / "run", "TRAIN.STAGE", "warmup", "DIST.TIMEOUT", "5")
    start = time.monotonic()
    with pytest.raises(mp.ProcessRaisedException):
        mp.spawn(_stalled_rank, args=(2, _free_port(), overrides), nprocs=2, join=True)
    assert time.monotonic() - start < 120
