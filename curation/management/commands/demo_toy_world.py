"""Build (or reuse) the demo's toy world and print the evaluation CLIP's weights path.

`scripts/demo` exports that path as EVAL_CLIP_WEIGHTS before it starts the web server and the
worker, so the demo's report scores with the toy CLIP and says what it is.
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

    def handle(self, *args, **options) -> None:
        console_for_verbosity(options["verbosity"])
        from training.services.toy_world import ensure_toy_world

        def say(line: str) -> None:
            # stdout carries only the path (scripts/demo captures it); progress goes to stderr.
            if options["verbosity"] >= 1:
                print(f"demo: {line}", file=sys.stderr, flush=True)

        world = ensure_toy_world(small=not options["full"], log=say)
        say(
            f"toy world {world.info['key']}: base {world.base.path}, toy CLIP held-out top-1 "
            f"{world.info['clip_text_alignment']['top1']} (chance "
            f"{world.info['clip_text_alignment']['chance']:.3f})"
        )
        self.stdout.write(world.clip_weights)
