"""`python -m tunesmith.train CONFIG`: the `tunesmith train` command, for `accelerate launch -m` and torchrun."""

import typer

from tunesmith.train.cli import train

if __name__ == "__main__":
    typer.run(train)
