"""Build (or reuse) the demo's toy world and print the evaluation CLIP's weights path.

`scripts/demo` exports that path as EVAL_CLIP_WEIGHTS before it starts the web server and the
worker, so the demo's report scores with the toy CLIP and says what it is. With `--no-register`
it touches no database (the build is pure torch), so scripts/demo runs it while migrations and
Label Studio's start-up run beside it; `demo_round` registers the cached world afterwards.
"""

from __future__ import annotations

import sys

from django.core.management.base import BaseCommand

from config.console_logging import console_for_verbosity


class Command(BaseCommand):
    help = "Build or reuse the toy world (var/toy-world) and print its CLIP weights path."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--full", action="store_true", help="the full settings, not the small ones"
        )
        parser.add_argument(
            "--no-register",
            action="store_true",
            help="build or reuse the world only; register its base and prompts later",
        )

    def handle(self, *args, **options) -> None:
        console_for_verbosity(options["verbosity"])
        from training.services.toy_world import ensure_toy_world

        def say(line: str) -> None:
            # stdout carries only the path (scripts/demo captures it); progress goes to stderr.
            if options["verbosity"] >= 1:
                print(f"demo: {line}", file=sys.stderr, flush=True)

        if options["no_register"]:
            from training.engine.toy_world.build import ToyWorldSettings
            from training.engine.toy_world.cache import cached_toy_world
            from training.services.toy_world import toy_world_root

            world_settings = ToyWorldSettings() if options["full"] else ToyWorldSettings.small()
            info = cached_toy_world(toy_world_root(), world_settings, log=say)
        else:
            info = ensure_toy_world(small=not options["full"], log=say).info
        say(
            f"toy world {info['key']}: base {info['base_model']}, toy CLIP held-out top-1 "
            f"{info['clip_text_alignment']['top1']} (chance "
            f"{info['clip_text_alignment']['chance']:.3f})"
        )
        self.stdout.write(str(info["clip_weights"]))
