"""The paper's comparison in the toy world: sequential fine-tuning against Style Tailoring.

From the same base (the "domain checkpoint"), train the sequential recipe (alignment, then
style) and Style Tailoring at several t_s and mix ratios with the same steps, generate every arm
and the prompt-engineered base (the base with a sticker suffix) on the same prompts and seeds,
and place each on the text-alignment vs style-similarity plane with its interval. The Pareto
front is marked; the best Style Tailoring run is compared with the prompt-engineered base the
way the paper's table does (relative improvement of style pass rate, prompt alignment and scene
diversity), and the report says, from paired intervals, whether Style Tailoring's points
dominate the sequential recipe's. Nothing is assumed: the figures are what the run measured.

Style pass rate here is the toy CLIP's zero-shot verdict: an image passes when it is closer to
"a sticker of <prompt>" than to "a photo of <prompt>".
"""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.engine import metrics
from training.engine.stats.cluster_bootstrap import cluster_difference, cluster_mean
from training.engine.toy_world import evaluate

BASELINE = "prompt_engineered_base"
STYLE_SUFFIX = "sticker, thick outline, white background"


@dataclass
class SweepSettings:
    t_s_values: list[int] = field(default_factory=lambda: [300, 500, 700])
    mix_ratios: list[float] = field(default_factory=lambda: [0.5])
    steps: int = 80
    batch_size: int = 16
    learning_rate: float = 5e-4
    adapter: str = "full"
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    train_seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def tailoring_arms(t_s_values: list[int], mix_ratios: list[float]) -> list[tuple[str, int, float]]:
    """(arm name, t_s, mix ratio) of every Style Tailoring arm of a sweep."""
    return [
        (f"style_tailoring t_s={t_s} mix={mix:g}", t_s, mix)
        for t_s in t_s_values
        for mix in mix_ratios
    ]


def arm_configs(
    world: dict[str, Any], settings: SweepSettings, out_dir: Path
) -> dict[str, dict[str, Any]]:
    """TrainConfig dicts of every trained arm, all from the same base with the same budget."""
    datasets = {
        role: {k: world["datasets"][role][k] for k in ("manifest", "sha256", "image_root")}
        for role in ("alignment", "style")
    }
    common = {
        "base_model": world["base_model"],
        "datasets": datasets,
        "adapter": settings.adapter,
        "resolution": world["settings"]["resolution"],
        "batch_size": settings.batch_size,
        "steps": settings.steps,
        "learning_rate": settings.learning_rate,
        "checkpoint_every": settings.steps,
        "seed": settings.train_seed,
    }
    arms = {
        "sequential": {**common, "recipe": "sequential", "output_dir": str(out_dir / "sequential")}
    }
    for name, t_s, mix in tailoring_arms(settings.t_s_values, settings.mix_ratios):
        arms[name] = {
            **common,
            "recipe": "style_tailoring",
            "t_s": t_s,
            "mix_ratio": mix,
            "output_dir": str(out_dir / f"st-{t_s}-{mix:g}"),
        }
    return arms


def style_captions(prompt: str) -> tuple[str, str]:
    """The two zero-shot captions the style verdict compares: (sticker, photo) of `prompt`.
    The demo's toy judge reads the same two, so its "passed" is this pass rate's verdict."""
    return f"a sticker of {prompt}", f"a photo of {prompt}"


def style_passes(bundle: Any, scored: dict[str, Any], images: list[Any]) -> list[float]:
    """1 where the toy CLIP finds an image closer to "a sticker of P" than to "a photo of P"."""
    stickers, photos = zip(*(style_captions(p) for p in scored["prompts"]), strict=True)
    rows = metrics.embed_images(bundle, images)
    sticker = metrics.cosine_pairs(rows, metrics.embed_texts(bundle, list(stickers)))
    photo = metrics.cosine_pairs(rows, metrics.embed_texts(bundle, list(photos)))
    return [float(s > p) for s, p in zip(sticker.tolist(), photo.tolist(), strict=True)]


def pareto_front(points: dict[str, dict[str, float]]) -> list[str]:
    """Arms no other arm beats on both text and style (point estimates)."""
    front = []
    for name, p in points.items():
        dominated = any(
            q["text"] >= p["text"]
            and q["style"] >= p["style"]
            and (q["text"] > p["text"] or q["style"] > p["style"])
            for other, q in points.items()
            if other != name
        )
        if not dominated:
            front.append(name)
    return sorted(front)


def _relative(
    new: list[float], old: list[float], prompts_new: list[str], prompts_old: list[str]
) -> dict | None:
    interval = cluster_difference(new, prompts_new, old, prompts_old, relative=True)
    return interval.to_dict() if interval else None


def run_sweep(
    world: dict[str, Any],
    out_dir: str | Path,
    settings: SweepSettings | None = None,
    *,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    from training.engine.config import TrainConfig
    from training.engine.run import run_training

    settings = settings or SweepSettings()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    prompts = [p["text"] for p in evaluate.load_prompts(world)]
    bundle = evaluate.toy_clip(world)
    references = evaluate.references(world)
    generated: dict[str, list] = {
        BASELINE: evaluate.generate_arm(world, prompts, settings.seeds, style_suffix=STYLE_SUFFIX)
    }
    for name, config in arm_configs(world, settings, out_dir).items():
        log(f"sweep: training {name}")
        result = run_training(TrainConfig.from_dict(config), device="cpu")
        generated[name] = evaluate.generate_arm(
            world, prompts, settings.seeds, checkpoint=result.checkpoint_path
        )
    scored = {
        name: evaluate.score_arm(bundle, items, references) for name, items in generated.items()
    }
    passes = {
        name: style_passes(bundle, scored[name], [im for _, _, im in items])
        for name, items in generated.items()
    }
    report = sweep_report(scored, passes, settings=settings.to_dict(), seeds=settings.seeds)
    (out_dir / "sweep.json").write_text(json.dumps(report, indent=2))
    (out_dir / "sweep.svg").write_text(plane_svg(report))
    return report


def _bounds(interval: dict[str, Any] | None) -> dict[str, float] | None:
    return interval and {k: interval[k] for k in ("estimate", "low", "high")}


def _direction(interval: dict[str, Any] | None) -> str | None:
    """`higher` or `lower` when a paired interval excludes zero, None when it includes it."""
    if not interval:
        return None
    return "higher" if interval["low"] > 0 else "lower" if interval["high"] < 0 else None


def _held_on_every_seed(per_seed: dict[int, dict[str, Any]]) -> dict[str, dict[str, str | None]]:
    """Per Style Tailoring arm and metric, the direction against sequential that every seed's
    paired interval showed, or None when any seed's interval included zero or pointed the
    other way (or an arm is missing from a seed)."""
    arms = set.intersection(*(set(s["versus_sequential"]) for s in per_seed.values()))
    held: dict[str, dict[str, str | None]] = {}
    for arm in sorted(arms):
        held[arm] = {}
        for metric in ("text", "style"):
            directions = {
                _direction(s["versus_sequential"][arm][metric]) for s in per_seed.values()
            }
            held[arm][metric] = directions.pop() if len(directions) == 1 else None
    return held


def multi_seed_summary(reports: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """What held over several training seeds: per seed the verdicts, each arm's point and its
    paired difference from sequential, the headline estimates; and which verdicts held on every
    seed (a claim needs all of them)."""
    if not reports:
        raise ValueError("multi_seed_summary: no sweep reports to summarise")
    per_seed = {}
    for seed, report in reports.items():
        headline = report["headline"]
        per_seed[seed] = {
            "best_run": headline["best_run"],
            "pareto_front": report["pareto_front"],
            "dominates": report["style_tailoring_dominates_sequential"],
            "dominates_point_estimates": any(
                d["dominates_point_estimates"] for d in report["dominance"].values()
            ),
            **{
                key: _bounds(headline[key])
                for key in ("style_pass_rate", "prompt_alignment", "scene_diversity")
            },
            "points": {
                arm: {
                    k: p[k]
                    for k in (
                        "text",
                        "text_ci",
                        "style",
                        "style_ci",
                        "style_pass_rate",
                        "diversity",
                    )
                }
                for arm, p in report["points"].items()
            },
            "versus_sequential": {
                arm: {
                    "text": _bounds(d["text_minus_sequential"]),
                    "style": _bounds(d["style_minus_sequential"]),
                }
                for arm, d in report["dominance"].items()
            },
        }
    return {
        "seeds": sorted(per_seed),
        "per_seed": per_seed,
        "dominates_on": sum(s["dominates"] for s in per_seed.values()),
        "dominates_point_estimates_on": sum(
            s["dominates_point_estimates"] for s in per_seed.values()
        ),
        "holds_on_every_seed": {
            "style_tailoring_dominates_sequential": all(s["dominates"] for s in per_seed.values()),
            "versus_sequential": _held_on_every_seed(per_seed),
        },
    }


def sweep_report(
    scored: dict[str, dict[str, Any]],
    passes: dict[str, list[float]],
    *,
    settings: dict[str, Any],
    seeds: list[int],
) -> dict[str, Any]:
    """The plane, its Pareto front, the paper's headline table and the dominance verdict.

    `scored` holds `evaluate.score_arm` results of BASELINE, "sequential" and the
    "style_tailoring ..." arms, all on the same prompts and seeds; `passes` their style verdicts.
    """
    points = {}
    for name, s in scored.items():
        pass_ci = cluster_mean(passes[name], s["prompts"])
        points[name] = {
            "text": s["text_score"]["estimate"],
            "text_ci": [s["text_score"]["low"], s["text_score"]["high"]],
            "style": s["style_score"]["estimate"],
            "style_ci": [s["style_score"]["low"], s["style_score"]["high"]],
            "diversity": s["diversity"]["estimate"] if s["diversity"] else None,
            "style_pass_rate": pass_ci.estimate if pass_ci else None,
            "style_pass_rate_ci": [pass_ci.low, pass_ci.high] if pass_ci else None,
        }
    front = pareto_front(points)
    tailored = [n for n in points if n.startswith("style_tailoring")]
    base = points[BASELINE]
    # Best = largest sum of relative gains in text and style over the prompt-engineered base.
    best = max(
        tailored,
        key=lambda n: (
            (points[n]["text"] - base["text"]) / abs(base["text"] or 1)
            + (points[n]["style"] - base["style"]) / abs(base["style"] or 1)
        ),
    )
    headline = {
        "best_run": best,
        "style_pass_rate": _relative(
            passes[best], passes[BASELINE], scored[best]["prompts"], scored[BASELINE]["prompts"]
        ),
        "prompt_alignment": evaluate.paired(scored[best], scored[BASELINE], "text", relative=True),
        "scene_diversity": evaluate.paired(
            scored[best], scored[BASELINE], "diversity", relative=True
        ),
    }
    dominance = {}
    for name in tailored:
        text = evaluate.paired(scored[name], scored["sequential"], "text")
        style = evaluate.paired(scored[name], scored["sequential"], "style")
        dominance[name] = {
            "text_minus_sequential": text,
            "style_minus_sequential": style,
            "dominates": bool(text and style and text["low"] > 0 and style["low"] > 0),
            "dominates_point_estimates": points[name]["text"] >= points["sequential"]["text"]
            and points[name]["style"] >= points["sequential"]["style"],
        }
    return {
        "settings": settings,
        "prompts": len(set(scored[BASELINE]["prompts"])),
        "seeds": list(seeds),
        "points": points,
        "pareto_front": front,
        "headline": headline,
        "dominance": dominance,
        "style_tailoring_dominates_sequential": any(d["dominates"] for d in dominance.values()),
    }


KINDS = (
    (BASELINE, "prompt-engineered base", "#7f7f7f", "s"),
    ("sequential", "sequential", "#c0392b", "D"),
    ("style_tailoring", "Style Tailoring", "#2471a3", "o"),
)


def _kind(name: str) -> tuple[str, str, str, str]:
    return next(k for k in KINDS if name.startswith(k[0]))


def plane_svg(report: dict[str, Any]) -> str:
    """Text alignment (x) vs style similarity (y), each arm with both intervals, front joined.

    Text stays text in the SVG (not glyph paths), so the page can be searched and read by tests.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = report["points"]
    front_names = set(report["pareto_front"])
    with plt.rc_context({"svg.fonttype": "none", "font.size": 9}):
        figure, ax = plt.subplots(figsize=(7.5, 4.6))
        labelled: set[str] = set()
        for name, p in points.items():
            key, label, colour, marker = _kind(name)
            ax.errorbar(
                p["text"],
                p["style"],
                xerr=[[p["text"] - p["text_ci"][0]], [p["text_ci"][1] - p["text"]]],
                yerr=[[p["style"] - p["style_ci"][0]], [p["style_ci"][1] - p["style"]]],
                fmt=marker,
                color=colour,
                markersize=8 if name in front_names else 6,
                markeredgecolor="black" if name in front_names else colour,
                capsize=3,
                label=None if key in labelled else label,
            )
            labelled.add(key)
            ax.annotate(
                name.replace("style_tailoring ", "ST ").replace(BASELINE, "base + style words"),
                (p["text"], p["style"]),
                fontsize=8,
                xytext=(6, 5),
                textcoords="offset points",
            )
        front = sorted((points[n]["text"], points[n]["style"]) for n in front_names)
        ax.plot(
            [x for x, _ in front],
            [y for _, y in front],
            "--",
            color="black",
            linewidth=1,
            label="Pareto front (outlined)",
        )
        ax.set_xlabel("text alignment (CLIP, mean over prompts × seeds; bars: 95 % CI by prompt)")
        ax.set_ylabel("style similarity to the style references")
        ax.set_title("Trade-off sweep: sequential vs Style Tailoring (up and right is better)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
        buffer = io.StringIO()
        figure.savefig(buffer, format="svg", bbox_inches="tight")
        plt.close(figure)
    text = buffer.getvalue()
    return text[text.index("<svg") :]
