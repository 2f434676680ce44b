"""The ``imat-kit`` command line: ``commands`` (the table of commands, the parser, the exit
codes), one module per group of commands (``data``, ``models``, ``scoring``, ``submission``,
``figures``, ``demo``, ``run``: each command's options beside what it runs), the options they
share (``options``) and the terminal output (``formatting``)."""
