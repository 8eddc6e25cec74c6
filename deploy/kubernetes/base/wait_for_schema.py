"""Wait until the database is up and at the schema this image's noisetune needs.

The init container of the service's and the workers' pods: `noisetune serve` and
`noisetune worker` stop at start on a schema that is not theirs, until the migrate Job has
run `noisetune migrate`, and the database itself may not be up yet. `open_storage` is
noisetune's own check of both, so this waits for exactly what the main container needs.
"""

from __future__ import annotations

import time

from search_spaces.storage import open_storage, resolve_url

POLL_S = 5.0


def main() -> None:
    while True:
        try:
            open_storage(resolve_url())  # NOISETUNE_STORAGE, as the main container reads it
        except Exception as exc:  # not migrated yet or not reachable yet: both pass in time
            print(f"waiting for the database: {exc}".splitlines()[0], flush=True)
            time.sleep(POLL_S)
        else:
            return


if __name__ == "__main__":
    main()
