"""The user's side: the current run, the OTel API recorder (tape), Logger, SummaryWriter,
timing spans and propagation. Everything here runs on the training thread."""
