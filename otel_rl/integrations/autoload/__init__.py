"""``otel-rl run`` puts this folder first on ``PYTHONPATH``: its ``sitecustomize`` loads otel-rl's
``SummaryWriter`` capture in every Python process started under it."""
