"""Training loop: AdamW, linear warm-up + cosine decay, gradient clipping, EMA, resumable, data-parallel.

Randomness. Everything random in a step is drawn from generators seeded by the step: the global
batch of ``train.batch_size`` images and its flips by ``(train.seed, step)`` (:class:`Batches`),
the reparameterisation noise, diffusion times and code noise of process ``rank`` by
:func:`~ldcodec.seeds.noise_seed` ``(train.seed, step, rank)``. The optimiser state is checkpointed.

What holds:

- One process: ``--resume`` continues to exactly the weights an uninterrupted run reaches (same
  device, precision and thread count), also after a SIGKILL at any moment; a run killed before its
  first checkpoint restarts from step 0 with the saved config.
- ``N`` processes (``torchrun``, DistributedDataParallel): process ``r`` trains on slice ``r`` of
  the same global batch with its own noise, gradients are averaged, so every process holds the
  same weights. ``train.batch_size`` is the effective (global) batch whatever ``N``, and
  ``train.lr`` its learning rate: changing ``N`` changes the speed, not the optimisation. Resume
  with the same ``N`` continues exactly (tested for 2 processes; with more, the all-reduce may sum
  in another order). A checkpoint resumes under any ``N``: batches, schedule and optimiser state
  carry over, the noise of later steps is that of the new ``N`` (a different, equally valid draw).
  A model whose step draws no noise (delta latent, N(0, I) prior) trains to the same weights
  under any ``N`` within floating-point rounding.

Speed (``docs/design.md`` §8): bf16 autocast on CUDA, ``torch.compile`` on request, channels-last
for the CNN cells on CUDA, the dataset kept on the device when it fits, and no host-device
synchronisation in a step except at logging and checkpoint steps (the finiteness check of the
loss accumulates on the device). Metrics go to ``OUT/metrics.jsonl`` and TensorBoard events in
``OUT/tb``; each start of the run appends its launch settings to ``OUT/launches.jsonl``.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import math
import os
import pickle
import shutil
import sys
import time
import warnings
from contextlib import nullcontext
from pathlib import Path

import torch
from tqdm import tqdm

from . import distributed
from .checkpoint import check_device, find_checkpoint, load_config_of, load_weights, read_tensors, save_checkpoint
from .config import Config, portable_config, save_config
from .data import Batches, load_split
from .errors import LdcodecError
from .files import write_text_atomic
from .model import LSGMModel
from .seeds import noise_seed

LOGGED = ("loss", "bpd", "mse", "rec", "entropy", "ce", "rate_bits")
PRECISIONS = ("auto", "fp32", "bf16")
NO_STEP = 2 ** 62  # "no non-finite loss seen yet"


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
    floats, params = [], []
    with torch.no_grad():
        for name, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                floats.append(ema[name])
                params.append(v)
            else:
                ema[name] = v.clone()
        torch._foreach_mul_(floats, d)
        torch._foreach_add_(floats, params, alpha=1 - d)


def ema_state(model: LSGMModel, ema: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The EMA weights with mode C's coding tables computed from them (not averaged: they are integers)."""
    if not model.cfg.cond.enabled:
        return ema
    averaged = copy.deepcopy(model)
    averaged.load_state_dict({k: v for k, v in ema.items() if v.dtype.is_floating_point}, strict=False)
    averaged.update_tables()
    return averaged.state_dict()


def resolve_precision(precision: str, device: str) -> str:
    """``fp32`` or ``bf16`` for ``--precision`` on ``device``; ``auto`` is bf16 on a CUDA GPU that has it."""
    if precision not in PRECISIONS:
        raise LdcodecError(f"--precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    cuda = torch.device(device).type == "cuda"
    bf16_ok = cuda and torch.cuda.is_bf16_supported()
    if precision == "auto":
        return "bf16" if bf16_ok else "fp32"
    if precision == "bf16" and not cuda:
        raise LdcodecError("--precision bf16 is for CUDA GPUs; on the CPU ldcodec trains in fp32 "
                           "(use --precision fp32 or auto)")
    if precision == "bf16" and not bf16_ok:
        raise LdcodecError(f"--precision bf16: {torch.cuda.get_device_name()} has no bf16 support; "
                           f"use --precision fp32")
    return precision


def check_compile(device: str) -> None:
    """Raise a clear error where ``torch.compile`` cannot work (inductor needs a C++ compiler or triton)."""
    if not torch._dynamo.is_dynamo_supported():
        raise LdcodecError(f"--compile: torch.compile does not support Python {sys.version.split()[0]} "
                           f"with torch {torch.__version__}; train without --compile")
    if torch.device(device).type == "cuda":
        if importlib.util.find_spec("triton") is None:
            raise LdcodecError("--compile on CUDA needs triton (pip install triton); or train without --compile")
    else:
        cxx = os.environ.get("CXX") or ("clang++" if sys.platform == "darwin" else "g++")
        if shutil.which(cxx) is None:
            raise LdcodecError(f"--compile on the CPU needs a C++ compiler ({cxx} not found; set CXX); "
                               f"or train without --compile")


def _json_lines(path: Path) -> list[dict]:
    """The records of a JSON-lines file, without a last line cut short by a killed process."""
    records = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return records


def _write_json_lines(path: Path, records: list[dict]) -> None:
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in records))


def _keep_log_lines(path: Path, start: int) -> None:
    """Drop logged steps after ``start`` (a resumed run logs them again; a fresh run starts empty)."""
    _write_json_lines(path, [r for r in _json_lines(path) if start and r.get("step", 0) <= start])


def _remove_stale_temporaries(out: Path) -> None:
    """Temporary files and folders left by a killed run (never named by ``latest``)."""
    for tmp in out.glob(".tmp-ckpt-*"):
        shutil.rmtree(tmp, ignore_errors=True)
    for tmp in out.glob("*.tmp[0-9]*"):
        tmp.unlink(missing_ok=True)


def _check_same_run(cfg: Config, run_cfg: Config, out: Path) -> None:
    a, b = portable_config(cfg), portable_config(run_cfg)
    a["train"].pop("steps"), b["train"].pop("steps")
    if a != b:
        diff = [f"{s}.{k}" for s in a for k in a[s] if a[s][k] != b[s][k]]
        raise LdcodecError(f"--resume: the config differs from the run in {out} ({', '.join(diff)}); "
                           f"resume with the same config or start a new --out")


class Trainer:
    """One training run of a grid cell into run folder ``out``, in this process of ``world``.

    ``model`` is the plain :class:`LSGMModel` (its weights are the same in every process);
    ``resident=None`` keeps the dataset on the device when it takes at most a quarter of the free
    device memory.
    """

    def __init__(self, cfg: Config, out: str | Path, resume: bool = False, device: str = "cpu",
                 progress: bool = True, precision: str = "auto", compile: bool = False,
                 resident: bool | None = None):
        self.cfg, self.out, self.progress = cfg, Path(out), progress
        t, n = cfg.train, distributed.size()
        check_device(device)
        self.precision = resolve_precision(precision, device)
        if compile:
            check_compile(device)
        if t.batch_size % n:
            raise LdcodecError(f"train.batch_size={t.batch_size} (the effective batch) does not split into "
                               f"{n} processes; choose a multiple of {n}")
        self.world, device = distributed.join(device)
        self.device = torch.device(device)
        w = self.world
        cuda = self.device.type == "cuda"
        self.channels_last = cuda and cfg.model.net == "cnn"
        images, _ = load_split(cfg.data.dataset, "train", cfg.data.root or None)
        if resident is None:
            resident = not cuda or images.nbytes <= torch.cuda.mem_get_info(self.device)[0] / 4
        self.batches = Batches(images, t.batch_size, t.seed, flip=cfg.data.flip and cfg.data.dataset == "cifar10",
                               device=device, resident=resident, channels_last=self.channels_last)

        torch.manual_seed(t.seed)
        self.model = LSGMModel(cfg).to(self.device)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=t.lr, weight_decay=t.weight_decay, fused=cuda)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: lr_factor(s, cfg))
        self.ema = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.start = self._restore() if resume else self._check_fresh()
        if w.size > 1:
            distributed.barrier()  # every process has read the run folder before rank 0 writes to it
        self.forward = self.model
        if w.size > 1:
            from torch.nn.parallel import DistributedDataParallel

            with warnings.catch_warnings():  # torch 2.13 renames broadcast_buffers; earlier ones lack the new name
                warnings.simplefilter("ignore", FutureWarning)
                self.forward = DistributedDataParallel(  # buffers are constants or recomputed in every process
                    self.model, device_ids=[self.device.index] if cuda else None, broadcast_buffers=False,
                    find_unused_parameters=t.two_stage or t.stage1_steps > 0)  # a frozen part has no gradient
        if compile:
            self.forward = torch.compile(self.forward)
        self.launch = {"start_step": self.start, "processes": w.size, "batch_per_process": t.batch_size // w.size,
                       "effective_batch": t.batch_size, "lr": t.lr, "backend": w.backend, "device": self.device.type,
                       "precision": self.precision, "compile": compile, "channels_last": self.channels_last,
                       "data_on_device": resident, "torch": str(torch.__version__)}
        if w.main:
            self._record_launch()

    def _check_fresh(self) -> int:
        if (self.out / "latest").exists():
            raise LdcodecError(f"{self.out} already holds a training run; pass --resume to continue it "
                               f"or choose another --out")
        return 0

    def _restore(self) -> int:
        """Load the run's newest checkpoint; a run without one (killed before it) restarts at step 0."""
        out = self.out
        if not (out / "latest").exists():
            if (out / "config.yaml").is_file():
                _check_same_run(self.cfg, load_config_of(out), out)
            return 0
        ckpt = find_checkpoint(out)
        _check_same_run(self.cfg, load_config_of(ckpt), out)
        load_weights(self.model, ckpt / "model.safetensors")
        ema = read_tensors(ckpt / "ema.safetensors")
        if ema.keys() != self.ema.keys():
            raise LdcodecError(f"{ckpt}/ema.safetensors does not fit the model; the checkpoint is damaged")
        for k, v in ema.items():  # floats into place (keeps the memory format); integer tables change size
            if v.dtype.is_floating_point:
                self.ema[k].copy_(v)
            else:
                self.ema[k] = v.to(self.device)
        try:
            state = torch.load(ckpt / "state.pt", map_location=self.device, weights_only=True)
            self.opt.load_state_dict(state["optimizer"])
            self.sched.load_state_dict(state["scheduler"])
            return int(state["step"])
        except (OSError, RuntimeError, KeyError, ValueError, EOFError, pickle.UnpicklingError) as e:
            raise LdcodecError(f"{ckpt}/state.pt is damaged ({e.__class__.__name__}); resume from an earlier "
                               f"checkpoint by pointing {out}/latest at it") from None

    def _record_launch(self) -> None:
        out, w, t = self.out, self.world, self.cfg.train
        out.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(out)
        save_config(self.cfg, out / "config.yaml")
        _keep_log_lines(out / "metrics.jsonl", self.start)
        _write_json_lines(out / "launches.jsonl", _json_lines(out / "launches.jsonl") + [self.launch])
        print(f"{self.cfg.name}: {w.size} process(es) x {t.batch_size // w.size} images = effective batch "
              f"{t.batch_size}, learning rate {t.lr:g} (peak of warm-up + cosine); {self.device}, "
              f"{self.precision}{', compiled' if self.launch['compile'] else ''}, data on "
              f"{'the device' if self.launch['data_on_device'] else 'the host'}; from step {self.start}",
              file=sys.stderr)

    def _autocast(self):
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def _check_finite(self, bad_step: torch.Tensor, bad_loss: torch.Tensor) -> None:
        first = distributed.all_min(bad_step, self.world)
        if first.item() == NO_STEP:
            return
        step = int(first.item())
        value = bad_loss.item() if int(bad_step.item()) == step else float("nan")
        latest = self.out / "latest"
        last_ckpt = latest.read_text().strip() if latest.exists() else "none yet"
        raise LdcodecError(f"loss became {value} at step {step}; the last good checkpoint is kept "
                           f"({self.out}/{last_ckpt}); lower train.lr or raise train.warmup and --resume")

    def run(self) -> dict[str, float]:
        """Train from ``self.start`` to ``train.steps``; returns the last logged metrics (averaged over processes)."""
        cfg, t, w, model = self.cfg, self.cfg.train, self.world, self.model
        writer = None
        if w.main:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(self.out / "tb"))
        log = (self.out / "metrics.jsonl").open("a") if w.main else None
        bar = tqdm(range(self.start, t.steps), initial=self.start, total=t.steps, desc=cfg.name,
                   disable=not (self.progress and w.main), dynamic_ncols=True)
        bad_step = torch.full((), NO_STEP, dtype=torch.int64, device=self.device)
        bad_loss = torch.zeros((), device=self.device)
        last: dict[str, float] = {}
        t0, seen = time.perf_counter(), 0
        model.train()
        for step in bar:
            stage1 = step < t.stage1_steps
            g = torch.Generator(self.device).manual_seed(noise_seed(t.seed, step, w.rank))
            x = self.batches(step, w.rank, w.size)
            with self._autocast():
                terms = self.forward(x, generator=g, train_prior=not stage1,
                                     train_autoencoder=stage1 or not t.two_stage)
            loss = terms["loss"]
            new_bad = ~torch.isfinite(loss) & (bad_step == NO_STEP)
            bad_step = torch.where(new_bad, step, bad_step)
            bad_loss = torch.where(new_bad, loss.detach().float(), bad_loss)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
            self.opt.step()
            self.sched.step()
            ema_update(self.ema, model, t.ema, step)
            seen += t.batch_size
            done = step + 1
            log_now = done % t.log_every == 0 or done == t.steps
            ckpt_now = done % t.ckpt_every == 0 or done == t.steps
            if log_now or ckpt_now:
                self._check_finite(bad_step, bad_loss)
            if log_now:
                values = torch.stack([terms[k].detach().float().mean() for k in LOGGED] + [gnorm.float()])
                values = distributed.all_mean(values, w).tolist()
                last = dict(zip(LOGGED, values[:-1]))
                last.update(step=done, lr=self.sched.get_last_lr()[0], grad_norm=values[-1],
                            images_per_s=seen / (time.perf_counter() - t0))
                if self.device.type == "cuda":
                    last["peak_gib"] = torch.cuda.max_memory_allocated(self.device) / 2 ** 30
                if w.main:
                    log.write(json.dumps(last) + "\n")
                    log.flush()
                    for k, v in last.items():
                        if k != "step":
                            writer.add_scalar(f"train/{k}", v, done)
                bar.set_postfix(loss=f"{last['loss']:.4f}", bpd=f"{last['bpd']:.3f}", mse=f"{last['mse']:.4f}")
            if ckpt_now:
                model.update_tables()
                if w.main:
                    save_checkpoint(self.out, done, cfg, model, ema_state(model, self.ema), {
                        "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(), "step": done,
                        "launch": self.launch})
        if w.main:
            log.close()
            writer.close()
        if w.size > 1:
            distributed.barrier()  # the last checkpoint is complete when any process returns
        return last


def train(cfg: Config, out: str | Path, resume: bool = False, device: str = "cpu", progress: bool = True,
          precision: str = "auto", compile: bool = False, resident: bool | None = None) -> dict[str, float]:
    """Train one grid cell into run folder ``out``; returns the last logged metrics."""
    return Trainer(cfg, out, resume=resume, device=device, progress=progress, precision=precision,
                   compile=compile, resident=resident).run()
