# syntax=docker/dockerfile:1.7
# One image per role, from one build:
#   docker build --target serve     -t fraudstack-serve .      (inference: base deps + onnxruntime)
#   docker build --target ingest    -t fraudstack-ingest .
#   docker build --target aggregate -t fraudstack-aggregate .
#   docker build --target snapshot  -t fraudstack-snapshot .
#   docker build --target train     -t fraudstack-train .      (adds matplotlib, skl2onnx, onnx)
#   docker build --target operator  -t fraudstack-operator .   (python -m fraudmodel_operator)
# Wheels are built once in `builder` (which has the compilers); the runtime stages only copy
# finished virtual environments, so no compiler, pip cache or source tree reaches them.

# Pinned by tag; CI may pin the digest too (python:3.11.13-slim-bookworm@sha256:...).
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

########################################################################################
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first: this layer is reused until pyproject.toml changes.
COPY pyproject.toml setup.py README.md ./
COPY services ./services
COPY operator ./operator
RUN --mount=type=cache,target=/root/.cache/pip \
    pip wheel --wheel-dir /wheels ".[serve,train]"
# One virtual environment per image flavour, each from the same wheels and nothing else.
# Each is made at /opt/venv (where the runtime images expect it, since console scripts
# carry the interpreter's absolute path) and then moved aside.
RUN set -eu; \
    mkdir /venvs; \
    for flavour in app serve train; do \
      case "$flavour" in app) spec=fraudstack ;; *) spec="fraudstack[$flavour]" ;; esac; \
      python -m venv /opt/venv; \
      /opt/venv/bin/pip install --no-index --find-links=/wheels "$spec"; \
      mv /opt/venv "/venvs/$flavour"; \
    done

########################################################################################
FROM ${PYTHON_IMAGE} AS runtime
# uid 10001: outside the range of any system user, and what the chart's securityContext expects.
RUN groupadd --system --gid 10001 fraudstack \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp \
      --shell /usr/sbin/nologin fraudstack \
 && mkdir -p /data && chown 10001:10001 /data
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
WORKDIR /tmp
USER 10001:10001
ENTRYPOINT ["fraudstack"]

########################################################################################
# Base dependencies only: the stream and API roles.
FROM runtime AS app
COPY --from=builder /venvs/app /opt/venv

FROM app AS ingest
EXPOSE 8000
CMD ["ingest", "serve"]

FROM app AS aggregate
EXPOSE 9100
CMD ["aggregate"]

FROM app AS snapshot
EXPOSE 9100
CMD ["snapshot", "--metrics-port", "9100"]

FROM app AS operator
ENTRYPOINT ["python", "-m", "fraudmodel_operator"]
CMD []

########################################################################################
# Training: base + the `train` extra (matplotlib, skl2onnx, onnx).
FROM runtime AS train
ENV MPLCONFIGDIR=/tmp/matplotlib
COPY --from=builder /venvs/train /opt/venv
CMD ["train"]

########################################################################################
# Inference: base + the `serve` extra (onnxruntime); no training libraries. Last, so a
# plain `docker build .` gives the scoring image.
FROM runtime AS serve
ENV PROMETHEUS_MULTIPROC_DIR=/tmp/prometheus-multiproc \
    FRAUDSTACK_SERVE_BIND=0.0.0.0:8080
COPY --from=builder /venvs/serve /opt/venv
EXPOSE 8080
CMD ["serve"]
