"""``python -m mtl_data`` = ``mtl-data``."""

from mtl_data.cli.main import main

main()
