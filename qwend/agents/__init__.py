"""Agents: loops that reason with the model and act through the tool registry (native tool loop, ReAct)."""
