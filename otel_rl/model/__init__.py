"""Plain data and pure functions: records and points, the tape record, names, steps, tables,
and stateless translation of tape records, OTLP and SDK data into points."""
