"""Development tools: the demo and the local Airflow launcher. Not part of the installed package,
and never shipped inside a logged model (run them from the repository root: ``python -m tools.demo``)."""
