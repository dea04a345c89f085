"""``frameflow dashboard``: the pipeline live in a browser, and the operator's buttons.

An operator tool (the CLI's layer): it reads the same views as ``frameflow top`` and acts through
the same functions as ``frameflow drain``/``dlq``. Starlette and uvicorn (the ``dashboard`` extra)
are imported only inside this package, and only when the command runs.
"""
