"""``stylegrad bench``: every backend timed on the same inputs (``backends``), stylegrad against
its peers on one objective (``contest``), and the process that runs one peer
(``peer``, ``python -m stylegrad.benchmark.peer``).
"""
