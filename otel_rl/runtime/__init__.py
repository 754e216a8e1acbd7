"""Where the route runs: in the training process, or in the helper process (framing, the link
in the training process, the child's main loop); and replay of a spool."""
