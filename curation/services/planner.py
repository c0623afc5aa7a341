"""PostgreSQL's planner after a bulk write: statistics that still describe the empty table.

A statement that writes a million rows leaves `pg_statistic` as it was (autovacuum analyzes a
table a while later), so the very next read is planned for the table's old size: the freeze's
manifest read, planned for a 32-row draft, walked a nested loop for its 10,000 rows and took 7.8 s
instead of 0.16 s. Whoever bulk-writes a table and reads it back at once refreshes them here.
"""

from __future__ import annotations

from django.db import connection, models


def refresh_statistics(*tables: type[models.Model]) -> None:
    """`ANALYZE` the models' tables on PostgreSQL (it samples a fixed ~30,000 rows, so its cost
    does not grow with the table). SQLite's planner needs no statistics for these reads."""
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        for model in tables:
            cursor.execute(f"ANALYZE {connection.ops.quote_name(model._meta.db_table)}")
