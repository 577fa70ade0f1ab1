"""Reports: a report model built from snapshots and decisions, rendered to HTML, Markdown, JSON."""
