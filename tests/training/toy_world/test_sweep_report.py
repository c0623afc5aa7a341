"""The sweep's report from planted scores: front, dominance verdict, headline table, plane."""

from __future__ import annotations

import json

import numpy as np
import pytest

from training.engine.stats.cluster_bootstrap import cluster_mean
from training.engine.toy_world.sweep import (
    BASELINE,
    multi_seed_summary,
    plane_svg,
    sweep_report,
)

PROMPTS = [f"prompt {i}" for i in range(12)]
SEEDS = [0, 1]
ST_300 = "style_tailoring t_s=300 mix=0.5"
ST_700 = "style_tailoring t_s=700 mix=0.5"


def _scored(text: float, style: float, diversity: float, rng: np.random.Generator) -> dict:
    prompts = [p for p in PROMPTS for _ in SEEDS]
    effect = {p: 0.02 * (i % 3) for i, p in enumerate(PROMPTS)}  # shared by every arm
    texts = [text + effect[p] + rng.normal(0, 0.002) for p in prompts]
    styles = [style + effect[p] + rng.normal(0, 0.002) for p in prompts]
    per_prompt = {p: diversity + rng.normal(0, 0.002) for p in PROMPTS}
    result = {"prompts": prompts, "text": texts, "style": styles, "diversity_by_prompt": per_prompt}
    for name, values, clusters in (
        ("text_score", texts, prompts),
        ("style_score", styles, prompts),
        ("diversity", list(per_prompt.values()), list(per_prompt)),
    ):
        result[name] = cluster_mean(values, clusters).to_dict()
    return result


def test_a_planted_sweep_finds_its_front_its_dominance_and_its_relative_gains():
    rng = np.random.default_rng(0)
    scored = {
        BASELINE: _scored(0.20, 0.10, 0.30, rng),
        "sequential": _scored(0.18, 0.30, 0.25, rng),  # style bought with text
        "style_tailoring t_s=300 mix=0.5": _scored(0.22, 0.32, 0.33, rng),  # dominates
        "style_tailoring t_s=700 mix=0.5": _scored(0.17, 0.20, 0.30, rng),  # dominated
    }
    passes = {
        BASELINE: [float(i % 4 == 0) for i in range(24)],  # 25 %
        "sequential": [1.0] * 24,
        "style_tailoring t_s=300 mix=0.5": [float(i % 2 == 0) for i in range(24)],  # 50 %
        "style_tailoring t_s=700 mix=0.5": [0.0] * 24,
    }
    report = sweep_report(scored, passes, settings={"steps": 1}, seeds=SEEDS)

    assert report["prompts"] == 12
    assert report["pareto_front"] == ["style_tailoring t_s=300 mix=0.5"]  # beats every arm
    headline = report["headline"]
    assert headline["best_run"] == "style_tailoring t_s=300 mix=0.5"
    alignment = headline["prompt_alignment"]  # (0.22 + e) / (0.20 + e) - 1 over prompts
    assert 0.05 < alignment["estimate"] < 0.11 and alignment["low"] > 0, alignment
    assert headline["style_pass_rate"]["estimate"] == 1.0  # 50 % vs 25 %: +100 %
    assert headline["scene_diversity"]["low"] > 0
    dominance = report["dominance"]
    assert dominance["style_tailoring t_s=300 mix=0.5"]["dominates"]
    assert not dominance["style_tailoring t_s=700 mix=0.5"]["dominates"]
    assert report["style_tailoring_dominates_sequential"]

    svg = plane_svg(report)
    assert svg.startswith("<svg")
    for label in ("Pareto front", "text alignment", "style similarity", "ST t_s=300 mix=0.5"):
        assert label in svg, label  # text kept as text, not glyph paths


def test_a_verdict_holds_over_seeds_only_when_every_seed_shows_it():
    rng = np.random.default_rng(1)
    passes = {
        name: [1.0, 0.0] * 12
        for name in (BASELINE, "sequential", "style_tailoring t_s=500 mix=0.5")
    }

    def report(tailored_style: float) -> dict:
        scored = {
            BASELINE: _scored(0.20, 0.10, 0.30, rng),
            "sequential": _scored(0.18, 0.30, 0.25, rng),
            "style_tailoring t_s=500 mix=0.5": _scored(0.22, tailored_style, 0.30, rng),
        }
        return sweep_report(scored, passes, settings={}, seeds=SEEDS)

    summary = multi_seed_summary({0: report(0.34), 1: report(0.26)})
    assert summary["seeds"] == [0, 1]
    assert summary["per_seed"][0]["dominates"] and not summary["per_seed"][1]["dominates"]
    assert summary["dominates_on"] == 1
    assert not summary["holds_on_every_seed"]["style_tailoring_dominates_sequential"]


def test_an_arm_s_difference_from_sequential_holds_only_when_every_seed_s_interval_shows_it():
    rng = np.random.default_rng(2)
    passes = {name: [1.0, 0.0] * 12 for name in (BASELINE, "sequential", ST_300, ST_700)}

    def report(st_700_text: float) -> dict:
        scored = {
            BASELINE: _scored(0.20, 0.10, 0.30, rng),
            "sequential": _scored(0.20, 0.30, 0.25, rng),
            ST_300: _scored(0.20, 0.25, 0.30, rng),  # less style, same text: every seed
            ST_700: _scored(st_700_text, 0.30, 0.30, rng),  # text flips with the seed
        }
        return sweep_report(scored, passes, settings={}, seeds=SEEDS)

    summary = multi_seed_summary({0: report(0.23), 1: report(0.17), 2: report(0.23)})

    st_300 = summary["per_seed"][0]["versus_sequential"][ST_300]
    assert st_300["style"]["high"] < 0 < st_300["text"]["high"] and st_300["text"]["low"] < 0
    assert summary["per_seed"][1]["versus_sequential"][ST_700]["text"]["high"] < 0
    assert summary["per_seed"][2]["points"][ST_700]["text_ci"][0] > 0.2
    # Absolute pass rates stay in the summary: a relative gain over a base that passes nothing
    # has no value.
    assert summary["per_seed"][0]["points"][ST_300]["style_pass_rate"] == 0.5
    held = summary["holds_on_every_seed"]["versus_sequential"]
    assert held[ST_300] == {"text": None, "style": "lower"}
    assert held[ST_700]["text"] is None  # higher on seeds 0 and 2, lower on seed 1
    assert not summary["holds_on_every_seed"]["style_tailoring_dominates_sequential"]


def test_a_summary_of_no_sweeps_is_an_error_not_an_empty_claim():
    with pytest.raises(ValueError, match="no sweep reports"):
        multi_seed_summary({})


def test_a_multi_seed_run_stopped_part_way_leaves_the_summary_of_its_finished_seeds(
    tmp_path, monkeypatch
):
    from training.engine import __main__ as cli
    from training.engine.toy_world import build, sweep

    rng = np.random.default_rng(3)
    passes = {name: [1.0, 0.0] * 12 for name in (BASELINE, "sequential", ST_300)}

    def planted_sweep(world, out_dir, settings, *, log):
        if settings.train_seed == 1:
            raise KeyboardInterrupt  # the second seed never finishes
        scored = {
            BASELINE: _scored(0.20, 0.10, 0.30, rng),
            "sequential": _scored(0.20, 0.30, 0.25, rng),
            ST_300: _scored(0.20, 0.25, 0.30, rng),
        }
        return sweep_report(scored, passes, settings=settings.to_dict(), seeds=SEEDS)

    monkeypatch.setattr(build, "load_toy_world", lambda _: {})
    monkeypatch.setattr(sweep, "run_sweep", planted_sweep)
    with pytest.raises(KeyboardInterrupt):
        cli.main(["toy-world-sweep", "world", "--out", str(tmp_path), "--train-seeds", "0", "1"])

    summary = json.loads((tmp_path / "multi_seed.json").read_text())
    assert summary["seeds"] == [0] and summary["train_seeds_planned"] == [0, 1]
    assert summary["holds_on_every_seed"]["versus_sequential"][ST_300]["style"] == "lower"
