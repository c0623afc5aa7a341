"""An annotator rates every task kind in Label Studio's own pages in chromium, logged in through
Label Studio's login form with the password the platform issued; the platform receives each
annotation with the right parsed value. Screenshots go to test-artifacts/."""

from __future__ import annotations

import hashlib
import io
import re
import secrets

import pytest
from PIL import Image as PILImage
from PIL import ImageDraw

from curation.models import Annotation, AnnotatorRoundStats, GoldItem, Image, Job
from curation.services.aggregation import compute_round_quality
from curation.services.annotators import issue_password, labelstudio_client, sync_annotators
from curation.services.jobs import execute_job, load_handlers
from curation.services.rounds.create import create_pairwise_round, create_round
from curation.services.rounds.push import push_round
from curation.services.storage import store_bytes
from curation.services.sync import reconcile_round
from tests.browser import chromium_page, chromium_pages, screenshot

pytestmark = [
    pytest.mark.browser,
    pytest.mark.labelstudio,
    pytest.mark.django_db(transaction=True),
]


def sticker(seed: int, size: int = 32) -> Image:
    """A small RGBA sticker: a coloured disc on a transparent square."""
    colour = tuple(hashlib.sha256(f"sticker{seed}".encode()).digest()[:3])
    im = PILImage.new("RGBA", (size, size), (0, 0, 0, 0))
    ImageDraw.Draw(im).ellipse((3, 3, size - 4, size - 4), fill=(*colour, 255))
    buffer = io.BytesIO()
    im.save(buffer, format="PNG")
    data = buffer.getvalue()
    sha = hashlib.sha256(data).hexdigest()
    return Image.objects.create(
        sha256=sha,
        storage_key=store_bytes(data, "png", sha256=sha),
        width=size,
        height=size,
        format="PNG",
        has_alpha=True,
        caption=f"sticker of thing {seed}",
    )


@pytest.fixture
def ls_platform(settings, live_server, ls_server):
    settings.LABEL_STUDIO_URL = ls_server.url  # also the media view's CORS origin
    settings.LABEL_STUDIO_API_KEY = ls_server.token
    settings.LABEL_STUDIO_ADMIN_EMAIL = ls_server.username
    settings.LABEL_STUDIO_ADMIN_PASSWORD = ls_server.password
    settings.LABEL_STUDIO_WEBHOOK_SECRET = secrets.token_urlsafe(16)
    settings.PLATFORM_PUBLIC_URL = live_server.url
    # A running web process has imported every job module long before; the first import (torch)
    # takes seconds, longer than Label Studio's 1 s webhook timeout.
    load_handlers()
    return live_server


def log_in(page, email: str, password: str) -> None:
    """Through Label Studio's own login page, as a person would."""
    page.goto("/user/login/")
    page.fill('input[name="email"]', email)
    page.fill('input[name="password"]', password)
    page.click('button[type="submit"]')
    page.wait_for_url(lambda url: "/user/login" not in url)


def open_task(page, project_id: int, task_id: int, text: str, images: int) -> None:
    page.goto(f"/projects/{project_id}/data?task={task_id}")
    labeling(page).get_by_text(text).first.wait_for()
    # Every image of the task rendered (the browser loads them from the platform, cross-origin),
    # each on the checkerboard that shows transparency. Label Studio mounts an image's Konva stage
    # only after its <img> has loaded, and may re-render the task once it has switched to the
    # tab it opens it in, so the stages are read in the same check that waits for them.
    read_checkers = """n => {
        const imgs = [...document.querySelectorAll('.lsf-image img')];
        const stages = [...document.querySelectorAll('.checker .konvajs-content')];
        const ready = imgs.length >= n && imgs.every(i => i.complete && i.naturalWidth > 0)
            && stages.length >= n;
        return ready ? stages.map(e => getComputedStyle(e).backgroundImage) : null;
    }"""
    checkers = page.wait_for_function(read_checkers, arg=images).json_value()
    assert len(checkers) >= images and all("conic-gradient" in c for c in checkers), checkers
    labeling(page).get_by_text(text).first.click()  # focus the labeling area for hotkeys


def labeling(page):
    """The labeling area (the data manager's task list beside it repeats the prompt)."""
    return page.locator(".lsf-main-view")


def choose(page, label: str) -> None:
    """Click a choice by its label (Label Studio appends the hotkey in a superscript)."""
    labeling(page).locator("label").filter(
        has_text=re.compile(rf"^{re.escape(label)}")
    ).first.click()


def submit(page, task_id: int, *, keyboard: bool) -> None:
    with page.expect_response(
        lambda r: f"/api/tasks/{task_id}/annotations" in r.url and r.request.method == "POST"
    ) as posted:
        if keyboard:
            page.keyboard.press("Control+Enter")
        else:
            page.click('button:has-text("Submit")')
    assert posted.value.status == 201


def test_annotator_rates_every_task_kind_in_label_studio(ls_platform, make_batch, make_annotators):
    live = ls_platform
    stickers = [sticker(i) for i in range(6)]
    gold = GoldItem.objects.create(
        kind="alignment",
        image=stickers[1],
        prompt="sticker of a blue moon",
        answer={"aligned": False},
    )
    alignment = create_round(
        name="browser alignment",
        kind="alignment",
        images=[stickers[0]],
        gold=[gold],
        gold_rate=1.0,
        overlap=1,
    )
    style = create_round(
        name="browser style",
        kind="style",
        images=[stickers[2]],
        style_exemplars=stickers[3:6],
        gold_rate=0,
        overlap=1,
    )
    batch_a = make_batch("A", ["a smiling avocado"])
    batch_b = make_batch("B", ["a smiling avocado"], image_offset=50)
    pairwise = create_pairwise_round(batch_a, batch_b, name="browser pairwise", overlap=1)
    (user,) = make_annotators(1)
    sync_annotators()
    for round_ in (alignment, style, pairwise):
        push_round(round_)
        round_.refresh_from_db()
    issued = issue_password(user)

    regular = alignment.tasks.get(is_gold=False)
    gold_task = alignment.tasks.get(is_gold=True)
    style_task = style.tasks.get()
    pair_task = pairwise.tasks.get()
    # A gold task carries exactly the keys of any other task, and nothing that says "gold".
    exported = {
        t["id"]: t["data"]
        for t in labelstudio_client().export_tasks(alignment.labelstudio_project_id)
    }
    gold_data = exported[gold_task.labelstudio_task_id]
    assert set(gold_data) == set(exported[regular.labelstudio_task_id])
    assert not any("gold" in f"{k}={v}".lower() for k, v in gold_data.items() if k != "image")

    with chromium_page(issued.url.removesuffix("/user/login/")) as page:
        media = []
        page.on(
            "response",
            lambda r: media.append(r.status) if r.url.startswith(live.url + "/media") else None,
        )
        log_in(page, issued.email, issued.password)

        # The data manager shows the prompt and images, never the platform's internal columns.
        page.goto(f"/projects/{alignment.labelstudio_project_id}/data")
        page.get_by_text("Label All Tasks").first.wait_for()
        header = page.locator(".lsf-table__head, [class*='table-head']").first.inner_text()
        for internal in ("task_key", "round_id", "image_id", "generation_id"):
            assert internal not in header, header
        assert "prompt" in header
        screenshot(page, "annotator-data-manager")

        # Alignment, by mouse: yes and 4 stars, Submit clicked.
        open_task(
            page,
            alignment.labelstudio_project_id,
            regular.labelstudio_task_id,
            "sticker of thing 0",
            images=1,
        )
        choose(page, "yes")
        labeling(page).locator(".ant-rate-star").nth(3).click()
        screenshot(page, "annotator-alignment")
        submit(page, regular.labelstudio_task_id, keyboard=False)

        # The gold task looks like any other: by keyboard "n", 2 stars, Ctrl+Enter.
        open_task(
            page,
            alignment.labelstudio_project_id,
            gold_task.labelstudio_task_id,
            "sticker of a blue moon",
            images=1,
        )
        page.keyboard.press("n")
        labeling(page).locator(".ant-rate-star").nth(1).click()
        screenshot(page, "annotator-alignment-gold")
        submit(page, gold_task.labelstudio_task_id, keyboard=True)

        # Style, with its three exemplars shown: "p" key, 5 stars.
        open_task(
            page,
            style.labelstudio_project_id,
            style_task.labelstudio_task_id,
            "sticker of thing 2",
            images=4,
        )
        page.keyboard.press("p")
        labeling(page).locator(".ant-rate-star").nth(4).click()
        labeling(page).get_by_text("The target style: exemplars").scroll_into_view_if_needed()
        screenshot(page, "annotator-style")
        submit(page, style_task.labelstudio_task_id, keyboard=False)

        # Pairwise: an empty submit is refused, then "b" (B is better), Ctrl+Enter.
        open_task(
            page,
            pairwise.labelstudio_project_id,
            pair_task.labelstudio_task_id,
            "sticker of a smiling avocado",
            images=2,
        )
        sizes = page.evaluate(
            "() => [...document.querySelectorAll('.lsf-image img')].map(i => i.clientWidth)"
        )
        assert sizes and min(sizes) >= 300, sizes  # 16 px generations shown large enough
        posts = []
        page.on(
            "request",
            lambda r: (
                posts.append(r.url) if "/annotations" in r.url and r.method == "POST" else None
            ),
        )
        page.click('button:has-text("Submit")')
        page.get_by_text("Choose A, B or tie before submitting").first.wait_for()
        screenshot(page, "annotator-pairwise-empty-submit-refused")
        assert posts == []
        page.keyboard.press("Escape")
        labeling(page).get_by_text("sticker of a smiling avocado").first.click()
        page.keyboard.press("b")
        screenshot(page, "annotator-pairwise")
        submit(page, pair_task.labelstudio_task_id, keyboard=True)
        assert media and all(status == 200 for status in media), media

    # Label Studio posted a webhook before answering each submit; then reconcile confirms.
    for job in Job.objects.filter(kind="labelstudio.webhook", status=Job.Status.QUEUED):
        execute_job(job.pk)
    for round_ in (alignment, style, pairwise):
        reconcile_round(round_)
    live_rows = Annotation.objects.filter(deleted=False, annotator=user)
    assert live_rows.count() == 4
    got = {a.task_id: a for a in live_rows}
    assert (got[regular.pk].aligned, got[regular.pk].rating) == (True, 4)
    assert (got[gold_task.pk].aligned, got[gold_task.pk].rating) == (False, 2)
    assert (got[style_task.pk].passed, got[style_task.pk].rating) == (True, 5)
    assert got[pair_task.pk].preferred == "right"
    compute_round_quality(alignment)
    stats = AnnotatorRoundStats.objects.get(round=alignment, user=user)
    assert (stats.gold_answered, stats.gold_correct, stats.counted) == (1, 1, True)


class Stream:
    """One annotator working through Label Studio's own "Label All Tasks" queue."""

    def __init__(self, page, project_id: int) -> None:
        self.page, self.project_id = page, project_id
        self.current: int | None = None
        self.seen: list[int] = []

    def _next(self, action) -> None:
        # The stream asks the data manager's hidden "next_task" action (the same queue as
        # /api/projects/ID/next: projects/functions/next_task.py).
        with self.page.expect_response(
            lambda r: "/api/dm/actions" in r.url and "id=next_task" in r.url
        ) as answered:
            action()
        response = answered.value
        if response.status == 404:
            self.current = None
            return
        assert response.status == 200, response.status
        self.current = int(response.json()["id"])
        self.seen.append(self.current)

    def start(self) -> None:
        self.page.goto(f"/projects/{self.project_id}/data")
        self._next(lambda: self.page.get_by_text("Label All Tasks").first.click())

    def rate_and_next(self) -> None:
        assert self.current is not None
        labeling(self.page).get_by_text("Does the image match the prompt?").first.wait_for()
        choose(self.page, "yes")
        self._next(lambda: self.page.click('button:has-text("Submit")'))


def test_overlap_two_holds_in_label_studios_stream(ls_platform, ls_server, make_annotators):
    stickers = [sticker(10 + i) for i in range(3)]
    round_ = create_round(
        name="browser overlap", kind="alignment", images=stickers, gold_rate=0, overlap=2
    )
    users = make_annotators(3)
    sync_annotators()
    push_round(round_)
    round_.refresh_from_db()
    logins = [issue_password(u) for u in users]
    task_ids = sorted(round_.tasks.values_list("labelstudio_task_id", flat=True))
    project_id = round_.labelstudio_project_id

    with chromium_pages(ls_server.url, 3) as pages:
        for page, login in zip(pages, logins, strict=True):
            log_in(page, login.email, login.password)
        first, second, third = (Stream(page, project_id) for page in pages)
        # The two work at the same time, each holding a task while the other submits.
        first.start()
        second.start()
        while first.current is not None or second.current is not None:
            for stream in (first, second):
                if stream.current is not None:
                    stream.rate_and_next()
        screenshot(pages[1], "annotator-overlap-stream-done")
        third.start()
        screenshot(pages[2], "annotator-overlap-third-gets-nothing")

    assert sorted(first.seen) == task_ids and sorted(second.seen) == task_ids
    assert third.seen == []
    reconcile_round(round_)
    for task in round_.tasks.all():
        authors = sorted(
            task.annotations.filter(deleted=False).values_list("annotator_id", flat=True)
        )
        assert authors == sorted([users[0].pk, users[1].pk]), task
