"""Running one style transfer: the Python API (``stylizer``: Stylizer, stylize), the eager
optimisation loop (``optimize``), coarse-to-fine scales (``scales``), the memory estimate
made before a run (``memory``) and progress reporting (``progress``). Many images as one job:
``stylegrad.jobs``.
"""
