"""``python -m containers_storage``: the same CLI as the ``containers-storage`` script."""

from containers_storage.cli.console import main

raise SystemExit(main())
