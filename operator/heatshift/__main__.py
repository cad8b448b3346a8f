"""`python -m heatshift`: the same as the `heatshift` console script."""

from heatshift import cli

raise SystemExit(cli.main())
