"""One router per resource: score (submit), jobs, health, info, metrics."""
