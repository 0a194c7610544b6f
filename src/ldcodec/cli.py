"""The ``ldcodec`` command line: its parser and entry point. Every subcommand's ``--help`` explains
its options; what each one does is in :mod:`ldcodec.commands`.

Errors in the user's input (files, configs, checkpoints, streams) print one line to stderr and
exit with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import sys

from . import commands
from .errors import LdcodecError


def _runs(p: argparse.ArgumentParser, func, data: bool = False) -> None:
    """The options every subcommand that runs a model shares (``--data-root`` if it reads a dataset,
    ``--device``), and the command ``p`` calls."""
    if data:
        p.add_argument("--data-root", metavar="DIR", default=None,
                       help="folder of .npz shards (DIR/mnist/train-00.npz ...); default $LDCODEC_DATA, "
                            "else the built-in MNIST sample")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.set_defaults(func=func)


def _checkpoint(p: argparse.ArgumentParser, what: str = "run folder or ckpt-NNNNNNNN folder") -> None:
    """The model a command uses: a checkpoint path, or ``--model NAME`` for a shipped model."""
    p.add_argument("checkpoint", nargs="?", help=f"{what} (or give --model)")
    p.add_argument("--model", metavar="NAME", help="a shipped model instead of a checkpoint (ldcodec models lists them)")


def _paths(p: argparse.ArgumentParser, name: str, what: str) -> None:
    """``[CHECKPOINT] NAME`` positionals (the checkpoint left out with ``--model``): one ``nargs='+'``
    list, so that options may stand between them as before."""
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help=f"[CHECKPOINT] {name}: the checkpoint (a run folder or ckpt-NNNNNNNN folder; left out with "
                        f"--model), then {what}")
    p.add_argument("--model", metavar="NAME", help="a shipped model instead of a checkpoint (ldcodec models lists them)")


def build_parser() -> argparse.ArgumentParser:
    from .codecs import baselines
    from .diffusion.decodes import DECODES
    from .codecs.diffc import DEFAULT_TIMES
    from .diffusion.samplers import SAMPLERS
    from .evaluate import Settings

    defaults = Settings()  # evaluate's defaults are defined once, in Settings

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
    _runs(t, commands.cmd_train, data=True)

    r = sub.add_parser("reconstruct", help="PNG grid of test images beside their reconstructions",
                       description="Encode and decode test images with a checkpoint's EMA weights.")
    _checkpoint(r)
    r.add_argument("-o", "--output", required=True, help="PNG file to write")
    r.add_argument("-n", type=int, default=16, help="number of test images (default 16)")
    _runs(r, commands.cmd_reconstruct, data=True)

    s = sub.add_parser("sample", help="draw images from a model's prior into a PNG grid",
                       description="Sample z_1 from the noise prior, run the reverse diffusion, decode.")
    _checkpoint(s)
    s.add_argument("-n", type=int, default=64, help="number of images (default 64)")
    s.add_argument("-o", "--output", required=True, help="PNG file to write")
    s.add_argument("--method", default="ancestral", choices=list(SAMPLERS),
                   help="sampler (default ancestral)")
    s.add_argument("--steps", type=int, default=200, help="sampler steps (ignored by the adaptive ode)")
    s.add_argument("--eta", type=float, default=0.0, help="DDIM eta (0 = deterministic)")
    s.add_argument("--seed", type=int, default=0)
    _runs(s, commands.cmd_sample)

    lk = sub.add_parser("likelihood", help="test-set negative ELBO in bits/dim (and the ODE bound)",
                        description="The model's negative ELBO in bits per dimension (rec - H(q) + CE, plus the "
                                    "code's rate in mode C; the bpd of training, per 8-bit pixel bin) on the first "
                                    "--limit test images of the checkpoint's dataset, averaged over --draws draws "
                                    "of z0 and of the diffusion time, with its standard error. --ode also gives "
                                    "the bound with the latent's cross-entropy replaced by the probability-flow "
                                    "ODE's -log p(z0) (Hutchinson trace; an adaptive ODE solve per batch: slow).")
    _checkpoint(lk)
    lk.add_argument("--limit", type=int, default=1000, help="test images (default 1000)")
    lk.add_argument("--draws", type=int, default=4, help="Monte-Carlo draws per image (default 4)")
    lk.add_argument("--ode", action="store_true", help="also the ODE likelihood bound (diffusion prior)")
    _runs(lk, commands.cmd_likelihood, data=True)

    c = sub.add_parser("compress", help="compress images into a bitstream",
                       description="Compress a PNG, a folder of PNGs or an .npz shard with a trained model. Mode U "
                                   "(unconditional prior) takes the rate as --t (stop time: smaller t = more bits) "
                                   "or --bits (budget per image); mode C (conditional) has the model's one rate.")
    _paths(c, "INPUT", "a .png file, a folder of .png files, or an .npz shard (array 'images')")
    c.add_argument("-o", "--output", required=True, help="stream file to write")
    rate = c.add_mutually_exclusive_group()
    rate.add_argument("--t", type=float, help="mode U: stop time in (0, 1) of the coded chain")
    rate.add_argument("--bits", type=float, help="mode U: bit budget per image (stop when it is reached)")
    c.add_argument("--coding-steps", type=int, help="mode U: coded steps from t = 1 (default: the model's "
                   "codec.coding_steps; more steps pay off at higher rates)")
    c.add_argument("--decode", default="flow", choices=list(DECODES),
                   help="decoder's default z_t -> z0 method stored in the stream (default flow)")
    _runs(c, commands.cmd_compress)

    dc = sub.add_parser("decompress", help="decode a bitstream into PNGs (or an .npz)",
                        description="Decode a stream made by `ldcodec compress` with the same checkpoint.")
    _paths(dc, "STREAM", "the stream file (the checkpoint, or --model, must be the one that made it)")
    dc.add_argument("-o", "--output", required=True,
                    help="a .png (one image), an .npz (array 'images'), or a new folder of PNGs")
    dc.add_argument("--decode", help=f"override the stream's decode method: {', '.join(DECODES)}, or the "
                    "distortion-perception knob eta=X (DDIM's eta, X in [0, 1]: 0 is flow, 1 ancestral)")
    dc.add_argument("--max-steps", type=int, help="mode U: decode only the first K coded steps (progressive)")
    _runs(dc, commands.cmd_decompress)

    m = sub.add_parser("models", help="list the shipped models",
                       description="The trained models that ship with ldcodec (no download): name, mode, model id "
                                   "and the card's one-line summary. Use one with --model NAME.")
    m.set_defaults(func=commands.cmd_models)

    q = sub.add_parser("quickstart", help="compress and decompress test images with a shipped model",
                       description="Compress test images with a shipped model at the rates its card suggests "
                                   "into real stream files in --out, decode them, print the bits per image and "
                                   "PSNR, and write a labelled picture (originals above the decodes). No training.")
    q.add_argument("--model", default="mnist-u", metavar="NAME", help="shipped model (default mnist-u; "
                   "ldcodec models lists them)")
    q.add_argument("--out", default="runs/quickstart", help="output folder (default runs/quickstart)")
    q.add_argument("-n", type=int, default=16, help="test images (default 16)")
    _runs(q, commands.cmd_quickstart, data=True)

    e = sub.add_parser("evaluate", help="rate, distortion and perception of a model and baselines -> JSON + CSV",
                       description="Sweep the rate knob (mode U: several t, each with the three decodes; mode C: "
                                   "the model's rate) and baselines on the same images; write results.json (schema "
                                   "in docs/results-schema.md) and results.csv. CHECKPOINT may be omitted to "
                                   "evaluate baselines only, or with --dataset gaussian (theory check).")
    _checkpoint(e)
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
    knob = e.add_mutually_exclusive_group()
    knob.add_argument("--bits-values", default=None, help="mode U bit budgets per image to sweep, comma-separated "
                      "(each mapped to a stop time by the model's coding tables), e.g. 307,1024")
    knob.add_argument("--t-values", default=None, help="mode U stop times to sweep, comma-separated (default: "
                   f"{','.join(map(str, DEFAULT_TIMES))})")
    e.add_argument("--coding-steps", help="mode U coding steps to sweep, e.g. 4,16 (default: the model's)")
    e.add_argument("--decodes", default=",".join(DECODES),
                   help="decode methods to evaluate; mode U and C also take eta=X (DDIM's eta in [0, 1]), "
                        "e.g. flow,mse,realism,eta=0.25,eta=0.5,eta=0.75 for the decoder-side "
                        "distortion-perception curve")
    e.add_argument("--perception", default=",".join(defaults.perception),
                   help="perception estimators to run")
    e.add_argument("--critic-steps", type=int, default=defaults.critic_steps,
                   help=f"training steps of each f-divergence critic (default {defaults.critic_steps})")
    e.add_argument("--classifier", help="feature classifier (default runs/classifiers/classifier-DATASET)")
    e.add_argument("--qualities", help="classical qualities, e.g. 'jpeg=5,20,50,90;webp=5,50'")
    e.add_argument("--learned-lambdas", default=",".join(map(str, defaults.learned_lambdas)),
                   help="Ballé baselines' rate-distortion lambdas")
    e.add_argument("--ideal-stride", type=int, default=defaults.ideal_stride,
                   help="mode U: the ideal rate's quadrature measures every n-th coding level (one denoiser "
                        "call per measured level and image; default 16, shaped between them by the coding "
                        "tables' mean error; 1 measures every level, as the Gaussian theory check does)")
    e.add_argument("--per-image", action="store_true",
                   help="also keep each point's per-image PSNR, classifier correctness and estimated bits "
                        "(per_image in the JSON, not the CSV): what paired bootstrap intervals need")
    e.add_argument("--learned-steps", type=int, default=defaults.learned_steps,
                   help=f"training steps of each Ballé baseline (default {defaults.learned_steps})")
    e.add_argument("--learned-lambda-start", type=float,
                   help="a Ballé baseline with a smaller lambda starts training at this lambda (default "
                        "0.01) and decays to its own over the first half of the steps (trained at a small "
                        "lambda from the start it can collapse to the mean image); 0 turns the warm-up off")
    e.add_argument("--learned-dir", metavar="DIR",
                   help="keep each trained Ballé network in DIR and reuse it when the same training "
                        "(baseline, lambda, steps, seed, warm-up, training images) is asked again")
    e.add_argument("--gaussian-dim", type=int, default=16, help="gaussian: source dimension")
    e.add_argument("--gaussian-ratio", type=float, default=0.7, help="gaussian: variances ratio^i, i < dim")
    e.add_argument("--seed", type=int, default=0)
    _runs(e, commands.cmd_evaluate, data=True)

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
    _runs(sw, commands.cmd_sweep, data=True)

    tc = sub.add_parser("train-classifier", help="train the feature classifier used for FID/KID/kNN/accuracy",
                        description="Train the project's own classifier (no weights can be downloaded) and save it "
                                    "where `ldcodec evaluate` looks by default.")
    tc.add_argument("--dataset", required=True, choices=["mnist", "cifar10"])
    tc.add_argument("--out", help="path without suffix (default runs/classifiers/classifier-DATASET)")
    tc.add_argument("--epochs", type=int, default=10)
    tc.add_argument("--max-steps", type=int, help="stop after this many steps")
    tc.add_argument("--seed", type=int, default=0)
    _runs(tc, commands.cmd_train_classifier, data=True)

    rp = sub.add_parser("report", help="one self-contained HTML page from results JSON files",
                        description="Curves, planes, reconstruction grids and tables from `ldcodec evaluate` output.")
    rp.add_argument("results", nargs="+", help="results JSON files")
    rp.add_argument("-o", "--output", required=True, help="HTML file to write")
    rp.set_defaults(func=commands.cmd_report)

    d = sub.add_parser("demo", help="train a small MNIST model on the built-in sample and show what it does",
                       description="Train configs/demo.yaml on the built-in MNIST sample (no download), then "
                                   "write reconstructions and samples as PNG grids into --out.")
    d.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    d.add_argument("--steps", type=int, default=None, help="training steps (default: the demo config's)")
    _runs(d, commands.cmd_demo)

    data = sub.add_parser("data", help="dataset utilities (download to .npz shards)")
    dsub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    dl = dsub.add_parser("download", help="download MNIST or CIFAR-10 with torchvision and write .npz shards")
    dl.add_argument("dataset", choices=["mnist", "cifar10"])
    dl.add_argument("--to", required=True, metavar="DIR", help="data root; shards go to DIR/DATASET/")
    dl.set_defaults(func=commands.cmd_data_download)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and hasattr(args, "paths") and not any(e.startswith("-") for e in extra):
        args.paths += extra  # argparse stops a positional list at an option: PATH --t 0.3 PATH is one list
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
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
