"""Run launchers: what a due PyncetteTask does (create and watch a Pod, or call a Python handler)."""
