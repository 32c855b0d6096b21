"""Helpers the integration tests import by name: process harness, databases, test PKI, the workload script."""
