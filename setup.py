"""The one compiled part of fraudstack: the single-row tree walker (see fraudstack.forest).

Everything else about the package is in pyproject.toml; setuptools reads both.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "fraudstack._treewalk",
            sources=["services/fraudstack/_treewalk.c"],
            extra_compile_args=["-O2"],
        )
    ]
)
