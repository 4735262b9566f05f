"""`python -m dynakv` runs the CLI."""

from dynakv.cli import main

main()
