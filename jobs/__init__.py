"""Code that runs on workers: the shared runtime and one module per job kind."""
