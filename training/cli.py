"""`apollo-train`: train APOLLO-AV from a run config.

    apollo-train --config training/configs/apollo-tiny.yaml
    apollo-train --config my.yaml --resume runs/my            # continue from the latest checkpoint
    apollo-train --config my.yaml stages.0.steps=100 seed=3   # key=value overrides (YAML values)
    apollo-train --config my.yaml --pre-encode                # only fill the latent cache
    apollo-train --config my.yaml --benchmark 5               # samples/s and the run's projected time
    accelerate launch --multi_gpu --num_processes 4 -m training --config my.yaml   # several processes/GPUs
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from .config import ConfigError, load_config


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="apollo-train", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--config", required=True, help="run config YAML (see training/configs/)")
    parser.add_argument("--resume", help="checkpoint folder, or the run's output folder (latest checkpoint)")
    parser.add_argument("--pre-encode", action="store_true", help="encode the data cache, then stop")
    parser.add_argument("--benchmark", type=int, metavar="STEPS",
                        help="time STEPS steps of the first stage, print samples/s and the projected run time, save nothing")
    parser.add_argument("--text-encoder", default="minilm", help="caption encoder: minilm or a local transformers folder")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. stages.0.steps=20")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded at run time
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as exc:
        print(f"apollo-train: {exc}", file=sys.stderr)
        return 2
    from .trainer import Trainer, make_accelerator  # torch and accelerate load only for a valid config

    accelerator = make_accelerator(cfg)
    level = logging.INFO if accelerator.is_main_process else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    if args.pre_encode:
        from .data.prepare import cache_sources

        folders = cache_sources(cfg, cfg.model.build(), rank=accelerator.process_index,
                                world_size=accelerator.num_processes, barrier=accelerator.wait_for_everyone,
                                device=accelerator.device, text_encoder=args.text_encoder)
        if accelerator.is_main_process:
            for name, folder in folders.items():
                print(f"{name}: {folder}")
        return 0
    try:
        trainer = Trainer(cfg, resume=args.resume, accelerator=accelerator, text_encoder=args.text_encoder)
        if args.benchmark is not None:
            figures = trainer.benchmark(args.benchmark)
            if accelerator.is_main_process:
                print(f"{figures['samples_per_second']:.2f} samples/s ({figures['seconds_per_step']:.2f} s/step, "
                      f"{cfg.precision}); the configured {cfg.total_steps} steps would take about "
                      f"{figures['projected_minutes']:.0f} minutes")
            return 0
        result = trainer.run()
    except ValueError as exc:
        print(f"apollo-train: {exc}", file=sys.stderr)
        return 2
    if accelerator.is_main_process:
        print(f"finished at step {result.step}; exported {result.export}; skipped items: {result.skipped}")
    return 0
