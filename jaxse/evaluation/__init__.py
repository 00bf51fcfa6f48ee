"""Evaluation tools: noisy test sets, metrics, reports, tables and the compile/run-time benchmark."""
