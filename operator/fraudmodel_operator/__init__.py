"""Kopf operator that rolls model versions out through the FraudModel custom resource."""
