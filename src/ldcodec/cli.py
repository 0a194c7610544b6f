"""The ``ldcodec`` command line. Every subcommand's ``--help`` explains its options.

Errors in the user's input (files, configs, checkpoints, streams) print one line to stderr and
exit with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import LdcodecError
from .metrics.rate import rate_fields
from .files import write_atomic
from .results import rate_text


def _device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")


def _data_root(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", metavar="DIR", default=None,
                   help="folder of .npz shards (DIR/mnist/train-00.npz ...); default $LDCODEC_DATA, "
                        "else the built-in MNIST sample")


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

    path = reconstruction_grid(a.checkpoint, a.output, n=a.n, data_root=a.data_root, device=a.device)
    print(f"wrote {path}: test images (top) and their reconstructions (bottom)")


def cmd_sample(a: argparse.Namespace) -> None:
    import torch

    from .checkpoint import load_model
    from .data import to_uint8
    from .viz import save_grid

    model, cfg, _ = load_model(a.checkpoint, device=a.device)
    opts = {"eta": a.eta} if a.method == "ddim" else {}
    x = model.generate(a.n, method=a.method, steps=a.steps, generator=torch.Generator(a.device).manual_seed(a.seed),
                       **opts)
    per_row = max(1, int(a.n ** 0.5))
    print(f"wrote {save_grid([to_uint8(x)], a.output, per_row=per_row)}: {a.n} samples of {cfg.name} "
          f"({a.method}, {a.steps} steps)")


def _read_images(path: str, shape: tuple[int, int, int]):
    """INPUT of ``compress``: a PNG file, a folder of PNGs or an ``.npz`` -> uint8 NHWC, names."""
    from .data import load_images

    return load_images(path, shape)


def _load_codec(checkpoint: str, device: str):
    """The checkpoint's model and its registered codec (``diffc`` for mode U, ``cdc`` for mode C)."""
    from .checkpoint import load_model
    from .codecs import model_codec

    model, _, _ = load_model(checkpoint, device=device)
    return model, model_codec(model, checkpoint, device=device)


def cmd_compress(a: argparse.Namespace) -> None:
    import time

    from .data import to_tensor

    model, codec = _load_codec(a.checkpoint, a.device)
    images, _ = _read_images(a.input, model.image_shape)
    rate = {k: v for k, v in (("t_stop", a.t), ("bits", a.bits), ("coding_steps", a.coding_steps),
                              ("decode", a.decode)) if v is not None}
    start = time.perf_counter()
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
    import shutil
    import time

    import numpy as np

    from .data import save_png, to_uint8

    try:
        stream = Path(a.stream).read_bytes()
    except OSError as e:
        raise LdcodecError(f"{a.stream}: cannot read the stream ({e.strerror})") from None
    model, codec = _load_codec(a.checkpoint, a.device)
    if a.max_steps is not None and a.max_steps < 0:
        raise LdcodecError(f"--max-steps {a.max_steps} must be >= 0 (0 decodes z_1 alone)")
    opts = {k: v for k, v in (("decode", a.decode), ("max_steps", a.max_steps)) if v is not None}
    start = time.perf_counter()
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
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise LdcodecError(f"{out} exists and is not an empty folder; choose a new output folder")
        tmp = out.with_name(f".tmp-{out.name}")
        shutil.rmtree(tmp, ignore_errors=True)  # a stale folder of an interrupted run
        try:
            tmp.mkdir(parents=True)
            for i, im in enumerate(images):
                save_png(im, tmp / f"{i:06d}.png")
            if out.exists():
                out.rmdir()
            tmp.replace(out)
        except OSError as e:
            raise LdcodecError(f"{out}: cannot write the output folder ({e.strerror or e})") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
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
    diffc = [{"t_stop": t, **({} if k is None else {"coding_steps": k})} for k in steps for t in _csv(a.t_values, float)]
    settings = Settings(rates={"diffc": diffc, **parse_qualities(a.qualities)}, decodes=_csv(a.decodes),
                        perception=_csv(a.perception), critic_steps=a.critic_steps, baselines=chosen,
                        learned_lambdas=_csv(a.learned_lambdas, float), learned_steps=a.learned_steps,
                        learned_lambda_start=(LAMBDA_START if a.learned_lambda_start is None
                                              else a.learned_lambda_start or None), ideal_stride=a.ideal_stride, seed=a.seed,
                        device=a.device)
    log = Path(f"{a.output}.partial.jsonl")
    if not a.resume:
        log.unlink(missing_ok=True)
    results = evaluate(a.checkpoint, a.dataset, a.split, a.limit, a.data_root, a.classifier, settings,
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
    from .report import load_results, render_report

    path = render_report(load_results(a.results), a.output)
    print(f"wrote {path}")


def cmd_demo(a: argparse.Namespace) -> None:
    from .demo import run_demo

    run_demo(Path(a.out), steps=a.steps, device=a.device)


def cmd_data_download(a: argparse.Namespace) -> None:
    from .data import download

    for path in download(a.dataset, a.to):
        print(path)


def build_parser() -> argparse.ArgumentParser:
    from .codecs import baselines
    from .diffusion.decodes import DECODES
    from .diffusion.samplers import SAMPLERS

    p = argparse.ArgumentParser(
        prog="ldcodec",
        description="Lossy image compression with a diffusion prior in the latent space of a VAE (LSGM), "
                    "and measurement of its rate-distortion-perception trade-off.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    t = sub.add_parser("train", help="train one grid cell (autoencoder + latent prior)",
                       description="Train a model from a YAML config into a run folder; checkpoints, "
                                   "metrics.jsonl and TensorBoard events go to --out. Under torchrun "
                                   "(torchrun --nproc_per_node=N -m ldcodec train ...) it trains data-parallel: "
                                   "train.batch_size is the effective batch, split over the N processes.")
    t.add_argument("config", nargs="?", help="YAML config, e.g. configs/grid/mnist-mlp-ddpm-uncond-gauss.yaml")
    t.add_argument("--out", required=True, help="run folder (created)")
    t.add_argument("--steps", type=int, help="total training steps (overrides train.steps)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint (from step 0 if it "
                                                             "was stopped before its first)")
    t.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override a config key (repeatable)")
    t.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="autocast precision: auto = bf16 on a CUDA GPU that has it, else fp32 (bf16 is refused "
                        "on the CPU)")
    t.add_argument("--compile", action="store_true", help="torch.compile the model (minutes of compilation first)")
    t.add_argument("--data-on", default="auto", choices=["auto", "device", "host"],
                   help="where the training set lives: auto = on the device if it takes at most a quarter of its "
                        "free memory (always on the CPU), else on the host with a copy per step")
    _data_root(t)
    _device(t)
    t.set_defaults(func=cmd_train)

    r = sub.add_parser("reconstruct", help="PNG grid of test images beside their reconstructions",
                       description="Encode and decode test images with a checkpoint's EMA weights.")
    r.add_argument("checkpoint", help="run folder or ckpt-NNNNNNNN folder")
    r.add_argument("-o", "--output", required=True, help="PNG file to write")
    r.add_argument("-n", type=int, default=16, help="number of test images (default 16)")
    _data_root(r)
    _device(r)
    r.set_defaults(func=cmd_reconstruct)

    s = sub.add_parser("sample", help="draw images from a model's prior into a PNG grid",
                       description="Sample z_1 from the noise prior, run the reverse diffusion, decode.")
    s.add_argument("checkpoint", help="run folder or ckpt-NNNNNNNN folder")
    s.add_argument("-n", type=int, default=64, help="number of images (default 64)")
    s.add_argument("-o", "--output", required=True, help="PNG file to write")
    s.add_argument("--method", default="ancestral", choices=list(SAMPLERS),
                   help="sampler (default ancestral)")
    s.add_argument("--steps", type=int, default=200, help="sampler steps (ignored by the adaptive ode)")
    s.add_argument("--eta", type=float, default=0.0, help="DDIM eta (0 = deterministic)")
    s.add_argument("--seed", type=int, default=0)
    _device(s)
    s.set_defaults(func=cmd_sample)

    c = sub.add_parser("compress", help="compress images into a bitstream",
                       description="Compress a PNG, a folder of PNGs or an .npz shard with a trained model. Mode U "
                                   "(unconditional prior) takes the rate as --t (stop time: smaller t = more bits) "
                                   "or --bits (budget per image); mode C (conditional) has the model's one rate.")
    c.add_argument("checkpoint", help="run folder or ckpt-NNNNNNNN folder")
    c.add_argument("input", help="a .png file, a folder of .png files, or an .npz shard (array 'images')")
    c.add_argument("-o", "--output", required=True, help="stream file to write")
    rate = c.add_mutually_exclusive_group()
    rate.add_argument("--t", type=float, help="mode U: stop time in (0, 1) of the coded chain")
    rate.add_argument("--bits", type=float, help="mode U: bit budget per image (stop when it is reached)")
    c.add_argument("--coding-steps", type=int, help="mode U: coded steps from t = 1 (default: the model's "
                   "codec.coding_steps; more steps pay off at higher rates)")
    c.add_argument("--decode", default="flow", choices=list(DECODES),
                   help="decoder's default z_t -> z0 method stored in the stream (default flow)")
    _device(c)
    c.set_defaults(func=cmd_compress)

    dc = sub.add_parser("decompress", help="decode a bitstream into PNGs (or an .npz)",
                        description="Decode a stream made by `ldcodec compress` with the same checkpoint.")
    dc.add_argument("checkpoint", help="the checkpoint that made the stream")
    dc.add_argument("stream", help="stream file")
    dc.add_argument("-o", "--output", required=True,
                    help="a .png (one image), an .npz (array 'images'), or a new folder of PNGs")
    dc.add_argument("--decode", help=f"override the stream's decode method: {', '.join(DECODES)}, or the "
                    "distortion-perception knob eta=X (DDIM's eta, X in [0, 1]: 0 is flow, 1 ancestral)")
    dc.add_argument("--max-steps", type=int, help="mode U: decode only the first K coded steps (progressive)")
    _device(dc)
    dc.set_defaults(func=cmd_decompress)

    e = sub.add_parser("evaluate", help="rate, distortion and perception of a model and baselines -> JSON + CSV",
                       description="Sweep the rate knob (mode U: several t, each with the three decodes; mode C: "
                                   "the model's rate) and baselines on the same images; write results.json (schema "
                                   "in docs/results-schema.md) and results.csv. CHECKPOINT may be omitted to "
                                   "evaluate baselines only, or with --dataset gaussian (theory check).")
    e.add_argument("checkpoint", nargs="?", help="run folder or ckpt-NNNNNNNN folder")
    e.add_argument("--dataset", choices=["mnist", "cifar10", "gaussian"], help="default: the checkpoint's")
    e.add_argument("--split", default="test")
    e.add_argument("--images", metavar="DIR", help="evaluate on a folder of PNGs instead of a split (no labels)")
    e.add_argument("--limit", type=int, default=1000, help="images to evaluate (default 1000)")
    e.add_argument("-o", "--output", required=True, help="results JSON path (a .csv is written beside it)")
    e.add_argument("--label", help="the model's series name in the results and report (default: the checkpoint "
                                   "config's name); two checkpoints of one config need two labels")
    e.add_argument("--baseline", help=f"comma-separated registered codecs: {','.join(baselines())}")
    e.add_argument("--report", metavar="HTML", help="also write the HTML report of these results")
    e.add_argument("--resume", action="store_true",
                   help="take the points an interrupted run of the same evaluation finished from OUTPUT.partial.jsonl "
                        "(every finished rate setting is logged there as it is measured) instead of measuring them again")
    e.add_argument("--t-values", default="0.7,0.5,0.35,0.25,0.15", help="mode U stop times to sweep")
    e.add_argument("--coding-steps", help="mode U coding steps to sweep, e.g. 4,16 (default: the model's)")
    e.add_argument("--decodes", default=",".join(DECODES),
                   help="decode methods to evaluate; mode U and C also take eta=X (DDIM's eta in [0, 1]), "
                        "e.g. flow,mse,realism,eta=0.25,eta=0.5,eta=0.75 for the decoder-side "
                        "distortion-perception curve")
    e.add_argument("--perception", default="fid,kid,knn_kl,f_kl,f_js,f_tv,f_chi2,f_hellinger",
                   help="perception estimators to run")
    e.add_argument("--critic-steps", type=int, default=300, help="training steps of each f-divergence critic")
    e.add_argument("--classifier", help="feature classifier (default runs/classifiers/classifier-DATASET)")
    e.add_argument("--qualities", help="classical qualities, e.g. 'jpeg=5,20,50,90;webp=5,50'")
    e.add_argument("--learned-lambdas", default="0.002,0.01,0.05", help="Ballé baselines' rate-distortion lambdas")
    e.add_argument("--ideal-stride", type=int, default=1,
                   help="mode U: the ideal rate's quadrature uses every n-th coding level (one denoiser call "
                        "per level and image; 4 costs a quarter, within 1%% on the exact Gaussian source)")
    e.add_argument("--learned-steps", type=int, default=2000, help="training steps of each Ballé baseline")
    e.add_argument("--learned-lambda-start", type=float,
                   help="a Ballé baseline with a smaller lambda starts training at this lambda (default "
                        "0.01) and decays to its own over the first half of the steps (trained at a small "
                        "lambda from the start it can collapse to the mean image); 0 turns the warm-up off")
    e.add_argument("--gaussian-dim", type=int, default=16, help="gaussian: source dimension")
    e.add_argument("--gaussian-ratio", type=float, default=0.7, help="gaussian: variances ratio^i, i < dim")
    e.add_argument("--seed", type=int, default=0)
    _data_root(e)
    _device(e)
    e.set_defaults(func=cmd_evaluate)

    sw = sub.add_parser("sweep", help="train, evaluate and tabulate grid cells in turn (resumable)",
                        description="For each grid config whose cell name matches --cells: train it into "
                                    "OUT/runs/CELL-HASH (resuming an interrupted run from its checkpoint), evaluate "
                                    "it under one protocol for all cells (the first --limit test images; mode U at "
                                    "32, 64, 128, 256, 512 bits per image on MNIST and 0.1, 0.25, 0.5, 0.75, 1 bpp "
                                    "on CIFAR-10; mode C at its one rate; every decode and perception estimator), "
                                    "and write OUT/cells/CELL-HASH.json. HASH covers the resolved config and the "
                                    "protocol: a finished cell (in OUT/cells or --known) is skipped, a changed one "
                                    "reruns. A failing cell is recorded with its error and the rest still run. "
                                    "OUT/summary.md (budgets, operating points, effects of the four choices), "
                                    "summary.csv and report.html are rewritten after each cell.")
    sw.add_argument("--cells", default="*", metavar="GLOB", help="cell names to run, e.g. 'mnist-*' or "
                    "'*-cond-delta' (default: all 32)")
    sw.add_argument("--out", required=True, metavar="DIR", help="sweep folder (created; reuse it to resume)")
    sw.add_argument("--steps", type=int, help="training steps of every cell (overrides train.steps; part of the hash)")
    sw.add_argument("--limit", type=int, default=1000, help="test images evaluated per cell (default 1000)")
    sw.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                    help="override a config key in every cell (repeatable; part of the hash)")
    sw.add_argument("--grid", default="configs/grid", metavar="DIR", help="grid configs (default configs/grid)")
    sw.add_argument("--known", default="benchmarks/results/sweep", metavar="DIR",
                    help="folder of committed cell results that count as finished (default "
                         "benchmarks/results/sweep; 'none' to ignore)")
    sw.add_argument("--note", default="", help="label stored in every cell result and the summary, e.g. "
                    "'short CPU budget'")
    _data_root(sw)
    _device(sw)
    sw.set_defaults(func=cmd_sweep)

    tc = sub.add_parser("train-classifier", help="train the feature classifier used for FID/KID/kNN/accuracy",
                        description="Train the project's own classifier (no weights can be downloaded) and save it "
                                    "where `ldcodec evaluate` looks by default.")
    tc.add_argument("--dataset", required=True, choices=["mnist", "cifar10"])
    tc.add_argument("--out", help="path without suffix (default runs/classifiers/classifier-DATASET)")
    tc.add_argument("--epochs", type=int, default=10)
    tc.add_argument("--max-steps", type=int, help="stop after this many steps")
    tc.add_argument("--seed", type=int, default=0)
    _data_root(tc)
    _device(tc)
    tc.set_defaults(func=cmd_train_classifier)

    rp = sub.add_parser("report", help="one self-contained HTML page from results JSON files",
                        description="Curves, planes, reconstruction grids and tables from `ldcodec evaluate` output.")
    rp.add_argument("results", nargs="+", help="results JSON files")
    rp.add_argument("-o", "--output", required=True, help="HTML file to write")
    rp.set_defaults(func=cmd_report)

    d = sub.add_parser("demo", help="train a small MNIST model on the built-in sample and show what it does",
                       description="Train configs/demo.yaml on the built-in MNIST sample (no download), then "
                                   "write reconstructions and samples as PNG grids into --out.")
    d.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    d.add_argument("--steps", type=int, default=None, help="training steps (default: the demo config's)")
    _device(d)
    d.set_defaults(func=cmd_demo)

    data = sub.add_parser("data", help="dataset utilities (download to .npz shards)")
    dsub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    dl = dsub.add_parser("download", help="download MNIST or CIFAR-10 with torchvision and write .npz shards")
    dl.add_argument("dataset", choices=["mnist", "cifar10"])
    dl.add_argument("--to", required=True, metavar="DIR", help="data root; shards go to DIR/DATASET/")
    dl.set_defaults(func=cmd_data_download)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except LdcodecError as e:
        print(f"ldcodec: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ldcodec: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
