# The pyncette-operator image: `pyncette-operator run` on a slim Python, as a non-root user.
#
# Two stages: "build" installs the distribution with every backend and the operator ([all], not
# [dev]) into a virtualenv; "runtime" copies only that virtualenv onto the same pinned base, so no
# build tools or sources ship. CI replays the build stage's RUN lines in a fresh virtualenv
# (tests/chart/test_dockerfile.py), so keep them free of absolute paths: use ${VIRTUAL_ENV}.
#
# Base: python:3.12.14-slim-bookworm, pinned by the multi-platform index digest listed for that
# tag in docker-library/repo-info. Bump tag and digest together.

FROM python:3.12.14-slim-bookworm@sha256:b64e9d3a71eddaa1b3f80c04abf292b3139e3b7c4dd272d19c31dc1f91194d1b AS build

ENV VIRTUAL_ENV=/opt/pyncette \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv "${VIRTUAL_ENV}"
COPY pyproject.toml constraints.txt README.md ./
COPY operator ./operator
# constraints.txt pins the versions CI tests with (and spares pip's resolver its backtracking).
RUN "${VIRTUAL_ENV}/bin/pip" install --no-cache-dir --constraint constraints.txt ".[all]" \
    && "${VIRTUAL_ENV}/bin/pip" uninstall --yes pip \
    && "${VIRTUAL_ENV}/bin/pyncette-operator" --help >/dev/null

FROM python:3.12.14-slim-bookworm@sha256:b64e9d3a71eddaa1b3f80c04abf292b3139e3b7c4dd272d19c31dc1f91194d1b AS runtime

LABEL org.opencontainers.image.title="pyncette-operator" \
      org.opencontainers.image.description="Kubernetes operator for PyncetteTask resources" \
      org.opencontainers.image.licenses="MIT"
RUN groupadd --system --gid 10001 pyncette \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin pyncette
COPY --from=build /opt/pyncette /opt/pyncette
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
