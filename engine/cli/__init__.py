"""The ``stylegrad`` command line: the parser and dispatch (``main``), one module per command
(``stylize``, ``video``, ``info``, ``job``, ``tools``: export, bench and kernels check;
``neural_style``: neural-style's flags, parsed by ``neural_style_flags``) and StyleConfig's
fields as options (``options``). The code that prints for users and sets exit codes lives here.
"""
