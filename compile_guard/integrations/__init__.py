"""What a user's code is given and returns: the --target contract (target.py). Import it from `compile_guard`."""
