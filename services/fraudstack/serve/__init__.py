"""The inference service: FastAPI under gunicorn with uvicorn workers.

``app`` builds the application (models and the store connection are made in its lifespan),
``routes`` holds the endpoints, ``lookup`` reads a transaction's features from the online store,
``models`` holds the loaded models and the routing between them (the request path talks to
Redis through :mod:`fraudstack.adapters.redis_link`), ``errors`` maps our exceptions to HTTP,
``metrics`` defines the Prometheus metrics, and ``cli``/``gunicorn_conf`` run it all.
"""
