"""The ``stylegrad`` command line: the parser and dispatch (``main``), one module per command
(``stylize``, ``video``, ``info``, ``job``, ``serve``: serve and submit, ``tools``: export, bench
and kernels check; ``neural_style``: neural-style's flags, parsed by ``neural_style_flags``),
StyleConfig's fields as options (``options``), the door where ``stylize``'s options become a plan
(``plan``) and what it prints (``report``). The code that prints for users and sets exit codes
lives here; argparse namespaces go no further.
"""
