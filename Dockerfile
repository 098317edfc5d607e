# The pyncette-operator image: `pyncette-operator run` on a slim Python, as a non-root user.
#
# Two stages: "build" installs the distribution with every backend and the operator ([all], not
# [dev]) into a virtualenv; "runtime" copies only that virtualenv and the Python sources it
# imports onto the same pinned base, so no build tools (pip, setuptools, compilers) ship. CI replays the build stage's RUN lines in a fresh virtualenv
# (tests/chart/test_dockerfile.py), so keep them free of absolute paths: use ${VIRTUAL_ENV}.
#
# Base: python:3.12.14-slim-bookworm, pinned by the multi-platform index digest listed for that
# tag in docker-library/repo-info. Bump tag and digest together. BASE_IMAGE replaces it with any
# Debian-based image that has `python` with venv and groupadd/useradd: `make image` passes one
# built locally from Debian packages (hack/images/base.sh), as no image registry is reachable there.
#
# pip may need a CA bundle of the machine's to reach its index: pass it as a build secret, it is
# mounted for the RUN lines that download and never stored in a layer:
#   podman build --secret id=pip-cert,src=/etc/ssl/certs/ca-certificates.crt \
#       --build-arg PIP_CERT=/run/secrets/pip-cert .
# (docker buildx build takes the same two options). Without them pip uses its own bundle.

ARG BASE_IMAGE=python:3.12.14-slim-bookworm@sha256:b64e9d3a71eddaa1b3f80c04abf292b3139e3b7c4dd272d19c31dc1f91194d1b

FROM ${BASE_IMAGE} AS build

ENV VIRTUAL_ENV=/opt/pyncette \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
# pip's settings for the downloads (build stage only; see above). Unset unless given.
ARG PIP_CERT
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_TRUSTED_HOST
ARG PIP_DEFAULT_TIMEOUT
WORKDIR /opt/pyncette-src
RUN python -m venv "${VIRTUAL_ENV}"
COPY pyproject.toml constraints.txt README.md ./
# The virtualenv is complete before the sources arrive, so a change to them rebuilds nothing but
# the small layer that holds them: the dependencies and the distribution itself, installed in
# editable mode from a still empty source root (its path entry points at ./operator), pip removed.
# constraints.txt pins the versions CI tests with (and spares pip's resolver its backtracking).
RUN --mount=type=secret,id=pip-cert \
    mkdir -p operator \
    && "${VIRTUAL_ENV}/bin/pip" install --no-cache-dir --constraint constraints.txt --editable ".[all]" \
    && "${VIRTUAL_ENV}/bin/pip" uninstall --yes pip \
    && rm -rf build operator
COPY operator ./operator
RUN python -m compileall -q operator \
    && "${VIRTUAL_ENV}/bin/pyncette-operator" --help >/dev/null

FROM ${BASE_IMAGE} AS runtime

LABEL org.opencontainers.image.title="pyncette-operator" \
      org.opencontainers.image.description="Kubernetes operator for PyncetteTask resources" \
      org.opencontainers.image.licenses="MIT"
RUN groupadd --system --gid 10001 pyncette \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin pyncette
# Two layers: the virtualenv (changes with the dependencies) and the sources it points at.
COPY --from=build /opt/pyncette /opt/pyncette
COPY --from=build /opt/pyncette-src/operator /opt/pyncette-src/operator
ENV VIRTUAL_ENV=/opt/pyncette \
    PATH=/opt/pyncette/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# The numeric user lets Kubernetes verify runAsNonRoot.
USER 10001:10001
WORKDIR /tmp
# 8080: health endpoint (--liveness); 9100: Prometheus metrics (--metrics-port).
EXPOSE 8080 9100
ENTRYPOINT ["pyncette-operator"]
CMD ["run"]
