"""``python -m rxsinks``: the same as the ``rxsinks`` command."""

from rxsinks._service.cli import main

if __name__ == "__main__":
    main()
