"""Pipeline stages: one module per stage, each with a ``run(...)`` entry point."""
