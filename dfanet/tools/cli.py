"""The ``dfanet`` command: summary, bench, predict, export, train, eval, pretrain."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from pathlib import Path

from ..training.stopped import Stopped
from ..variants import VARIANTS
from .formats import FORMATS


def parse_size(text: str) -> tuple[int, int]:
    """``"512x1024"`` -> ``(512, 1024)`` (height x width, each >= 32, DFANet's minimum)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW such as 512x1024, got {text!r}") from None
    if h < 32 or w < 32:
        raise argparse.ArgumentTypeError(f"expected H and W >= 32 (DFANet's minimum), got {text!r}")
    return h, w


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _positive_int(text: str) -> int:
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def _device(text: str) -> str:
    """The name as given, once torch takes it (torch is imported only when the option is given)."""
    from ..training.distributed import parse_device

    try:
        parse_device(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:N, got {text!r}") from None
    return text


def cmd_summary(args: argparse.Namespace) -> int:
    from .summary import default_rows, summarize, summary_table

    rows = default_rows() if args.size is None else [summarize(v, *args.size) for v in args.variant]
    print(summary_table(rows))
    print("\nMACs counted by torch.utils.flop_counter (convolutions and matmuls; 1 MAC = 2 FLOPs). "
          "See README 'Model size' for why our counts differ from the paper's.")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench.cpu_comparison import run_comparison

    report = run_comparison(
        variant=args.variant, height=args.size[0], width=args.size[1], batch=args.batch, threads=args.threads,
        rounds=args.rounds, candidates=args.candidates, out_dir=args.out,
    )
    print(report.to_markdown())
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    import torch

    from ..training.distributed import check_backend
    from ..training.images import MAX_PIXELS
    from .formats import check_format
    from .predict import expand_inputs, load_model, output_paths, predict_files

    if args.threads:
        torch.set_num_threads(args.threads)
    check_format(args.format, args.num_classes)
    inputs = expand_inputs(args.inputs)
    outs = output_paths(inputs, args.out, keep=[args.weights] if args.weights else [])
    check_backend(args.backend, torch.device("cpu"))
    model = load_model(args.weights, args.variant, args.num_classes, args.backend)
    predict_files(model, inputs, outs, fmt=args.format, max_pixels=args.max_pixels or MAX_PIXELS,
                  batch_size=args.batch_size)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from ..model import DFANet
    from ..training.io import atomic_path

    if Path(args.out).is_dir():  # else found only by the rename, after minutes of compiling
        raise ValueError(f"--out: {args.out} is a folder; expected the name of the file to write")
    if args.format == "onnx":
        import onnx  # noqa: F401  (the exporter needs it; a missing one is reported with the extra to install)

        from ..export import export_onnx as export
    else:
        from ..pt2 import export_pt2 as export
    model = DFANet(num_classes=args.num_classes, variant=args.variant, fused=True)
    if args.weights is not None:
        from ..pretrained import load_weights

        load_weights(model, args.weights)
    with atomic_path(args.out) as tmp:
        result = export(model.eval(), tmp, args.batch, *args.size)
    size = Path(args.out).stat().st_size / 2**20
    print(f"{args.out}: {args.format}, {size:.1f} MiB, exported in {result.seconds:.1f} s ({result.exporter})")
    return 0


def load_config(path: str) -> dict:
    """Settings from a TOML (.toml) or JSON (.json) file: keys are the long option names, with - or _."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise FileNotFoundError(f"--config: cannot read {path} ({err.strerror})") from None
    try:
        if path.suffix == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib
            values = tomllib.loads(text)
        elif path.suffix == ".json":
            values = json.loads(text)
        else:
            raise ValueError(f"--config: expected a .toml or .json file, got {path}")
    except (ValueError, TypeError) as err:  # tomllib.TOMLDecodeError and json.JSONDecodeError are ValueErrors
        raise ValueError(f"--config: {path} is not valid {path.suffix[1:].upper()}: {err}") from None
    if not isinstance(values, dict):
        raise ValueError(f"--config: {path} must hold a table of settings")
    return {key.replace("-", "_"): value for key, value in values.items()}


def config_defaults(parser: argparse.ArgumentParser, values: dict, path: str) -> dict:
    """``values`` checked and converted as if given on the command line, keyed by option dest."""
    actions = {a.dest: a for a in parser._actions if a.option_strings and a.dest not in ("help", "config")}
    converted = {}
    for key, value in values.items():
        action = actions.get(key)
        if action is None:
            raise ValueError(f"--config: {path}: unknown setting {key!r} (known: {', '.join(sorted(actions))})")
        try:
            if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
                if not isinstance(value, bool):
                    raise TypeError("expected true or false")
            elif value is not None and action.nargs is not None:
                if not isinstance(value, list) or len(value) != action.nargs:
                    raise TypeError(f"expected a list of {action.nargs} values")
                value = tuple(_as_on_command_line(v, action.type) for v in value)
            elif value is not None:
                value = _as_on_command_line(value, action.type)
            if action.choices is not None and value is not None and value not in action.choices:
                raise ValueError(f"expected one of {list(action.choices)}")
        except (TypeError, ValueError, argparse.ArgumentTypeError) as err:
            raise ValueError(f"--config: {path}: {key} = {value!r}: {err}") from None
        converted[key] = value
    return converted


# What a flag's type function takes, for the messages about values from a config file.
_EXPECTED = {int: "an integer", float: "a number"}


def _as_on_command_line(value, convert) -> object:
    """A config file's value converted as the same text on the command line would be: 2.9 is not an integer
    (int() would truncate it) and true is not a number (bool is an int in Python)."""
    expected = _EXPECTED.get(convert, "a string" if convert is None else "a value")
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise TypeError(f"expected {expected}, got {value!r}")
    if convert is None:
        return str(value)
    try:
        return convert(str(value))
    except ValueError:  # int("2.9"), float("x"); the other type functions raise ArgumentTypeError with their own text
        raise ValueError(f"expected {expected}, got {value!r}") from None


def _dataclass_kwargs(cls, args: argparse.Namespace) -> dict:
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)}


def _quiet_other_ranks() -> None:
    """Under torchrun only rank 0 logs progress; the others report warnings and errors."""
    if int(os.environ.get("RANK", "0")) > 0:
        logging.getLogger().setLevel(logging.WARNING)


def _require(args: argparse.Namespace, *names: str) -> None:
    for name in names:
        if getattr(args, name) is None:
            raise ValueError(f"--{name.replace('_', '-')} is required (on the command line or in --config)")


def cmd_train(args: argparse.Namespace) -> int:
    from ..training.train import TrainConfig, train

    _require(args, "data_root")
    _quiet_other_ranks()
    cfg = TrainConfig(**_dataclass_kwargs(TrainConfig, args))
    if args.no_eval:
        cfg.val_split = None
    result = train(cfg)
    if result.report is not None and int(os.environ.get("RANK", "0")) == 0:
        print(result.report.to_markdown())
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    import torch

    from ..training import distributed
    from ..training.data import get_dataset
    from ..training.evaluate import evaluate, write_report
    from .predict import load_model

    _require(args, "data_root", "weights")
    _quiet_other_ranks()
    if args.threads:
        torch.set_num_threads(args.threads)
    files = get_dataset(args.dataset).open(args.data_root, args.split)
    with distributed.session(args.device) as ctx:
        distributed.check_backend(args.backend, ctx.device)
        model = load_model(args.weights, args.variant, files.num_classes, args.backend).to(ctx.device)
        report = evaluate(model, files, ctx, workers=args.workers, warmup=args.warmup)
    if ctx.is_main:
        if args.out:
            write_report(report, Path(args.out))
        print(report.to_markdown())
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    from ..training.pretrain import PretrainConfig, pretrain

    _require(args, "data_root")
    _quiet_other_ranks()
    pretrain(PretrainConfig(**_dataclass_kwargs(PretrainConfig, args)))
    return 0


def _crop(text: str) -> int:
    value = _integer(text)
    if value < 32:
        raise argparse.ArgumentTypeError(f"expected >= 32 (DFANet's minimum), got {value}")
    return value


def _workers_help(most: int, what: str) -> str:
    return (f"{what} (default {most}, or one per CPU this process may use if that is fewer: %(default)s here; more "
            "workers than CPUs only compete for them)")


def add_common_options(p: argparse.ArgumentParser, defaults, most_workers: int) -> None:
    """Options of every training command; defaults from the command's config dataclass."""
    p.add_argument("--config", default=None, metavar="FILE",
                   help="TOML or JSON file of settings (keys = long option names); command-line flags override it")
    p.add_argument("--data-root", default=None, help="the data set's root folder")
    p.add_argument("--variant", default=defaults.variant, choices=list(VARIANTS))
    p.add_argument("--batch-size", type=int, default=defaults.batch_size,
                   help="global batch, split over torchrun's processes (default %(default)s, as in the paper)")
    p.add_argument("--lr", type=float, default=None,
                   help="learning rate (default: the paper's, scaled linearly with --batch-size)")
    p.add_argument("--momentum", type=float, default=defaults.momentum)
    p.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    p.add_argument("--clip-grad", type=float, default=None, metavar="NORM", help="clip the gradient norm to NORM")
    p.add_argument("--amp", action="store_true", help="mixed precision (fp16 autocast + loss scaling; CUDA only)")
    p.add_argument("--out", default=defaults.out,
                   help="folder for checkpoints, weights and reports (default %(default)s)")
    p.add_argument("--resume", default=None, metavar="PATH",
                   help="continue from this checkpoint, or 'auto': the latest in --out (start fresh if none)")
    p.add_argument("--checkpoint-every", type=int, default=defaults.checkpoint_every, metavar="N",
                   help="write checkpoint_last.pt every N iterations (and at the end)")
    p.add_argument("--keep-every", type=int, default=0, metavar="N",
                   help="also keep checkpoint_iter<N>.pt every N iterations (default: only the last)")
    p.add_argument("--log-every", type=int, default=defaults.log_every, metavar="N")
    p.add_argument("--workers", type=int, default=defaults.workers,
                   help=_workers_help(most_workers, "data loader processes per training process"))
    p.add_argument("--seed", type=int, default=defaults.seed,
                   help="seeds the initialisation, the data order and every sample's augmentation")
    p.add_argument("--device", type=_device, default=None,
                   help="cpu, cuda or cuda:N (default: cuda if available; under torchrun each process takes its "
                        "LOCAL_RANK GPU)")
    p.add_argument("--threads", type=_positive_int, default=None, help="intra-op CPU threads per process")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole command line. The options of train, eval and pretrain, whose defaults come from modules that import
    torch, are added only when ``command`` is that command (or None: all of them), so that ``dfanet --help`` and the
    light commands' parsing start in a tenth of a second rather than two."""
    parser = argparse.ArgumentParser(prog="dfanet", description="DFANet real-time segmentation with fused kernels.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("summary", help="parameters and MACs per variant next to the paper's figures")
    p.add_argument("--variant", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--size", type=parse_size, default=None, help="input HxW (default: each variant's paper size)")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("bench", help="time the fused model against eager, channels_last, torch.compile, "
                                     "ONNX Runtime and OpenVINO side by side")
    p.add_argument("--variant", default="A", choices=list(VARIANTS))
    p.add_argument("--size", type=parse_size, default=(512, 1024), help="input HxW (default 512x1024)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", type=_positive_int, default=2,
                   help="intra-op threads for every runtime (default 2)")
    p.add_argument("--rounds", type=int, default=10, help="timed rounds; each runs every candidate once")
    p.add_argument("--candidates", nargs="+", default=None,
                   help="subset of candidates to run (default: all but aoti, the fused model's AOTInductor package, "
                        "which runs when named: its compile takes minutes)")
    p.add_argument("--out", default="bench/out", help="folder for the Markdown, JSON and PNG report")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("predict", help="segment images and videos: colour masks, overlays or label-id PNGs")
    p.add_argument("inputs", nargs="+", metavar="input",
                   help="image or video files, or folders of them (images and videos may be mixed)")
    p.add_argument("--out", required=True,
                   help="output .png for one image, .mp4 (H.264) or .mkv (FFV1, lossless) for one video, or a folder "
                        "that gets <name>.png per image and <name>.mp4 per video (inputs whose names differ only in "
                        "folder or extension, e.g. a/x.png and b/x.jpg, are refused: predict them into separate "
                        "--out folders)")
    p.add_argument("--format", default="color", choices=FORMATS,
                   help="color: the colour mask (default); overlay: the colours blended over the input; labelid: "
                        "Cityscapes label ids as 8-bit PNG, what its evaluator and test server read (19-class "
                        "models); trainid: the class ids as 8-bit PNG. Videos take color or overlay")
    p.add_argument("--weights", default=None, help="DFANet state_dict (.pt); random weights if omitted")
    p.add_argument("--variant", default="A", choices=list(VARIANTS))
    p.add_argument("--num-classes", type=int, default=19)
    p.add_argument("--backend", default=None, choices=["reference", "cpu", "triton", "cuda"])
    p.add_argument("--overlay", dest="format", action="store_const", const="overlay",
                   help="the same as --format overlay (the option before --format existed)")
    p.add_argument("--batch-size", type=_positive_int, default=1,
                   help="video frames per forward pass (default %(default)s)")
    p.add_argument("--max-pixels", type=_positive_int, default=None, metavar="N",
                   help="refuse images (and videos whose frames have) more than N pixels before decoding them "
                        "(default 8192 x 8192 = 67108864)")
    p.add_argument("--threads", type=_positive_int, default=None)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", help="write the model as a file to deploy: ONNX (the unfused model) or an "
                                      "AOTInductor package (.pt2, the fused model)",
                       description="Export DFANet for a static input size. onnx: the unfused model (BatchNorm and "
                                   "all) in standard ONNX operators, for ONNX Runtime or OpenVINO. pt2: the fused "
                                   "model compiled by torch.export + AOTInductor, calling the dfanet kernels; load it "
                                   "with dfanet.pt2.load_pt2 or from C++ (examples/cpp).")
    p.add_argument("--format", required=True, choices=["onnx", "pt2"],
                   help="onnx: the unfused model, for ONNX Runtime or OpenVINO; pt2: the fused model, AOTInductor")
    p.add_argument("--out", required=True, metavar="FILE", help="the file to write (replaced atomically)")
    p.add_argument("--weights", default=None, help="DFANet state_dict (.pt) or checkpoint; random weights if omitted")
    p.add_argument("--variant", default="A", choices=list(VARIANTS))
    p.add_argument("--num-classes", type=_positive_int, default=19)
    p.add_argument("--size", type=parse_size, default=(512, 1024),
                   help="the input HxW the file takes, and only that (default 512x1024)")
    p.add_argument("--batch", type=_positive_int, default=1, help="the input batch the file takes (default 1)")
    p.set_defaults(func=cmd_export)

    # The training commands' options need modules that import torch: built only for the command being parsed.
    training_commands = {
        "train": ("train DFANet on Cityscapes or CamVid with the paper's recipe (one process, or one per GPU under "
                  "torchrun)",
                  "Train DFANet with the paper's recipe: SGD (momentum 0.9, weight decay 1e-5), poly(0.9) learning "
                  "rate from 0.2 at batch 48, flip + rescale [0.75, 1.75] + crop. Multi-GPU: torchrun "
                  "--nproc_per_node N -m dfanet train ...",
                  add_train_options),
        "eval": ("mIoU, per-class IoU and FPS of trained weights on a data set split",
                 "Evaluate as the paper does: whole images at full resolution, no test-time augmentation, the fused "
                 "model in eval. Prints a Markdown table; --out also writes it and a JSON report.",
                 add_eval_options),
        "pretrain": ("pretrain the Xception backbone on an ImageFolder (the paper's ImageNet recipe)",
                     "Train Xception A/B as a classifier on <data-root>/<class>/<image>: Nesterov SGD (momentum 0.9, "
                     "weight decay 4e-5), lr 0.3 at batch 256, x0.1 after 30 of 60 epochs, random 224x224 crops and "
                     "flips. Writes <out>/backbone.pt for dfanet train --backbone.",
                     add_pretrain_options),
    }
    for name, (help_text, description, add_options) in training_commands.items():
        p = sub.add_parser(name, help=help_text, description=description)
        if command in (None, name):
            add_options(p)
    return parser


def add_train_options(p: argparse.ArgumentParser) -> None:
    from ..training.data import DATASETS
    from ..training.train import MOST_WORKERS, TrainConfig

    defaults = TrainConfig()
    add_common_options(p, defaults, MOST_WORKERS)
    p.add_argument("--dataset", default=defaults.dataset, choices=list(DATASETS))
    p.add_argument("--split", default=defaults.split, help="training split (default %(default)s)")
    p.add_argument("--val-split", default=defaults.val_split, help="split evaluated at the end (default %(default)s)")
    p.add_argument("--no-eval", action="store_true", help="skip the final evaluation")
    p.add_argument("--eval-every", type=int, default=0, metavar="N",
                   help="also evaluate every N iterations: logged and kept in <out>/eval-history.json")
    p.add_argument("--iters", type=int, default=None,
                   help="iterations (default: cityscapes 40000 as in the paper, camvid 8000)")
    p.add_argument("--crop", type=_crop, nargs=2, default=None, metavar=("H", "W"),
                   help="training crop (default: cityscapes 1024 1024, camvid 720 960)")
    p.add_argument("--scale", type=float, nargs=2, default=defaults.scale, metavar=("MIN", "MAX"),
                   help="random rescale range (default 0.75 1.75)")
    p.add_argument("--power", type=float, default=defaults.power, help="poly schedule power (default 0.9)")
    p.add_argument("--warmup-iters", type=int, default=0, help="linear learning-rate warm-up")
    p.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm across processes (CUDA, torchrun)")
    p.add_argument("--weights", default=None, help="start from these DFANet weights (state_dict or checkpoint)")
    p.add_argument("--backbone", default=None,
                   help="ImageNet-pretrained Xception weights for all three backbones (from dfanet pretrain)")
    p.add_argument("--backend", default=None, choices=["reference", "cpu", "triton", "cuda"],
                   help="fused-op backend for the final evaluation")
    p.set_defaults(func=cmd_train, parser=p)


EVAL_WORKERS = 2  # dfanet eval's default --workers, where the process may use that many CPUs


def add_eval_options(p: argparse.ArgumentParser) -> None:
    from ..training.data import DATASETS, default_workers

    p.add_argument("--config", default=None, metavar="FILE", help="TOML or JSON file of settings")
    p.add_argument("--dataset", default="cityscapes", choices=list(DATASETS))
    p.add_argument("--data-root", default=None)
    p.add_argument("--split", default="val")
    p.add_argument("--weights", default=None, help="DFANet weights: weights.pt from dfanet train, or a checkpoint")
    p.add_argument("--variant", default="A", choices=list(VARIANTS))
    p.add_argument("--out", default=None, help="folder for eval-<dataset>-<split>.{md,json}")
    p.add_argument("--workers", type=int, default=default_workers(EVAL_WORKERS),
                   help=_workers_help(EVAL_WORKERS, "data loader processes"))
    p.add_argument("--device", type=_device, default=None)
    p.add_argument("--threads", type=_positive_int, default=None)
    p.add_argument("--backend", default=None, choices=["reference", "cpu", "triton", "cuda"])
    p.add_argument("--warmup", type=int, default=3, help="untimed forward passes before timing (default 3)")
    p.set_defaults(func=cmd_eval, parser=p)


def add_pretrain_options(p: argparse.ArgumentParser) -> None:
    from ..training.pretrain import MOST_WORKERS, PretrainConfig

    defaults = PretrainConfig()
    add_common_options(p, defaults, MOST_WORKERS)
    p.add_argument("--epochs", type=int, default=defaults.epochs)
    p.add_argument("--lr-step-epochs", type=int, default=defaults.lr_step_epochs,
                   help="multiply the learning rate by 0.1 after this many epochs (default %(default)s)")
    p.add_argument("--crop", type=_crop, nargs=2, default=defaults.crop, metavar=("H", "W"))
    p.add_argument("--weights", default=None, help="start from these classifier weights")
    p.add_argument("--val-root", default=None,
                   help="an ImageFolder with the same classes: single-crop top-1 accuracy at the end")
    p.set_defaults(func=cmd_pretrain, parser=p)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse ``argv``; with --config, parse again with the file's settings as defaults (so flags override them)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    # The command is the first word that is not an option (the only top-level option, -v, takes no value).
    parser = build_parser(command=next((a for a in argv if not a.startswith("-")), ""))
    args = parser.parse_args(argv)
    if getattr(args, "config", None):
        values = config_defaults(args.parser, load_config(args.config), args.config)
        args.parser.set_defaults(**values)
        args = parser.parse_args(argv)
    return args


# What the commands import beyond the model's torch and numpy, and the extra that installs it.
EXTRAS = {"PIL": "app", "tqdm": "app", "cityscapesscripts": "app", "tomli": "app", "av": "video", "matplotlib": "bench",
          "onnx": "bench", "onnxscript": "bench", "onnxruntime": "bench", "openvino": "bench"}


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        args = parse_args(argv)
        if args.verbose:
            logging.getLogger().setLevel(logging.DEBUG)
        return args.func(args)
    except Stopped as stop:
        logging.getLogger("dfanet").warning("%s", stop)
        return stop.exit_code
    except (ValueError, TypeError, FileNotFoundError, NotADirectoryError, FloatingPointError) as err:
        logging.getLogger("dfanet").error("%s", err)
        return 2
    except ModuleNotFoundError as err:
        root = (err.name or "").split(".")[0]
        if root not in EXTRAS:
            raise
        logging.getLogger("dfanet").error("this command needs %s, which is not installed: pip install "
                                          "'dfanet-kernels[%s]'", root, EXTRAS[root])
        return 2


if __name__ == "__main__":
    sys.exit(main())
