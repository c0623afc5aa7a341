"""Annotation rounds, one Label Studio project each: `create` makes a round and its tasks (gold
mixed in), `push` sends it to Label Studio, `archive` hides it from lists.

A round's tasks are LabelTask rows created in the order annotators will see them; pushing sends the
ones Label Studio lacks (found by our `task_key`), so a push can be repeated or resumed after any
crash without creating duplicates.
"""
