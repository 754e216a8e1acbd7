"""The route a point takes after translation: admission (steps, increments, totals), the sink
set (a worker, retry policy, quarantine and spool per sink), the engine that runs them."""
