"""Kopf operator that rolls model versions out through the FraudModel custom resource.

``handlers`` holds the kopf handlers and the registry ``__main__`` runs; ``rollout`` is the pure
state machine and ``resource`` the spec and status it reads and writes; ``gates`` reads the
promotion gates from Prometheus; ``registry_check`` checks versions against the model registry;
``publish`` writes the routing to Redis and its ConfigMap mirror; ``settings`` documents every
environment variable. The routing document itself is :mod:`fraudstack.routing`.
"""
