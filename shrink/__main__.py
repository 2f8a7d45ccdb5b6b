"""``python -m shrink ...`` (and ``accelerate launch -m shrink ...``) runs the shrink command."""
from shrink.cli import main

main()
