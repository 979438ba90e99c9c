"""`python -m featurebirth` runs the command-line interface."""

from .cli import main

main()
