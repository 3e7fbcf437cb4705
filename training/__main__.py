"""`python -m training` / `accelerate launch -m training`: same as `apollo-train`."""
from .cli import main

raise SystemExit(main())
