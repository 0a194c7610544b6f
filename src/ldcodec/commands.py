"""What each ``ldcodec`` subcommand does: ``cmd_NAME(args)`` for the parsed arguments of ``ldcodec NAME``.

:mod:`ldcodec.cli` parses the command line and calls them; they raise :class:`LdcodecError` for
errors in the user's input (files, configs, checkpoints, streams), which it prints as one line.
"""

from __future__ import annotations

import argparse
from contextlib import contextmanager
from pathlib import Path

from .errors import LdcodecError
from .files import write_atomic, write_folder_atomic
from .metrics.rate import rate_fields
from .results import rate_text


def cmd_train(a: argparse.Namespace) -> None:
    from . import distributed
    from .config import load_config
    from .train import train

    overrides = list(a.set or [])
    if a.steps is not None:
        overrides.append(f"train.steps={a.steps}")
    if a.data_root is not None:
        overrides.append(f"data.root={a.data_root}")
    if a.resume and a.config is None:
        a.config = str(Path(a.out) / "config.yaml")
        if not Path(a.config).is_file():
            raise LdcodecError(f"{a.out} holds no run to resume (no config.yaml); give the CONFIG to start it")
    if a.config is None:
        raise LdcodecError("give a CONFIG (e.g. configs/grid/mnist-mlp-ddpm-uncond-gauss.yaml), or --resume a run")
    cfg = load_config(a.config, overrides)
    try:
        last = train(cfg, a.out, resume=a.resume, device=a.device, precision=a.precision, compile=a.compile,
                     resident={"auto": None, "device": True, "host": False}[a.data_on])
    finally:
        distributed.leave()
    if distributed.is_main():
        print(f"trained {cfg.name} to step {cfg.train.steps}: " + ", ".join(f"{k}={v:.4g}" for k, v in last.items()))
        print(f"checkpoint: {a.out} (config.yaml, latest, metrics.jsonl, launches.jsonl, tb/)")


def cmd_reconstruct(a: argparse.Namespace) -> None:
    from .demo import reconstruction_grid

    path = reconstruction_grid(checkpoint_of(a), a.output, n=a.n, data_root=a.data_root, device=a.device)
    print(f"wrote {path}: test images (top) and their reconstructions (bottom)")


def cmd_sample(a: argparse.Namespace) -> None:
    import torch

    from .checkpoint import load_model
    from .data import to_uint8
    from .viz import save_grid

    model, cfg, _ = load_model(checkpoint_of(a), device=a.device)
    opts = {"eta": a.eta} if a.method == "ddim" else {}
    x = model.generate(a.n, method=a.method, steps=a.steps, generator=torch.Generator(a.device).manual_seed(a.seed),
                       **opts)
    per_row = max(1, int(a.n ** 0.5))
    print(f"wrote {save_grid([to_uint8(x)], a.output, per_row=per_row)}: {a.n} samples of {cfg.name} "
          f"({a.method}, {a.steps} steps)")


def cmd_likelihood(a: argparse.Namespace) -> None:
    from .diffusion.likelihood import checkpoint_likelihood

    if a.limit < 1 or a.draws < 1:
        raise LdcodecError(f"--limit and --draws must be at least 1 (got {a.limit} and {a.draws})")
    r = checkpoint_likelihood(checkpoint_of(a), a.data_root, a.limit, a.draws, a.limit if a.ode else 0, a.device)
    terms = "rec - H(q) + CE" + (" + R(y)" if r["mode"] == "C" else "")
    print(f"{r['cell']} (mode {r['mode']}, prior {r['prior']}, {r['latent']} latent), {r['test_images']} test "
          f"images, {r['draws']} draws")
    print(f"negative ELBO ({terms}): {r['neg_elbo_bpd']:.4f} +- {r['stderr']:.4f} bits/dim")
    if a.ode and "neg_elbo_ode_bpd" in r:
        print(f"ODE bound (CE -> -log p_ode(z0)): {r['neg_elbo_ode_bpd']:.4f} +- {r['ode_stderr']:.4f} bits/dim "
              f"({r['ode_images']} images)")
    elif a.ode:
        print("ODE bound: none, the prior is N(0, I) (its cross-entropy above is already exact)")
    if r["latent"] == "delta":
        print("note: a delta latent has no entropy term, so these are code lengths for comparison, not bounds")


def checkpoint_of(a: argparse.Namespace, required: bool = True) -> str | None:
    """The checkpoint a command was given: its path, or the folder of the shipped ``--model``."""
    from . import zoo

    if a.checkpoint is not None and a.model is not None:
        raise LdcodecError(f"give a checkpoint or --model, not both ({a.checkpoint} and --model {a.model})")
    if a.model is not None:
        return str(zoo.model_path(a.model))
    if a.checkpoint is None and required:
        raise LdcodecError(f"no model: give a checkpoint (a run folder) or --model NAME, one of the shipped "
                           f"models: {', '.join(zoo.names()) or 'none'}")
    return a.checkpoint


def split_paths(a: argparse.Namespace, name: str) -> tuple[str, str]:
    """``(checkpoint, NAME)`` from the ``[CHECKPOINT] NAME`` positionals (``--model``: NAME alone)."""
    want = 1 if a.model is not None else 2
    if len(a.paths) != want:
        usage = f"--model {a.model} {name}" if a.model is not None else f"CHECKPOINT {name} (or --model NAME {name})"
        raise LdcodecError(f"expected {usage}, got {len(a.paths)} path(s): {' '.join(a.paths)}")
    a.checkpoint = None if a.model is not None else a.paths[0]
    return checkpoint_of(a), a.paths[-1]


def cmd_models(a: argparse.Namespace) -> None:
    from . import zoo

    if not zoo.names():
        print("no shipped models in this installation")
    for name in zoo.names():
        c = zoo.card(name)
        print(f"{name:<14} mode {c['mode']}  {c['dataset']:<8} id {c['model_id']}  {c['summary']}")


def cmd_quickstart(a: argparse.Namespace) -> None:
    from .demo import quickstart

    path = quickstart(a.model, Path(a.out), n=a.n, data_root=a.data_root, device=a.device)
    print(f"wrote {path}: originals (top), then the decode of each stream (labelled with its rate and bits)")


def _load_codec(checkpoint: str, device: str):
    """The checkpoint's model and its registered codec (``diffc`` for mode U, ``cdc`` for mode C)."""
    from .checkpoint import load_model
    from .codecs import model_codec

    model, _, _ = load_model(checkpoint, device=device)
    return model, model_codec(model, checkpoint, device=device)


# The library names its arguments; these commands name them by their flags in its errors.
COMPRESS_FLAGS = {"t_stop = ": "--t ", "coding_steps = ": "--coding-steps ", "max_steps = ": "--max-steps "}


@contextmanager
def in_flags(flags: dict[str, str]):
    """Re-raise a library ``LdcodecError`` with its argument names (``"coding_steps = "``) written as
    the command's flags (``"--coding-steps "``)."""
    try:
        yield
    except LdcodecError as e:
        message = str(e)
        for name, flag in flags.items():
            message = message.replace(name, flag)
        raise LdcodecError(message) from None


def cmd_compress(a: argparse.Namespace) -> None:
    import time

    from .data import load_images, to_tensor

    checkpoint, source = split_paths(a, "INPUT")
    model, codec = _load_codec(checkpoint, a.device)
    images, _ = load_images(source, model.image_shape)  # a PNG, a folder of PNGs or an .npz -> uint8 NHWC
    rate = {k: v for k, v in (("t_stop", a.t), ("bits", a.bits), ("coding_steps", a.coding_steps),
                              ("decode", a.decode)) if v is not None}
    start = time.perf_counter()
    with in_flags(COMPRESS_FLAGS):
        c = codec.compress(to_tensor(images), rate)
    data = codec.frame(c)
    seconds = time.perf_counter() - start
    out = Path(a.output)
    write_atomic(out, lambda tmp: tmp.write_bytes(data))
    r = codec.rates(c, data)
    estimated = "n/a" if r["bits_estimated"] is None else f"{r['bits_estimated']:.1f}"
    if r["bits_ideal"] is not None:
        estimated += f", ideal {r['bits_ideal']:.1f}"
    print(f"wrote {out}: {c.count} image(s), codec {codec.name} ({rate_text(c.rate_setting)}), {len(data)} bytes")
    print(f"bits per image: actual {r['bits_actual']:.1f} ({r['bpp_actual']:.4f} bpp), estimated {estimated}, "
          f"alone in a file {r['bits_file']:.1f} ({r['bpp_file']:.4f} bpp)")
    print(f"time per image: {1000 * seconds / c.count:.1f} ms")


def cmd_decompress(a: argparse.Namespace) -> None:
    import time

    import numpy as np

    from .data import save_png, to_uint8

    checkpoint, path = split_paths(a, "STREAM")
    try:
        stream = Path(path).read_bytes()
    except OSError as e:
        raise LdcodecError(f"{path}: cannot read the stream ({e.strerror})") from None
    model, codec = _load_codec(checkpoint, a.device)
    opts = {k: v for k, v in (("decode", a.decode), ("max_steps", a.max_steps)) if v is not None}
    start = time.perf_counter()
    with in_flags(COMPRESS_FLAGS):
        images = to_uint8(codec.decompress_file(stream, **opts))
    seconds = time.perf_counter() - start
    out = Path(a.output)
    if out.suffix == ".npz":
        write_atomic(out, lambda tmp: np.savez_compressed(tmp, images=images))
    elif out.suffix == ".png":
        if len(images) != 1:
            raise LdcodecError(f"the stream holds {len(images)} images: give -o a folder or a .npz file")
        write_atomic(out, lambda tmp: save_png(images[0], tmp))
    else:
        def write_pngs(folder: Path) -> None:
            for i, im in enumerate(images):
                save_png(im, folder / f"{i:06d}.png")

        write_folder_atomic(out, write_pngs)
    r = rate_fields({"actual": 8 * len(stream) / len(images)}, codec.image_shape)
    print(f"wrote {out}: {len(images)} image(s); {r['bits_actual']:.1f} bits per image ({r['bpp_actual']:.4f} bpp) "
          f"actual; {1000 * seconds / len(images):.1f} ms per image")


def _csv(text: str, cast=str) -> tuple:
    try:
        return tuple(cast(v.strip()) for v in text.split(",") if v.strip())
    except ValueError:
        raise LdcodecError(f"cannot read {text!r} as a comma-separated list of {cast.__name__}") from None


def parse_qualities(text: str | None) -> dict[str, list[dict]]:
    """``"jpeg=10,50;webp=5"`` -> ``{"jpeg": [{"quality": 10}, {"quality": 50}], "webp": [{"quality": 5}]}``."""
    out = {}
    for part in (text or "").split(";"):
        if not part.strip():
            continue
        name, _, values = part.partition("=")
        try:
            out[name.strip()] = [{"quality": int(v)} for v in values.split(",")]
        except ValueError:
            raise LdcodecError(f"--qualities {text!r}: write codec=q1,q2;codec=q1 with integer qualities") from None
    return out


def cmd_evaluate(a: argparse.Namespace) -> None:
    from .codecs import baselines, decode_names
    from .codecs.diffc import DEFAULT_TIMES
    from .diffusion.decodes import knob_eta
    from .baselines.learned import LAMBDA_START
    from .evaluate import PERCEPTION, Settings, evaluate
    from .results import write_results

    chosen = _csv(a.baseline) if a.baseline else ()
    bad = ([b for b in chosen if b not in baselines()] + [p for p in _csv(a.perception) if p not in PERCEPTION]
           + [d for d in _csv(a.decodes) if d not in decode_names() and knob_eta(d) is None])
    if bad:
        raise LdcodecError(f"unknown baseline, estimator or decode {', '.join(bad)}; baselines: "
                           f"{', '.join(baselines())}; estimators: {', '.join(PERCEPTION)}; decodes: "
                           f"{', '.join(decode_names())}, eta=X (X in [0, 1])")
    steps = _csv(a.coding_steps, int) if a.coding_steps else (None,)
    times = _csv(a.t_values, float) if a.t_values else DEFAULT_TIMES
    knobs = [{"bits": b} for b in _csv(a.bits_values, float)] if a.bits_values else [{"t_stop": t} for t in times]
    mode_u = [{**knob, **({} if k is None else {"coding_steps": k})} for k in steps for knob in knobs]
    settings = Settings(mode_u=mode_u, rates=parse_qualities(a.qualities), decodes=_csv(a.decodes),
                        perception=_csv(a.perception), critic_steps=a.critic_steps, baselines=chosen,
                        learned_lambdas=_csv(a.learned_lambdas, float), learned_steps=a.learned_steps,
                        learned_lambda_start=(LAMBDA_START if a.learned_lambda_start is None
                                              else a.learned_lambda_start or None), learned_dir=a.learned_dir,
                        ideal_stride=a.ideal_stride, per_image=a.per_image, seed=a.seed,
                        device=a.device)
    log = Path(f"{a.output}.partial.jsonl")
    if not a.resume:
        log.unlink(missing_ok=True)
    results = evaluate(checkpoint_of(a, required=False), a.dataset, a.split, a.limit, a.data_root, a.classifier, settings,
                       gaussian=(a.gaussian_dim, a.gaussian_ratio), images_dir=a.images, resume=log,
                       label=a.label)
    json_path, csv_path = write_results(results, a.output)
    log.unlink(missing_ok=True)
    print(f"wrote {json_path} and {csv_path}: {len(results['points'])} operating points on {results['images']} "
          f"{results['dataset']} {results['split']} images")
    if a.report:
        from .report import render_report

        print(f"wrote {render_report([results], a.report)}")
    for p in results["points"]:
        print(f"  {p['model']:<34} {p['decode'] or '':<8} {rate_text(p['rate_setting']):<16} "
              f"bpp={p['bpp_actual']:.4f} (file {p['bpp_file']:.4f}) psnr={p['psnr']:.2f}")


def cmd_sweep(a: argparse.Namespace) -> None:
    from .sweep import Protocol, select_cells, sweep

    if a.limit < 2:
        raise LdcodecError(f"--limit {a.limit}: the perception estimators need at least 2 test images")
    overrides = list(a.set or []) + ([f"train.steps={a.steps}"] if a.steps is not None else [])
    overrides += [f"data.root={a.data_root}"] if a.data_root is not None else []
    protocol = Protocol(limit=a.limit)
    cells = select_cells(a.grid, a.cells, overrides, protocol)
    results = sweep(cells, a.out, protocol, device=a.device, data_root=a.data_root,
                    known=None if a.known == "none" else a.known, note=a.note,
                    others=select_cells(a.grid, "*", overrides, protocol))
    failed = [c.name for c, r in zip(cells, results) if r["status"] != "ok"]
    print(f"wrote {Path(a.out) / 'summary.md'}, summary.csv{' and report.html' * (len(failed) < len(cells))}: "
          f"{len(cells) - len(failed)} of {len(cells)} cell(s) finished"
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    if failed:
        raise LdcodecError(f"{len(failed)} cell(s) failed; their errors are in {Path(a.out) / 'summary.md'} and "
                           f"{Path(a.out) / 'cells'}; the next sweep retries them")


def cmd_train_classifier(a: argparse.Namespace) -> None:
    import torch

    from .data import load_split, to_tensor
    from .metrics.features import accuracy, default_classifier_path, save_classifier, train_classifier

    x, y = load_split(a.dataset, "train", a.data_root)
    xt, yt = load_split(a.dataset, "test", a.data_root)
    model = train_classifier(to_tensor(x), torch.from_numpy(y), epochs=a.epochs, device=a.device,
                             max_steps=a.max_steps, seed=a.seed)
    acc = accuracy(model, to_tensor(xt).to(a.device), torch.from_numpy(yt).to(a.device))
    out = Path(a.out) if a.out else default_classifier_path(a.dataset)
    path = save_classifier(model, out, {"dataset": a.dataset, "train_images": len(x), "test_accuracy": acc})
    print(f"wrote {path}: test accuracy {100 * acc:.2f}% on {len(xt)} {a.dataset} test images")


def cmd_report(a: argparse.Namespace) -> None:
    from .report import render_report
    from .results import load_results

    path = render_report(load_results(a.results), a.output)
    print(f"wrote {path}")


def cmd_demo(a: argparse.Namespace) -> None:
    from .demo import run_demo

    run_demo(Path(a.out), steps=a.steps, device=a.device)


def cmd_data_download(a: argparse.Namespace) -> None:
    from .data import download

    for path in download(a.dataset, a.to):
        print(path)
