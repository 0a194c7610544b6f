"""Training loop: AdamW, linear warm-up + cosine decay, gradient clipping, EMA, resumable.

Everything random in a step (the batch, flips, reparameterisation noise, diffusion times) is drawn
from generators seeded by ``(train.seed, step)``, and the optimiser state is checkpointed, so
``--resume`` continues to exactly the weights an uninterrupted run reaches (same device and
thread count). Metrics go to ``OUT/metrics.jsonl`` and TensorBoard events in ``OUT/tb``.
"""

from __future__ import annotations

import copy
import json
import math
import pickle
import time
from pathlib import Path

import torch
from tqdm import tqdm

from .checkpoint import check_device, find_checkpoint, load_config_of, load_weights, read_tensors, save_checkpoint
from .config import Config, save_config
from .data import Batches, load_split
from .errors import LdcodecError
from .model import LatentCodec

LOGGED = ("loss", "bpd", "mse", "rec", "entropy", "ce", "rate_bits")


def lr_factor(step: int, cfg: Config) -> float:
    """Linear warm-up over ``train.warmup`` steps, then cosine decay to 0 at ``train.steps``."""
    t = cfg.train
    if step < t.warmup:
        return (step + 1) / t.warmup
    progress = (step - t.warmup) / max(1, t.steps - t.warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def ema_update(ema: dict[str, torch.Tensor], model: torch.nn.Module, decay: float, step: int) -> None:
    """``ema <- d ema + (1 - d) theta`` with the warm-up ``d = min(decay, (1 + step) / (10 + step))``."""
    d = min(decay, (1 + step) / (10 + step))
    with torch.no_grad():
        for name, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                ema[name].mul_(d).add_(v, alpha=1 - d)
            else:
                ema[name] = v.clone()


def ema_state(model: LatentCodec, ema: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The EMA weights with mode C's coding tables computed from them (not averaged: they are integers)."""
    if not model.cfg.cond.enabled:
        return ema
    averaged = copy.deepcopy(model)
    averaged.load_state_dict({k: v for k, v in ema.items() if v.dtype.is_floating_point}, strict=False)
    averaged.update_tables()
    return averaged.state_dict()


def _keep_log_lines(path: Path, start: int) -> None:
    """Drop logged steps after ``start`` (a resumed run logs them again; a fresh run starts empty)."""
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines() if start and json.loads(line).get("step", 0) <= start]
    path.write_text("".join(line + "\n" for line in keep))


def _check_same_run(cfg: Config, run_cfg: Config, out: Path) -> None:
    a, b = cfg.to_dict(), run_cfg.to_dict()
    a["train"].pop("steps"), b["train"].pop("steps")
    a["data"].pop("root"), b["data"].pop("root")
    if a != b:
        diff = [f"{s}.{k}" for s in a for k in a[s] if a[s][k] != b[s][k]]
        raise LdcodecError(f"--resume: the config differs from the run in {out} ({', '.join(diff)}); "
                           f"resume with the same config or start a new --out")


def train(cfg: Config, out: str | Path, resume: bool = False, device: str = "cpu",
          progress: bool = True) -> dict[str, float]:
    """Train one grid cell into run folder ``out``; returns the last logged metrics."""
    out = Path(out)
    check_device(device)
    images, _ = load_split(cfg.data.dataset, "train", cfg.data.root or None)
    torch.manual_seed(cfg.train.seed)
    model = LatentCodec(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg))
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
    start = 0
    if resume:
        ckpt = find_checkpoint(out)
        _check_same_run(cfg, load_config_of(ckpt), out)
        load_weights(model, ckpt / "model.safetensors")
        ema = {k: v.to(device) for k, v in read_tensors(ckpt / "ema.safetensors").items()}
        if ema.keys() != model.state_dict().keys():
            raise LdcodecError(f"{ckpt}/ema.safetensors does not fit the model; the checkpoint is damaged")
        try:
            state = torch.load(ckpt / "state.pt", map_location=device, weights_only=True)
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            start = int(state["step"])
        except (OSError, RuntimeError, KeyError, ValueError, EOFError, pickle.UnpicklingError) as e:
            raise LdcodecError(f"{ckpt}/state.pt is damaged ({e.__class__.__name__}); resume from an earlier "
                               f"checkpoint by pointing {out}/latest at it") from None
    elif (out / "latest").exists():
        raise LdcodecError(f"{out} already holds a training run; pass --resume to continue it or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")

    batches = Batches(images, cfg.train.batch_size, cfg.train.seed,
                      flip=cfg.data.flip and cfg.data.dataset == "cifar10", device=device)
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(out / "tb"))
    last: dict[str, float] = {}
    bar = tqdm(range(start, cfg.train.steps), initial=start, total=cfg.train.steps, disable=not progress,
               desc=cfg.name, dynamic_ncols=True)
    t0, seen = time.perf_counter(), 0
    model.train()
    _keep_log_lines(out / "metrics.jsonl", start)
    with (out / "metrics.jsonl").open("a") as log:
        for step in bar:
            stage1 = step < cfg.train.stage1_steps
            g = torch.Generator(device).manual_seed(cfg.train.seed * 7919 + step)
            terms = model(batches(step), generator=g, train_prior=not stage1,
                          train_autoencoder=stage1 or not cfg.train.two_stage)
            loss = terms["loss"]
            if not torch.isfinite(loss):
                last_ckpt = (out / "latest").read_text().strip() if (out / "latest").exists() else "none yet"
                raise LdcodecError(f"loss became {loss.item()} at step {step}; the last good checkpoint is kept "
                                   f"({out}/{last_ckpt}); lower train.lr or raise train.warmup and --resume")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
            opt.step()
            sched.step()
            ema_update(ema, model, cfg.train.ema, step)
            seen += cfg.train.batch_size
            done = step + 1
            if done % cfg.train.log_every == 0 or done == cfg.train.steps:
                last = {k: terms[k].mean().item() for k in LOGGED}
                last.update(step=done, lr=sched.get_last_lr()[0], grad_norm=gnorm.item(),
                            images_per_s=seen / (time.perf_counter() - t0))
                log.write(json.dumps(last) + "\n")
                log.flush()
                for k, v in last.items():
                    if k != "step":
                        writer.add_scalar(f"train/{k}", v, done)
                bar.set_postfix(loss=f"{last['loss']:.4f}", bpd=f"{last['bpd']:.3f}", mse=f"{last['mse']:.4f}")
            if done % cfg.train.ckpt_every == 0 or done == cfg.train.steps:
                model.update_tables()
                save_checkpoint(out, done, cfg, model, ema_state(model, ema), {"optimizer": opt.state_dict(),
                                                             "scheduler": sched.state_dict(), "step": done})
    writer.close()
    return last
