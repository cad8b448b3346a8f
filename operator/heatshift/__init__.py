"""heatshift: a heat-aware workload scheduler for Kubernetes.

Runs flexible batch and GPU jobs where, and when, their heat is wanted, without ever
trading away an SLA. See README.md for the quick start and DESIGN-level overview.
"""

__version__ = "0.1.0"
