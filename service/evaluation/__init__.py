"""Evaluate folders of videos (``reward3d eval``): score, keep, tabulate, compare.

Start at runner.py (``evaluate``: the run top to bottom). videos.py finds the videos and their
prompts, store.py keeps results so a run resumes, scorers.py / remote.py score in-process or
through a service, tables.py and stats.py turn results into tables with bootstrap intervals.
Report pages are drawn by ``service.report``. User guide: docs/evaluation.md.
"""
