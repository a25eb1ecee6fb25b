"""``python -m symfw`` runs the CLI (also what ``torchrun -m symfw`` uses)."""

from symfw.cli.app import main

if __name__ == "__main__":
    main()
