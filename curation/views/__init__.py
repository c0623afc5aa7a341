"""Server-rendered pages outside the admin changelists (the review grid)."""
