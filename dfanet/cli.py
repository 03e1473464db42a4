"""The ``dfanet`` command: summary, bench, predict."""

from __future__ import annotations

import argparse
import logging
import sys

from .variants import VARIANTS


def parse_size(text: str) -> tuple[int, int]:
    """``"512x1024"`` -> ``(512, 1024)`` (height x width, each >= 32, DFANet's minimum)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW such as 512x1024, got {text!r}") from None
    if h < 32 or w < 32:
        raise argparse.ArgumentTypeError(f"expected H and W >= 32 (DFANet's minimum), got {text!r}")
    return h, w


def cmd_summary(args: argparse.Namespace) -> int:
    from .summary import default_rows, summarize, summary_table

    rows = default_rows() if args.size is None else [summarize(v, *args.size) for v in args.variant]
    print(summary_table(rows))
    print("\nMACs counted by torch.utils.flop_counter (convolutions and matmuls; 1 MAC = 2 FLOPs). "
          "See README 'Model size' for why our counts differ from the paper's.")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .benchmark import run_comparison

    report = run_comparison(
        variant=args.variant, height=args.size[0], width=args.size[1], batch=args.batch, threads=args.threads,
        rounds=args.rounds, candidates=args.candidates, out_dir=args.out,
    )
    print(report.to_markdown())
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    import torch

    from .predict import expand_inputs, load_model, output_paths, predict_files

    if args.threads:
        torch.set_num_threads(args.threads)
    images = expand_inputs(args.images)
    outs = output_paths(images, args.out)
    model = load_model(args.weights, args.variant, args.num_classes, args.backend)
    predict_files(model, images, outs, with_overlay=args.overlay)
    return 0


def build_parser() -> argparse.ArgumentParser:
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
    p.add_argument("--threads", type=int, default=2, help="intra-op threads for every runtime (default 2)")
    p.add_argument("--rounds", type=int, default=10, help="timed rounds; each runs every candidate once")
    p.add_argument("--candidates", nargs="+", default=None, help="subset of candidates to run (default: all)")
    p.add_argument("--out", default="bench/out", help="folder for the Markdown, JSON and PNG report")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("predict", help="segment images and write colourised masks (PNG)")
    p.add_argument("images", nargs="+", help="image files or folders of images")
    p.add_argument("--out", required=True, help="output .png for one image, or a folder")
    p.add_argument("--weights", default=None, help="DFANet state_dict (.pt); random weights if omitted")
    p.add_argument("--variant", default="A", choices=list(VARIANTS))
    p.add_argument("--num-classes", type=int, default=19)
    p.add_argument("--backend", default=None, choices=["reference", "cpu", "triton", "cuda"])
    p.add_argument("--overlay", action="store_true", help="blend the mask over the image")
    p.add_argument("--threads", type=int, default=None)
    p.set_defaults(func=cmd_predict)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError) as err:
        logging.getLogger("dfanet").error("%s", err)
        return 2


if __name__ == "__main__":
    sys.exit(main())
