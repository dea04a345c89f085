"""``python -m pipeline.tools.cli``: the ``frameflow`` command without its console script."""

from pipeline.tools.cli import main

main()
