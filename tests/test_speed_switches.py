"""bf16 autocast, fp16 with a gradient scaler, channels_last, gradient accumulation and MIXUP each
run a training stage and an evaluation on the CPU (a compiled evaluation: tests/test_inference.py)."""

import math

import pytest
import torch

from s2d_fast.config import ConfigError, load_config
from s2d_fast.engine.distributed import DistContext
from s2d_fast.engine.evaluate import evaluate
from s2d_fast.engine.runtime import compile_model, inference_settings, setup_logging
from s2d_fast.engine.trainer import Trainer

from helpers import tiny_run

CPU = DistContext(0, 1, 0, torch.device("cpu"))


@pytest.mark.parametrize("switches", [
    ["TRAIN.AMP", "fp16"],
    ["TRAIN.CHANNELS_LAST", "True", "TRAIN.ACCUM_STEPS", "2"],
    ["MIXUP.ENABLE", "True"],
], ids=["fp16", "channels_last+accum", "mixup"])
def test_switch_trains_and_evaluates(micro_dataset, tmp_path, switches):
    cfg = load_config(None, tiny_run(micro_dataset, tmp_path, "TRAIN.STAGE", "warmup", *switches))
    trainer = Trainer(cfg, CPU)
    before = trainer.model.dnet.stem[0].weight.detach().clone()
    result = trainer.run()
    assert not torch.equal(before, trainer.model.dnet.stem[0].weight)
    assert result["metrics"]["num_videos"] == 6
    settings = inference_settings(cfg, CPU.device, 6 * 0.1)
    assert not settings.compile
    metrics, (_, scores, _) = evaluate(trainer.model, trainer.val_loader, CPU.device, CPU, amp_dtype=settings.amp)
    assert scores.shape == (6, 12) and math.isfinite(metrics["top1"])
    assert abs(scores.sum(1) - 1).max() < 1e-3
    state = torch.load(tmp_path / "checkpoints" / "warmup-last.pt", weights_only=True)
    assert (state["scaler"].get("scale", 0) > 0) == (cfg.TRAIN.AMP == "fp16")  # fp16 keeps its loss scale


@pytest.mark.parametrize("native", [True, False])
def test_train_amp_auto_is_bf16_where_the_cpu_has_it(micro_dataset, tmp_path, monkeypatch, native):
    """TRAIN.AMP auto trains in bf16 autocast on a CPU that multiplies bf16 in hardware (the
    same run as TRAIN.AMP bf16, TEST.AMP bf16), in float32 on one that would emulate it (slower
    than float32), and says which."""
    monkeypatch.setattr("s2d_fast.engine.runtime.native_bf16", lambda: native)
    cfg = load_config(None, tiny_run(micro_dataset, tmp_path, "TRAIN.AMP", "auto"))
    setup_logging(tmp_path, "log_warmup.txt")
    trainer = Trainer(cfg, CPU)
    assert trainer.amp == ("bf16" if native else "none")
    seen = []  # the autocast dtype of every forward pass, training and validation
    trainer.model.register_forward_hook(lambda module, args, out: seen.append(
        torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None))
    before = trainer.model.dnet.stem[0].weight.detach().clone()
    result = trainer.run()
    assert set(seen) == {torch.bfloat16 if native else None}
    assert not torch.equal(before, trainer.model.dnet.stem[0].weight)
    assert result["metrics"]["num_videos"] == 6 and math.isfinite(result["metrics"]["top1"])
    log = (tmp_path / "log_warmup.txt").read_text()
    assert ("TRAIN.AMP auto: bf16 autocast, this CPU has native bf16" if native else "TRAIN.AMP auto: float32") in log


def test_compiled_inference_freezes_weights_without_changing_global_settings():
    """CPU inference compiles with Inductor's weight freezing (the weights become constants of
    the graph), switched on only while the compiled module runs, so the process-wide setting
    stays as it was."""
    import torch._inductor.config as inductor_config

    torch._dynamo.reset()
    before = inductor_config.freezing
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()).eval()
    x = torch.randn(1, 3, 8, 8)
    compiled = compile_model(net, True, "default", training=False)
    with torch.no_grad():
        first = compiled(x)
        net[0].weight.add_(1.0)  # frozen: the compiled graph keeps the weights it folded in
        again = compiled(x)
    assert inductor_config.freezing == before
    torch.testing.assert_close(again, first)
    assert not torch.allclose(net(x), first)


def test_compiled_training_is_not_offered_on_the_cpu(tiny_dataset, tmp_path):
    """Measured no faster than eager on the CPU (bench train), so a CPU run refuses it, in one line."""
    with pytest.raises(ConfigError, match="TRAIN.COMPILE True: compiled training steps are no faster"):
        load_config(None, tiny_run(tiny_dataset, tmp_path, "TRAIN.COMPILE", "True"))
    cfg = load_config(None, tiny_run(tiny_dataset, tmp_path, "TRAIN.COMPILE", "True", "NUM_GPUS", "1"))
    assert cfg.TRAIN.COMPILE  # with GPUs it stays
