# syntax=docker/dockerfile:1
# The HTTP API: `reward3d serve --workers 0` against an external Redis. Slim and non-root; it
# installs only the `api` extra (no torch, no pipeline: the API never imports them).
#   docker build -f docker/api.Dockerfile -t reward3d-api .
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# The extras to install: `api`; add `s3` for the S3 blob store (REWARD3D_BLOB_STORE=s3).
ARG EXTRAS=api
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY docker/constraints.txt docker/constraints.txt
COPY service service
COPY trainer_client trainer_client
RUN pip install --constraint docker/constraints.txt ".[${EXTRAS}]" \
    && python -c "import service.api, av, uvicorn" \
    && ! python -c "import torch" 2>/dev/null

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="reward3d-api" \
      org.opencontainers.image.description="reward3d HTTP API (no GPU, no models)"
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/reward3d reward3d \
    && mkdir -p /data/blobs && chown -R 10001:10001 /data
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    REWARD3D_HOST=0.0.0.0 \
    REWARD3D_PORT=8000 \
    REWARD3D_DATA_DIR=/data \
    REWARD3D_BLOB_DIR=/data/blobs
USER 10001:10001
WORKDIR /home/reward3d
# The final image can import what the API needs (system libraries included).
RUN python -c "import service.api.app, av, uvicorn, redis, rq"
EXPOSE 8000
# Liveness of the process (readiness, with Redis and a warm worker, is /readyz).
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('REWARD3D_PORT', '8000'), timeout=4)"]
ENTRYPOINT ["reward3d"]
CMD ["serve", "--host", "0.0.0.0", "--workers", "0"]
