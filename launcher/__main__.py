"""`python -m launcher` = the `launcher` command."""
from launcher.cli import main

main()
