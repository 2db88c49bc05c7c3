"""Agents: loops that reason with the model and act through the tool registry (seed 001's ReAct agent)."""
