"""`python -m graphfix.cli` still works; `python -m graphfix` is the documented form."""

from graphfix.__main__ import main

main()
