"""`python -m tools.demo_model ...`."""

from tools.demo_model.cli import main

main()
