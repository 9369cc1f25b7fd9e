# syntax=docker/dockerfile:1
# The Phalanx controller image: `phalanx controller` (deploy/ runs it with that argument).
#
# Two stages: the first builds a virtual environment with the package and its
# dependencies (all of them ship wheels, so no compiler is needed even there); the
# final one is the slim Python runtime plus that environment, no build tools, no
# compiler, run as the numeric non-root user 65532 (numeric, so the kubelet can check
# runAsNonRoot) on a read-only root filesystem. Pin the base image by digest in your
# own builds.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY controller ./controller
COPY policies ./policies
COPY simulations ./simulations
COPY emulator ./emulator
RUN python -m venv /opt/phalanx \
 && /opt/phalanx/bin/pip install --no-compile . \
 && /opt/phalanx/bin/python -m compileall -q /opt/phalanx/lib \
 && /opt/phalanx/bin/phalanx --help > /dev/null

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="phalanx" \
      org.opencontainers.image.description="All-or-nothing gang-scheduling controller for Kubernetes" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/phalanx /opt/phalanx
ENV PATH=/opt/phalanx/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 65532:65532
EXPOSE 8080 9443
ENTRYPOINT ["phalanx"]
CMD ["controller"]
