"""Command line: `python -m training.engine {train,generate,export,tiny-base,toy-data,toy-world,toy-world-sweep,train-alpha}`.

python -m training.engine tiny-base var/tiny-base [--family sd|sdxl|sd3]
python -m training.engine toy-world var/toy-world [--small]   # base model, CLIP and datasets
python -m training.engine toy-world-sweep var/toy-world --out var/sweep   # sequential vs ST
python -m training.engine toy-world-sweep var/toy-world --out var/sweeps --train-seeds 0 1 2
python -m training.engine toy-data var/toy --count 24        # prints a datasets JSON block
python -m training.engine train run.json [--resume-from latest|CHECKPOINT_DIR]
python -m training.engine generate --checkpoint DIR --prompt "a cat" --seeds 0 1 --out imgs/
python -m training.engine export CHECKPOINT_DIR --format diffusers|kohya --out DIR
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import training.engine  # noqa: F401  (torchvision shim first)

TINY_FAMILIES = (
    "sd",
    "sdxl",
    "sd3",
)  # = training.engine.tiny.TINY_FAMILIES, without importing torch


def _train(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from training.engine.config import TrainConfig
    from training.engine.run import run_training

    config = TrainConfig.from_json(args.config)
    bar = tqdm(total=config.steps, desc=f"{config.recipe}/{config.adapter}", unit="step")

    def progress(step: int, total: int, loss: float) -> None:
        bar.total = total  # styledrop_iterative counts steps over all its iterations
        bar.n = step
        bar.set_postfix(loss=f"{loss:.4f}")
        bar.refresh()

    result = run_training(
        config, progress=progress, resume_from=args.resume_from, device=args.device
    )
    bar.close()
    summary = {k: v for k, v in result.to_dict().items() if k not in ("losses", "role_losses")}
    summary["final_loss"] = result.losses[-1] if result.losses else None
    print(json.dumps(summary, indent=2))
    return 0


def _generate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from training.engine.generation import SamplerSettings, generate

    prompts = list(args.prompt or [])
    if args.prompts_file:
        prompts += [
            line.strip()
            for line in Path(args.prompts_file).read_text().splitlines()
            if line.strip()
        ]
    if not prompts:
        print("generate: give --prompt or --prompts-file", file=sys.stderr)
        return 2
    settings = SamplerSettings.from_dict(
        {
            "scheduler": args.scheduler,
            "steps": args.steps,
            "guidance_scale": args.guidance_scale,
            "resolution": args.resolution,
            "negative_prompt": args.negative_prompt,
            "style_suffix": args.style_suffix,
        }
    )
    bar = tqdm(total=len(prompts) * len(args.seeds), desc="generate", unit="img")

    def progress(done: int, total: int) -> None:
        bar.n = done
        bar.refresh()

    results = generate(
        prompts,
        args.seeds,
        settings,
        checkpoint=args.checkpoint,
        base_model=args.base_model,
        device=args.device,
        batch_size=args.batch_size,
        transparency_decoder=args.transparency_decoder,
        progress=progress,
        content_checkpoint=args.content_checkpoint,
        style_weight=args.style_weight,
    )
    bar.close()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "metadata.jsonl", "a") as index:
        for item in results:
            name = f"{item.metadata['sha256']}.png"
            (out / name).write_bytes(item.png_bytes())
            index.write(json.dumps({"file_name": name, **item.metadata}) + "\n")
    print(f"{len(results)} images in {out}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from training.engine.export import export_checkpoint

    path = export_checkpoint(
        args.checkpoint,
        args.format,
        args.out,
        base_model=args.base_model,
        use_ema=not args.no_ema,
    )
    print(path)
    return 0


def _tiny_base(args: argparse.Namespace) -> int:
    from training.engine.tiny import save_tiny_base_model

    print(
        save_tiny_base_model(
            args.out_dir, seed=args.seed, family=args.family, prediction_type=args.prediction_type
        )
    )
    return 0


def _toy_data(args: argparse.Namespace) -> int:
    from training.engine.toydata import write_toy_dataset

    datasets = {
        role: write_toy_dataset(args.out_dir, role, args.count, seed=index, rgba=args.rgba)
        for index, role in enumerate(("domain", "alignment", "style"))
    }
    print(json.dumps({"datasets": datasets}, indent=2))
    return 0


def _toy_world(args: argparse.Namespace) -> int:
    from training.engine.toy_world.build import ToyWorldSettings, build_toy_world

    settings = ToyWorldSettings.small() if args.small else ToyWorldSettings()
    settings.seed = args.seed
    info = build_toy_world(args.out_dir, settings, log=logging.getLogger("toy-world").info)
    summary = {k: info[k] for k in ("base_model", "clip_weights", "clip_text_alignment", "seconds")}
    print(json.dumps(summary, indent=2))
    return 0


def _toy_world_sweep(args: argparse.Namespace) -> int:
    from training.engine.toy_world.build import load_toy_world
    from training.engine.toy_world.sweep import SweepSettings, multi_seed_summary, run_sweep

    world = load_toy_world(args.world)
    log = logging.getLogger("sweep").info

    reports = {}
    several = len(args.train_seeds) > 1
    for train_seed in args.train_seeds:
        settings = SweepSettings(
            t_s_values=args.t_s,
            mix_ratios=args.mix,
            steps=args.steps,
            seeds=args.seeds,
            train_seed=train_seed,
        )
        out = Path(args.out) / f"train-seed-{train_seed}" if several else args.out
        reports[train_seed] = run_sweep(world, out, settings, log=log)
        if several:
            # Rewritten after every seed, so a run stopped part-way still says what its
            # finished seeds showed (and that it covers only those).
            summary = {
                **multi_seed_summary(reports),
                "train_seeds_planned": list(args.train_seeds),
            }
            (Path(args.out) / "multi_seed.json").write_text(json.dumps(summary, indent=2))
    if not several:
        report = next(iter(reports.values()))
        print(
            json.dumps({k: report[k] for k in ("pareto_front", "headline", "dominance")}, indent=2)
        )
        return 0
    print(json.dumps(summary, indent=2))
    return 0


def _train_alpha(args: argparse.Namespace) -> int:
    from training.engine.transparency import AlphaTrainConfig, train_transparency_decoder

    config = AlphaTrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        resolution=args.resolution,
        seed=args.seed,
    )
    path, result = train_transparency_decoder(
        args.base_model, args.manifest, args.sha256, args.out, config, image_root=args.image_root
    )
    print(json.dumps({"decoder": str(path), "before": result.before, "after": result.after}))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.engine", description=__doc__.splitlines()[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="run a TrainConfig JSON file")
    train.add_argument("config")
    train.add_argument("--resume-from", default=None, help="checkpoint folder, or 'latest'")
    train.add_argument(
        "--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if present)"
    )
    train.set_defaults(handler=_train)

    gen = commands.add_parser("generate", help="images from a checkpoint or base model")
    source = gen.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint")
    source.add_argument("--base-model")
    gen.add_argument("--prompt", action="append", help="repeatable")
    gen.add_argument("--prompts-file", help="one prompt per line")
    gen.add_argument("--seeds", type=int, nargs="+", default=[0])
    gen.add_argument("--out", required=True)
    gen.add_argument("--scheduler", default="ddim")
    gen.add_argument("--steps", type=int, default=25)
    gen.add_argument("--guidance-scale", type=float, default=7.5)
    gen.add_argument("--resolution", type=int, default=512)
    gen.add_argument("--negative-prompt")
    gen.add_argument("--style-suffix")
    gen.add_argument("--batch-size", type=int, default=4)
    gen.add_argument("--transparency-decoder")
    gen.add_argument(
        "--content-checkpoint",
        help="sample --checkpoint (a style adapter) together with this content adapter (StyleDrop)",
    )
    gen.add_argument(
        "--style-weight",
        type=float,
        default=0.5,
        help="with --content-checkpoint: 0 content .. 1 style",
    )
    gen.add_argument("--device")
    gen.set_defaults(handler=_generate)

    export = commands.add_parser(
        "export", help="a checkpoint as diffusers or kohya (A1111/ComfyUI) files"
    )
    export.add_argument("checkpoint")
    export.add_argument("--format", choices=("diffusers", "kohya"), required=True)
    export.add_argument("--out", required=True, help="folder to write")
    export.add_argument("--base-model", help="the base folder, if it moved since training")
    export.add_argument("--no-ema", action="store_true", help="the raw weights, not the EMA")
    export.set_defaults(handler=_export)

    tiny = commands.add_parser("tiny-base", help="write the tiny random base model")
    tiny.add_argument("out_dir")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument("--family", choices=TINY_FAMILIES, default="sd")
    tiny.add_argument("--prediction-type", choices=("epsilon", "v_prediction"), default="epsilon")
    tiny.set_defaults(handler=_tiny_base)

    toy = commands.add_parser("toy-data", help="write synthetic domain/alignment/style datasets")
    toy.add_argument("out_dir")
    toy.add_argument("--count", type=int, default=24)
    toy.add_argument("--rgba", action="store_true")
    toy.set_defaults(handler=_toy_data)

    world = commands.add_parser(
        "toy-world", help="build the toy world: pre-trained base, toy CLIP, datasets, prompts"
    )
    world.add_argument("out_dir")
    world.add_argument("--small", action="store_true", help="the quick settings tests use")
    world.add_argument("--seed", type=int, default=0)
    world.set_defaults(handler=_toy_world)

    sweep = commands.add_parser(
        "toy-world-sweep", help="sequential vs Style Tailoring at several t_s, in the toy world"
    )
    sweep.add_argument("world", help="a folder built by toy-world")
    sweep.add_argument("--out", required=True)
    sweep.add_argument("--t-s", type=int, nargs="+", default=[300, 500, 700])
    sweep.add_argument("--mix", type=float, nargs="+", default=[0.5])
    sweep.add_argument("--steps", type=int, default=80)
    sweep.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="sampling seeds")
    sweep.add_argument(
        "--train-seeds",
        type=int,
        nargs="+",
        default=[0],
        help="several: one sweep per training seed and OUT/multi_seed.json saying what held on all",
    )
    sweep.set_defaults(handler=_toy_world_sweep)

    alpha = commands.add_parser("train-alpha", help="train a transparency (RGBA) VAE decoder")
    alpha.add_argument("--base-model", required=True)
    alpha.add_argument("--manifest", required=True, help="RGBA DatasetVersion manifest (Parquet)")
    alpha.add_argument("--sha256", required=True, help="the manifest's frozen checksum")
    alpha.add_argument("--image-root")
    alpha.add_argument("--out", required=True, help="e.g. BASE_MODEL/vae_alpha")
    alpha.add_argument("--steps", type=int, default=2000)
    alpha.add_argument("--batch-size", type=int, default=8)
    alpha.add_argument("--learning-rate", type=float, default=1e-4)
    alpha.add_argument("--resolution", type=int, default=512)
    alpha.add_argument("--seed", type=int, default=0)
    alpha.set_defaults(handler=_train_alpha)

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from training.engine.errors import BaseModelError, ConfigError
    from training.engine.export import ExportError

    try:
        return args.handler(args)
    except (BaseModelError, ConfigError, ExportError) as error:
        # A bad config, folder or export request is the user's to fix: say what, no traceback.
        print(f"{args.command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
