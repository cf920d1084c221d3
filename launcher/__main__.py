"""`python -m launcher` = the `launcher` command."""
from launcher.cli import main

main(prog_name="launcher")
