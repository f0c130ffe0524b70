"""What users import into their own code: the --target contract and the pytest plugin."""
