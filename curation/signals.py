"""Signals other parts of the platform listen to."""

from django.dispatch import Signal

# Sent with `job=` when a job reaches a final status, so the row it worked on can follow it.
job_finished = Signal()
