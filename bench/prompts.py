"""Benchmark: embedding + dedup of a templated prompt set against a plain sentence-embedding loop.

Usage: python bench/prompts.py [--quick | --full] [--n N] [--threshold T]
Default 15,000 prompts (both arms embed them: ~70 s at ~450 prompts/s on 2 idle cores, ~7
minutes under load); --full 100,000 (~7.5 minutes idle), --quick 2,000.

Both arms use the same loaded all-MiniLM-L6-v2, batch size and prompts, in this process. The set is
cut into rounds; each round times the plain loop (`model.encode`) and our `PromptEmbedder` on the
same slice, alternating which goes first, so load from other processes on the machine hits both
arms alike. Our arm then runs `find_duplicates` over the whole set, and its total (embedding +
dedup) is compared with the plain loop's embedding alone:
    embed_vs_plain = plain prompts/s / our prompts/s-including-dedup   (target >= 0.8)
Also reported: re-embedding the set from the cache, how many exact near-duplicate pairs (found by
an exact FAISS search for a seeded sample of prompts) end up inside one group (the partitioned
search's recall), diversity, and peak RSS. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import faiss
import numpy as np

from curation.prompts.dedup import diversity, find_duplicates
from curation.prompts.embeddings import PromptEmbedder, load_sentence_model, model_id
from curation.prompts.templates import PromptTemplate

SUBJECTS = [
    "a corgi", "a tabby cat", "a red panda", "an astronaut", "a robot", "a wizard", "a dragon",
    "a penguin", "a sloth", "a fox", "a koala", "an octopus", "a hedgehog", "a unicorn", "a bee",
    "a frog", "a pirate", "a ninja", "a knight", "a mermaid", "a ghost", "a dinosaur", "an owl",
    "a hamster", "a llama", "a raccoon", "a chef", "a ballerina", "a skeleton", "a snowman",
    "a panda", "a lion", "a turtle", "a whale", "a parrot", "a capybara", "a barista",
    "a scientist", "a viking", "a grandma",
]  # fmt: skip
ACTIONS = [
    "riding a bicycle", "eating ramen", "reading a book", "playing the guitar", "surfing a wave",
    "drinking coffee", "juggling oranges", "painting a canvas", "flying a kite", "baking bread",
    "skateboarding", "doing yoga", "playing chess", "watering plants", "knitting a scarf",
    "lifting weights", "singing karaoke", "fishing", "taking a selfie", "building a sandcastle",
    "riding a rocket", "hugging a teddy bear", "eating a donut", "dancing", "sleeping in a hammock",
    "playing video games", "blowing bubbles", "roasting marshmallows", "walking a dog", "typing on a laptop",
]  # fmt: skip
SETTINGS = [
    "in a park", "on the moon", "in a cozy kitchen", "at the beach", "in a neon city at night",
    "in a snowy forest", "on a mountain top", "under the sea", "in a library", "in a desert",
    "on a pirate ship", "in a candy land", "in a rainy street", "in space", "in a flower field",
    "in a castle", "at a carnival", "in a jungle", "on a rooftop", "in a cafe", "in a bamboo forest",
    "on a farm", "in a volcano", "on a cloud", "in a subway station",
]  # fmt: skip
EMOTIONS = [
    "happy:3", "sad", "surprised", "angry", "sleepy", "excited:2", "nervous", "proud",
    "confused", "joyful", "grumpy", "in love",
]  # fmt: skip


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def templated_prompts(n: int, seed: int) -> list[str]:
    template = PromptTemplate(
        "{subject} {action} {setting}, {emotion}",
        {"subject": SUBJECTS, "action": ACTIONS, "setting": SETTINGS, "emotion": EMOTIONS},
    )
    return [p.text for p in template.sample(n, seed=seed)]


def sampled_group_recall(
    vectors: np.ndarray, groups: list[list[int]], threshold: float, queries: int, seed: int
) -> tuple[float, int]:
    """Share of exact >=threshold pairs, for a seeded sample of prompts, that share a group."""
    labels = np.arange(len(vectors))
    for number, group in enumerate(groups):
        labels[group] = len(vectors) + number
    rng = np.random.default_rng(seed)
    sample = rng.choice(len(vectors), min(queries, len(vectors)), replace=False)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    lims, _, ids = index.range_search(vectors[sample], threshold)
    rows = np.repeat(sample, np.diff(lims.astype(np.int64)))
    keep = rows != ids
    rows, ids = rows[keep], ids[keep]
    if len(rows) == 0:
        return 1.0, 0
    return float((labels[rows] == labels[ids]).mean()), int(len(rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="2,000 prompts instead of 15,000")
    size.add_argument(
        "--full", action="store_true", help="100,000 prompts (~7.5 min on 2 idle cores)"
    )
    parser.add_argument("--n", type=int, default=None)
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    n = args.n or (2_000 if args.quick else 100_000 if args.full else 15_000)
    rounds = args.rounds or (2 if args.quick else 10 if args.full else 6)
    started = time.perf_counter()

    t0 = time.perf_counter()
    prompts = templated_prompts(n, args.seed)
    generate_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    model = load_sentence_model("cpu")
    model.encode(prompts[:64], batch_size=args.batch_size)  # first-call warm-up, for both arms
    load_s = time.perf_counter() - t0
    rss_after_load = rss_mb()

    embedder = PromptEmbedder(model=model, model_name=model_id(), batch_size=args.batch_size)
    bounds = np.linspace(0, n, rounds + 1).astype(int)
    plain_s = ours_embed_s = 0.0
    ours_parts = []
    for r in range(rounds):
        part = prompts[bounds[r] : bounds[r + 1]]
        for arm in ("plain", "ours") if r % 2 == 0 else ("ours", "plain"):
            t0 = time.perf_counter()
            if arm == "plain":
                model.encode(
                    part,
                    batch_size=args.batch_size,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                )
                plain_s += time.perf_counter() - t0
            else:
                ours_parts.append(embedder.embed(part))
                ours_embed_s += time.perf_counter() - t0
        print(f"round {r + 1}/{rounds}: plain {plain_s:.1f}s ours {ours_embed_s:.1f}s", flush=True)
    vectors = np.vstack(ours_parts)

    t0 = time.perf_counter()
    report = find_duplicates(prompts, vectors, args.threshold, seed=args.seed)
    dedup_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    again = embedder.embed(prompts)
    reembed_s = time.perf_counter() - t0
    assert np.array_equal(again, vectors)

    recall, recall_pairs = sampled_group_recall(
        vectors, report.near_groups, args.threshold, 2000, args.seed
    )
    t0 = time.perf_counter()
    spread = diversity(vectors, k=64, seed=args.seed)
    diversity_s = time.perf_counter() - t0

    ours_s = ours_embed_s + dedup_s
    figures = {
        "bench": "prompts",
        "n_prompts": n,
        "embed_vs_plain": round(plain_s / ours_s, 3),
        "prompts_per_s": round(n / ours_s, 1),
        "plain_prompts_per_s": round(n / plain_s, 1),
        "plain_embed_s": round(plain_s, 2),
        "ours_embed_s": round(ours_embed_s, 2),
        "dedup_s": round(dedup_s, 2),
        "reembed_from_cache_s": round(reembed_s, 3),
        "threshold": args.threshold,
        "exact_duplicate_groups": len(report.exact_groups),
        "near_duplicate_groups": len(report.near_groups),
        "largest_group": len(report.near_groups[0]) if report.near_groups else 1,
        "kept_after_dedup": len(report.keep),
        "group_recall_sampled": round(recall, 4),
        "group_recall_pairs": recall_pairs,
        "mean_pairwise_distance": round(spread.mean_pairwise_distance, 4),
        "cluster_evenness_k64": round(spread.cluster_evenness, 4),
        "diversity_s": round(diversity_s, 2),
        "model_load_s": round(load_s, 2),
        "generate_s": round(generate_s, 2),
        "rss_after_model_mb": round(rss_after_load, 1),
        "peak_rss_mb": round(rss_mb(), 1),
        "total_s": round(time.perf_counter() - started, 1),
        "batch_size": args.batch_size,
        "rounds": rounds,
        "torch_threads": __import__("torch").get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": os.uname().machine,
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
