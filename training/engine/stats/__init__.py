"""Statistics for evaluation reports: cluster bootstrap intervals and pairwise-comparison models.

Django-free and torch-free (numpy and scipy only) so the same code scores a round in the
platform, the toy world's sweep and the tests.
"""
