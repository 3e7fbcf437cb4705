"""`python -m training.data.world`: rewrite the held-out spec file from build_heldout()."""
from __future__ import annotations

from .heldout import HELDOUT_PATH, build_heldout
from .spec import save_specs


def main() -> None:
    specs = build_heldout()
    save_specs(HELDOUT_PATH, specs)
    print(f"wrote {len(specs)} specs to {HELDOUT_PATH}")


if __name__ == "__main__":
    main()
