"""Transparency decoder (Emu stickers): the VAE decoder with a fourth, alpha, output channel.

The new channel's output-convolution weights and bias start as the mean of the R, G and B ones, so
before training alpha equals mean(RGB) exactly and the RGB outputs are untouched. Only the decoder
side trains (post_quant_conv + decoder); the encoder and the UNet stay frozen, so latents keep
meaning what the UNet learned.

Training pairs: the encoder sees the RGBA image composited on `BACKGROUND` (white, the background
the UNet is trained on, see data.TRAINING_BACKGROUND); the loss is MSE of the RGB output against
that composite plus `alpha_weight` x L1 of the alpha output against the true alpha. Outputs are in
[-1, 1] like the RGB channels; alpha in [0, 1] is (output + 1) / 2.

A decoder is saved as a diffusers AutoencoderKL folder (loadable with `from_pretrained`) plus
`lineage.json`, conventionally as `<base_model>/vae_alpha`.

Resuming: with a `resume_dir`, training writes its whole state (weights, optimiser, sampling RNG,
step, losses, the before-metrics) every `checkpoint_every` steps and when cancelled, and a later
call with the same folder continues from it; the result is the same as an uninterrupted run.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

import training.engine  # noqa: F401  (torchvision shim before diffusers)
from training.engine.data import TRAINING_BACKGROUND

BACKGROUND = TRAINING_BACKGROUND
COMPONENT_NAME = "vae_alpha"
RESUME_FILE = "state.pt"
HELD_OUT_SPLITS = ("eval", "val", "test")


def build_alpha_decoder(vae: Any) -> Any:
    """A copy of `vae` whose decoder outputs RGBA, alpha initialised to mean(RGB)."""
    from diffusers import AutoencoderKL

    config = dict(vae.config)
    if config["out_channels"] != 3:
        raise ValueError(f"vae: expected 3 output channels, got {config['out_channels']}")
    config["out_channels"] = 4
    decoder = AutoencoderKL.from_config(config)
    state = {k: v for k, v in vae.state_dict().items() if not k.startswith("decoder.conv_out.")}
    missing, unexpected = decoder.load_state_dict(state, strict=False)
    if unexpected or set(missing) != {"decoder.conv_out.weight", "decoder.conv_out.bias"}:
        raise ValueError(f"vae: unexpected layout (missing {missing}, unexpected {unexpected})")
    old = vae.decoder.conv_out
    with torch.no_grad():
        decoder.decoder.conv_out.weight[:3].copy_(old.weight)
        decoder.decoder.conv_out.weight[3].copy_(old.weight.mean(dim=0))
        decoder.decoder.conv_out.bias[:3].copy_(old.bias)
        decoder.decoder.conv_out.bias[3].copy_(old.bias.mean())
    decoder.to(old.weight.device)
    if old.weight.dtype != torch.float32:
        decoder.to(dtype=old.weight.dtype)
    return decoder.eval()


def rgba_to_tensors(image: Image.Image, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(RGB composited on BACKGROUND in [-1, 1] [3,R,R], alpha in [0, 1] [1,R,R])."""
    rgba = image.convert("RGBA").resize((resolution, resolution), Image.Resampling.BICUBIC)
    array = np.asarray(rgba, dtype=np.float32) / 255.0
    alpha = array[..., 3:4]
    background = np.asarray(BACKGROUND, dtype=np.float32) / 255.0
    composite = array[..., :3] * alpha + background * (1 - alpha)
    rgb = torch.from_numpy(composite * 2 - 1).permute(2, 0, 1).contiguous()
    return rgb, torch.from_numpy(alpha).permute(2, 0, 1).contiguous()


def alpha_metrics(
    predicted: torch.Tensor, target: torch.Tensor, threshold: float = 0.5
) -> dict[str, float]:
    """IoU of the thresholded masks and mean absolute alpha error, alphas in [0, 1]."""
    predicted_mask, target_mask = predicted > threshold, target > threshold
    union = (predicted_mask | target_mask).sum().item()
    intersection = (predicted_mask & target_mask).sum().item()
    return {
        "iou": 1.0 if union == 0 else intersection / union,
        "mae": (predicted - target).abs().mean().item(),
    }


@torch.no_grad()
def predict_alpha(decoder: Any, rgb: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
    """Alpha in [0, 1] for composited RGB inputs, through the frozen encoder (posterior mode)."""
    outputs = []
    for start in range(0, len(rgb), batch_size):
        chunk = rgb[start : start + batch_size].to(decoder.device, decoder.dtype)
        latents = decoder.encode(chunk).latent_dist.mode()
        decoded = decoder.decode(latents).sample
        outputs.append(((decoded[:, 3:4].float() + 1) / 2).clamp(0, 1).cpu())
    return torch.cat(outputs)


@dataclass
class AlphaTrainConfig:
    steps: int = 200
    batch_size: int = 8
    learning_rate: float = 1e-3
    alpha_weight: float = 1.0
    resolution: int = 512
    seed: int = 0
    checkpoint_every: int = 0  # steps between resume states (0: only when cancelled)
    # Part of the rows held out for metrics when the version marks none as eval/val/test.
    holdout_fraction: float = 0.2


@dataclass
class AlphaTrainResult:
    losses: list[float]  # every step's loss, including steps done before a resume
    before: dict[str, float]
    after: dict[str, float]
    seconds: float
    cancelled: bool = False
    resumed_from_step: int = 0

    @property
    def step(self) -> int:
        return len(self.losses)


def _save_resume_state(resume_dir: Path, state: dict[str, Any]) -> None:
    resume_dir.mkdir(parents=True, exist_ok=True)
    temporary = resume_dir / f"{RESUME_FILE}.{os.getpid()}.tmp"
    torch.save(state, temporary)
    os.replace(temporary, resume_dir / RESUME_FILE)  # a crash mid-write keeps the previous state


def load_resume_state(resume_dir: str | Path | None) -> dict[str, Any] | None:
    if resume_dir is None or not (Path(resume_dir) / RESUME_FILE).is_file():
        return None
    return torch.load(Path(resume_dir) / RESUME_FILE, map_location="cpu", weights_only=True)


def train_alpha_decoder(
    decoder: Any,
    train_images: Sequence[Image.Image],
    config: AlphaTrainConfig,
    *,
    eval_images: Sequence[Image.Image] = (),
    progress: Callable[[int, int, float], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    resume_dir: str | Path | None = None,
) -> AlphaTrainResult:
    """Fine-tune the decoder side in place on RGBA images; metrics on `eval_images` before/after.

    A cancel stops between steps (saving a resume state when `resume_dir` is given) and returns
    a result with `cancelled=True`.
    """
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    device = decoder.device
    pairs = [rgba_to_tensors(image, config.resolution) for image in train_images]
    rgb = torch.stack([p[0] for p in pairs])
    alpha = torch.stack([p[1] for p in pairs])
    eval_pairs = [rgba_to_tensors(image, config.resolution) for image in eval_images]
    eval_rgb = torch.stack([p[0] for p in eval_pairs]) if eval_pairs else None
    eval_alpha = torch.stack([p[1] for p in eval_pairs]) if eval_pairs else None

    def evaluate() -> dict[str, float]:
        if eval_rgb is None or eval_alpha is None:  # both or neither: same condition
            return {}
        return alpha_metrics(predict_alpha(decoder, eval_rgb), eval_alpha)

    resume_dir = Path(resume_dir) if resume_dir is not None else None
    resumed = load_resume_state(resume_dir)
    before = resumed["before"] if resumed else evaluate()
    decoder.requires_grad_(False)
    trainable = list(decoder.decoder.parameters()) + list(decoder.post_quant_conv.parameters())
    for parameter in trainable:
        parameter.requires_grad_(True)
    with torch.no_grad():  # the encoder is frozen: its posterior per image never changes
        posteriors = torch.cat(
            [
                decoder.encode(rgb[i : i + 16].to(device, decoder.dtype)).latent_dist.parameters
                for i in range(0, len(rgb), 16)
            ]
        )
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate)
    generator = torch.Generator().manual_seed(config.seed)
    losses: list[float] = []
    if resumed:
        decoder.load_state_dict(resumed["model"])
        optimizer.load_state_dict(resumed["optimizer"])
        generator.set_state(resumed["generator"])
        losses = list(resumed["losses"])

    def save_state() -> None:
        if resume_dir is not None:
            _save_resume_state(
                resume_dir,
                {
                    "model": decoder.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "generator": generator.get_state(),
                    "losses": losses,
                    "before": before,
                },
            )

    decoder.train()
    cancelled = False
    for step in range(len(losses), config.steps):
        if should_cancel is not None and should_cancel():
            cancelled = True
            save_state()
            break
        index = torch.randint(len(rgb), (config.batch_size,), generator=generator)
        mean, logvar = posteriors[index].float().chunk(2, dim=1)
        noise = torch.randn(mean.shape, generator=generator).to(device)
        latents = mean + torch.exp(0.5 * logvar.clamp(-30, 20)) * noise
        output = decoder.decode(latents.to(decoder.dtype)).sample.float()
        target_rgb, target_alpha = rgb[index].to(device), alpha[index].to(device)
        loss = F.mse_loss(output[:, :3], target_rgb) + config.alpha_weight * F.l1_loss(
            (output[:, 3:4] + 1) / 2, target_alpha
        )
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if config.checkpoint_every and (step + 1) % config.checkpoint_every == 0:
            save_state()
        if progress is not None:
            progress(step + 1, config.steps, losses[-1])
    decoder.eval().requires_grad_(False)
    return AlphaTrainResult(
        losses,
        before,
        {} if cancelled else evaluate(),
        time.perf_counter() - started,
        cancelled=cancelled,
        resumed_from_step=len(resumed["losses"]) if resumed else 0,
    )


def save_decoder(decoder: Any, path: str | Path, lineage: dict[str, Any] | None = None) -> Path:
    path = Path(path)
    decoder.save_pretrained(path, safe_serialization=True)
    record = {"component": COMPONENT_NAME, "background": list(BACKGROUND), **(lineage or {})}
    (path / "lineage.json").write_text(json.dumps(record, indent=2, default=str))
    return path


def load_decoder(path: str | Path) -> Any:
    from diffusers import AutoencoderKL

    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: not a transparency decoder folder (no config.json)")
    decoder = AutoencoderKL.from_pretrained(path, local_files_only=True)
    if decoder.config.out_channels != 4:
        raise ValueError(
            f"{path}: decoder has {decoder.config.out_channels} output channels, not 4"
        )
    return decoder.eval()


def split_held_out(
    rows: Sequence[tuple[str, str | None, Image.Image]], fraction: float
) -> tuple[list[Image.Image], list[Image.Image], dict[str, Any]]:
    """(train, held out, how) from (sha256, split, image) rows.

    Rows marked eval/val/test are the held-out set. A version that marks none gives up every
    k-th row in sha256 order (k = 1/fraction), so the same version always holds out the same
    images and metrics of two decoders trained on it compare.
    """
    marked = [r for r in rows if r[1] in HELD_OUT_SPLITS]
    if marked or fraction <= 0 or len(rows) < 2:
        held = {r[0] for r in marked}
        rule = "split" if marked else "none"
    else:
        every = max(2, round(1 / fraction))
        ordered = sorted(rows, key=lambda r: r[0])
        held = {r[0] for index, r in enumerate(ordered) if index % every == every - 1}
        if not held:  # fewer rows than k: still hold one out
            held = {ordered[-1][0]}
        rule = f"every {every}th row by sha256"
    train = [r[2] for r in rows if r[0] not in held]
    evaluation = [r[2] for r in rows if r[0] in held]
    return train, evaluation, {"rule": rule, "sha256": sorted(held)}


def train_transparency_decoder(
    base_model: str | Path,
    manifest: str | Path,
    manifest_sha256: str,
    output: str | Path,
    config: AlphaTrainConfig,
    *,
    resolver: Any = None,
    image_root: str | Path | None = None,
    lineage: dict[str, Any] | None = None,
    progress: Callable[[int, int, float], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    device: str | torch.device | None = None,
    resume_dir: str | Path | None = None,
) -> tuple[Path | None, AlphaTrainResult]:
    """The job body: base model's VAE + an RGBA DatasetVersion (checksum verified) -> a saved
    decoder. Held-out rows (see `split_held_out`) give the before/after metrics.

    Returns (None, result) when cancelled: nothing is saved at `output`, and calling again with
    the same `resume_dir` continues. The resume folder is removed once the decoder is saved.
    """
    from diffusers import AutoencoderKL

    from training.engine.base_model import check_base_model
    from training.engine.data import ImageCaptionDataset

    dataset = ImageCaptionDataset.from_manifest(
        manifest, manifest_sha256, config.resolution, resolver=resolver, image_root=image_root
    )
    readable: list[tuple[str, str | None, Image.Image]] = []
    skipped: list[str] = []
    for row in dataset.rows:
        try:
            source = dataset.source(row)
            image = (
                source
                if isinstance(source, Image.Image)
                else Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
            )
            image.load()
        except Exception:  # one unreadable file must not stop the job; it is reported
            skipped.append(row.image_sha256)
            continue
        if "A" not in image.getbands():
            skipped.append(row.image_sha256)  # no alpha to learn from
            continue
        readable.append((row.image_sha256, row.split, image))
    train_images, eval_images, held_out = split_held_out(readable, config.holdout_fraction)
    if not train_images:
        raise ValueError(f"{manifest}: no readable RGBA training images ({len(skipped)} skipped)")
    # Only the VAE: loading the UNet and text encoder of a real model would cost gigabytes.
    vae = AutoencoderKL.from_pretrained(check_base_model(base_model) / "vae", local_files_only=True)
    decoder = build_alpha_decoder(vae)
    if device is not None:
        decoder.to(device)
    result = train_alpha_decoder(
        decoder,
        train_images,
        config,
        eval_images=eval_images,
        progress=progress,
        should_cancel=should_cancel,
        resume_dir=resume_dir,
    )
    if result.cancelled:
        return None, result
    record = {
        **(lineage or {}),
        "base_model": str(base_model),
        "dataset": {"manifest": str(manifest), "sha256": manifest_sha256},
        "config": asdict(config),
        "metrics_before": result.before,
        "metrics_after": result.after,
        "skipped_images": skipped,
        "train_images": len(train_images),
        "eval_images": len(eval_images),
        "held_out": held_out,
        "steps": result.step,
        "resumed_from_step": result.resumed_from_step,
    }
    path = save_decoder(decoder, output, record)
    if resume_dir is not None:
        shutil.rmtree(resume_dir, ignore_errors=True)
    return path, result
