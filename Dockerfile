# syntax=docker/dockerfile:1.7
# One image per role, from one build (`make images` builds them all with podman; see images/):
#   docker build --target serve     -t fraudstack-serve .      (fraudstack[serve]: onnxruntime, no training library)
#   docker build --target ingest    -t fraudstack-ingest .     (fraudstack[ingest])
#   docker build --target aggregate -t fraudstack-aggregate .  (fraudstack[aggregate])
#   docker build --target snapshot  -t fraudstack-snapshot .   (fraudstack[snapshot])
#   docker build --target train     -t fraudstack-train .      (fraudstack[train]: scikit-learn, skl2onnx)
#   docker build --target operator  -t fraudstack-operator .   (fraudstack[operator]: no ML library)
# Every role installs its own extra (pyproject.toml) into its own virtual environment. Wheels are
# built once, in `dependencies`, for all roles together; the runtime stages only copy a finished
# virtual environment, so no compiler, pip, pip cache or source tree reaches them.
#
# PYTHON_IMAGE is the runtime base; BUILDER_IMAGE the same Python with a compiler and headers
# (it defaults to PYTHON_IMAGE and gets build-essential when that lacks one). Both must carry the
# same interpreter at the same path, since a virtual environment points at it.
# images/build.sh passes a Debian bookworm base built from package registries alone.
#
# Behind a TLS-inspecting proxy, pip needs the proxy's CA: pass --build-arg PIP_CERT=<path> with
# the CA bundle mounted at that path into the build's RUN steps (podman build -v, read-only), and
# the PIP_INDEX_URL / proxy variables as build arguments; images/build.sh does this
# (PIP_FROM_HOST). They live in the `dependencies` stage only, never in an image's environment.

# Pinned by tag; CI may pin the digest too (python:3.11.13-slim-bookworm@sha256:...).
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm
ARG BUILDER_IMAGE=${PYTHON_IMAGE}

########################################################################################
FROM ${BUILDER_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1
# The fraudstack wheel compiles one C extension (the tree walker).
RUN if ! command -v gcc >/dev/null || ! python -c 'import sysconfig, os; \
        assert os.path.exists(sysconfig.get_paths()["include"] + "/Python.h")' 2>/dev/null; then \
      apt-get update \
      && apt-get install -y --no-install-recommends build-essential \
      && rm -rf /var/lib/apt/lists/*; \
    fi
RUN python -m venv /opt/build
WORKDIR /src

########################################################################################
# One requirements file per role (base dependencies + the role's extra), from pyproject.toml.
FROM builder AS requirements
COPY pyproject.toml images/requirements.py /tmp/project/
RUN /opt/build/bin/python /tmp/project/requirements.py /tmp/project/pyproject.toml /requirements \
      serve ingest aggregate snapshot train operator

########################################################################################
FROM builder AS dependencies
ARG PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_TRUSTED_HOST PIP_CERT PIP_CLIENT_CERT \
    HTTP_PROXY HTTPS_PROXY NO_PROXY http_proxy https_proxy no_proxy
# Dependencies first: these layers are reused until a role's requirements change, whatever
# happens to the code or to the tool settings in pyproject.toml.
COPY --from=requirements /requirements /requirements
RUN --mount=type=cache,target=/root/.cache/pip \
    cat /requirements/*.txt | sort -u >/tmp/all.txt \
 && /opt/build/bin/pip wheel --wheel-dir /wheels -r /tmp/all.txt
# One virtual environment per role, each from the same wheels and nothing else. Each is made at
# /opt/venv (where the runtime images expect it, since console scripts carry the interpreter's
# absolute path) and then moved aside.
RUN set -eu; \
    mkdir /venvs; \
    for role in serve ingest aggregate snapshot train operator; do \
      python -m venv /opt/venv; \
      /opt/venv/bin/pip install --no-index --find-links=/wheels -r "/requirements/$role.txt"; \
      mv /opt/venv "/venvs/$role"; \
    done
COPY pyproject.toml setup.py README.md ./
COPY services ./services
COPY operator ./operator
# fraudstack itself, without dependencies (its extras are already there); then pip goes, and
# the byte-code caches (the root filesystem is read-only at run time: PYTHONDONTWRITEBYTECODE).
RUN --mount=type=cache,target=/root/.cache/pip \
    /opt/build/bin/pip wheel --no-deps --wheel-dir /dist . \
 && for role in serve ingest aggregate snapshot train operator; do \
      mv "/venvs/$role" /opt/venv; \
      /opt/venv/bin/pip install --no-deps --no-index /dist/fraudstack-*.whl; \
      /opt/venv/bin/pip uninstall -y -q pip; \
      find /opt/venv -name __pycache__ -prune -exec rm -rf {} +; \
      mv /opt/venv "/venvs/$role"; \
    done

########################################################################################
FROM ${PYTHON_IMAGE} AS runtime
# uid 10001: outside the range of any system user, and what the chart's securityContext expects.
# Nothing is written outside /tmp and /data, so the root filesystem may be read-only.
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
FROM runtime AS ingest
COPY --from=dependencies /venvs/ingest /opt/venv
EXPOSE 8000
CMD ["ingest", "serve"]

FROM runtime AS aggregate
COPY --from=dependencies /venvs/aggregate /opt/venv
EXPOSE 9100
CMD ["aggregate"]

FROM runtime AS snapshot
COPY --from=dependencies /venvs/snapshot /opt/venv
EXPOSE 9100
CMD ["snapshot", "--metrics-port", "9100"]

FROM runtime AS train
ENV MPLCONFIGDIR=/tmp/matplotlib
COPY --from=dependencies /venvs/train /opt/venv
CMD ["train"]

# kopf, the Kubernetes client, redis-py and httpx; no ML library.
FROM runtime AS operator
COPY --from=dependencies /venvs/operator /opt/venv
ENTRYPOINT ["python", "-m", "fraudmodel_operator"]
CMD []

########################################################################################
# Inference: the `serve` extra (onnxruntime, gunicorn, uvicorn, hiredis); no training library,
# no Kubernetes client. Last, so a plain `docker build .` gives the scoring image.
FROM runtime AS serve
ENV PROMETHEUS_MULTIPROC_DIR=/tmp/prometheus-multiproc \
    FRAUDSTACK_SERVE_BIND=0.0.0.0:8080
COPY --from=dependencies /venvs/serve /opt/venv
EXPOSE 8080
CMD ["serve"]
