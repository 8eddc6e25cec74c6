"""`python -m service ...`: the same as the `noisetune` command."""

from service.cli import main

main()
