"""What tests share: pytest plugins registered in ``tests/conftest.py`` (fixtures) and helpers
imported by test modules (``from support.waiting import eventually``)."""
