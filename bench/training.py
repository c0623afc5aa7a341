"""Training engine benchmark: engine step vs a bare diffusers loop, latent cache, peak memory.

Runs standalone (`python bench/training.py [--quick] [--long]`): the tiny model (DESIGN §6b), then
an SD 1.5-sized and an SDXL-sized UNet (`bench/training_sizes.py`, LoRA, batch 1), each in its own
process so its peak RSS is its own. `--only tiny|sd15|sdxl` runs one. The bare
baseline is the inner loop of diffusers' `train_text_to_image.py` written out by hand on the same
components, batch and image files, in the same process; engine and bare steps are timed in
alternating blocks so a noisy machine slows both alike, and medians are reported. The last line
printed is one JSON object (DESIGN §6c).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import training.engine  # noqa: F401  (torchvision shim before diffusers)


def bare_loop_factory(base: Path, rows: list, image_root: Path, batch_size: int, fused: bool):
    """One step of a plain diffusers fine-tuning loop: read, encode, noise, predict, step."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from diffusers.optimization import get_scheduler
    from PIL import Image
    from transformers import CLIPTextModel, CLIPTokenizer

    local = {"local_files_only": True}
    unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet", **local).train()
    vae = AutoencoderKL.from_pretrained(base, subfolder="vae", **local).requires_grad_(False)
    text_encoder = CLIPTextModel.from_pretrained(
        base, subfolder="text_encoder", **local
    ).requires_grad_(False)
    tokenizer = CLIPTokenizer.from_pretrained(base, subfolder="tokenizer", **local)
    scheduler = DDPMScheduler.from_pretrained(base, subfolder="scheduler", **local)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-4, fused=fused or None)
    lr_scheduler = get_scheduler("constant", optimizer=optimizer)
    position = [0]

    def load(path: Path) -> torch.Tensor:
        image = Image.open(path).convert("RGB").resize((32, 32))
        return torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)

    def step() -> float:
        batch = [rows[(position[0] + i) % len(rows)] for i in range(batch_size)]
        position[0] += batch_size
        pixels = torch.stack([load(image_root / row["image_path"]) for row in batch])
        ids = tokenizer(
            [row["caption"] for row in batch],
            padding="max_length",
            max_length=tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids
        with torch.no_grad():
            latents = vae.encode(pixels).latent_dist.sample() * vae.config.scaling_factor
            hidden = text_encoder(ids)[0]
        noise = torch.randn_like(latents)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (batch_size,)).long()
        noisy = scheduler.add_noise(latents, noise, timesteps)
        prediction = unet(noisy, timesteps, hidden).sample
        loss = F.mse_loss(prediction.float(), noise.float())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    return step


def timed(function, count: int) -> list[float]:
    times = []
    for _ in range(count):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and images")
    parser.add_argument(
        "--long", action="store_true", help="real-size UNets: more steps (tens of minutes on CPU)"
    )
    parser.add_argument("--only", choices=("tiny", "sd15", "sdxl"), default=None)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    args = parser.parse_args()
    if args.only is None:
        run_all(args)
    elif args.only == "tiny":
        tiny(args)
    else:
        real_size(args)


def _child(args: argparse.Namespace, only: str) -> dict:
    import subprocess

    command = [sys.executable, __file__, "--only", only]
    command += ["--quick"] * args.quick + ["--long"] * args.long
    command += ["--threads", str(args.threads)] if args.threads else []
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        return {"model": only, "error": completed.stderr.strip().splitlines()[-1:]}
    return json.loads(completed.stdout.strip().splitlines()[-1])


def run_all(args: argparse.Namespace) -> None:
    results = {name: _child(args, name) for name in ("tiny", "sd15", "sdxl")}
    for name, figures in results.items():
        print(f"{name}: {figures}")
    print(json.dumps(results))


def real_size(args: argparse.Namespace) -> None:
    import torch

    from bench.training_sizes import bench_size

    if args.threads:
        torch.set_num_threads(args.threads)
    blocks, block_steps, images = (4, 3, 8) if args.long else (2, 1, 4)
    work = Path(tempfile.mkdtemp(prefix=f"bench-training-{args.only}-"))
    figures = bench_size(args.only, work, blocks=blocks, block_steps=block_steps, images=images)
    figures["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    figures["torch_threads"] = torch.get_num_threads()
    figures["device"] = "cpu"
    print(json.dumps(figures))


def tiny(args: argparse.Namespace) -> None:
    blocks, block_steps, images = (4, 5, 16) if args.quick else (8, 10, 64)
    batch_size = 4

    import pyarrow.parquet as pq
    import torch

    from training.engine.config import TrainConfig
    from training.engine.loop import Trainer
    from training.engine.tiny import save_tiny_base_model
    from training.engine.toydata import write_toy_dataset

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    work = Path(tempfile.mkdtemp(prefix="bench-training-"))
    base = save_tiny_base_model(work / "base")
    spec = write_toy_dataset(work / "data", "domain", images, seed=0)
    rows = pq.read_table(spec["manifest"]).to_pylist()

    def config(name: str, **extra) -> TrainConfig:
        return TrainConfig.from_dict(
            {
                "recipe": "domain",
                "base_model": str(base),
                "output_dir": str(work / name),
                "datasets": {"domain": spec},
                "adapter": "full",
                "resolution": 32,
                "batch_size": batch_size,
                "steps": 10_000,
                "checkpoint_every": 10_000,
                "learning_rate": 1e-4,
                **extra,
            }
        )

    engine = Trainer(config("engine"), device="cpu")
    bare = bare_loop_factory(base, rows, Path(spec["image_root"]), batch_size, fused=False)
    bare_fused = bare_loop_factory(base, rows, Path(spec["image_root"]), batch_size, fused=True)
    for function in (engine.train_step, bare, bare_fused):  # warm-up: allocator, lazy inits
        timed(function, 2)
    engine_times, bare_times, fused_times = [], [], []
    for _ in range(blocks):
        engine_times += timed(engine.train_step, block_steps)
        bare_times += timed(bare, block_steps)
        fused_times += timed(bare_fused, block_steps)
    engine_step = statistics.median(engine_times)
    bare_step = statistics.median(bare_times)
    fused_step = statistics.median(fused_times)

    # Latent cache: epochs without a cache vs with a warm one, alternated like the steps above.
    epoch_steps = images // batch_size
    cold = Trainer(config("nocache"), device="cpu")
    cached = Trainer(config("cache", latent_cache_dir=str(work / "latents")), device="cpu")
    timed(cold.train_step, 1)
    timed(cached.train_step, epoch_steps + 1)  # fills the cache
    no_cache_epochs, warm_epochs, no_cache_draws, warm_draws = [], [], [], []
    for _ in range(3):
        no_cache_epochs.append(sum(timed(cold.train_step, epoch_steps)))
        warm_epochs.append(sum(timed(cached.train_step, epoch_steps)))
        no_cache_draws.append(sum(timed(cold.draw_batch, epoch_steps)))
        warm_draws.append(sum(timed(cached.draw_batch, epoch_steps)))
    no_cache_epoch, warm_epoch = statistics.median(no_cache_epochs), statistics.median(warm_epochs)
    no_cache_draw, warm_draw = statistics.median(no_cache_draws), statistics.median(warm_draws)

    figures = {
        "step_time_vs_bare": round(engine_step / bare_step, 3),
        "step_time_vs_bare_fused_adamw": round(engine_step / fused_step, 3),
        "engine_step_ms": round(engine_step * 1000, 2),
        "bare_step_ms": round(bare_step * 1000, 2),
        "bare_fused_step_ms": round(fused_step * 1000, 2),
        "latent_cache_speedup": round(no_cache_epoch / warm_epoch, 3),
        "latent_cache_data_path_speedup": round(no_cache_draw / warm_draw, 3),
        "epoch_s_no_cache": round(no_cache_epoch, 3),
        "epoch_s_warm_cache": round(warm_epoch, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "batch_size": batch_size,
        "resolution": 32,
        "steps_timed_each": len(engine_times),
        "torch_threads": torch.get_num_threads(),
        "device": "cpu",
    }
    print(f"engine {figures['engine_step_ms']} ms/step, bare {figures['bare_step_ms']} ms/step")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
