# syntax=docker/dockerfile:1
# A CPU worker for laptops and CI-like boxes: `reward3d worker` with the weights-free classical
# geometry backend and the torch point renderer. No CUDA, no model weights.
#   docker build -f docker/worker-cpu.Dockerfile -t reward3d-worker-cpu .
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# The extras to install: `service`; add `s3` for the S3 blob store (REWARD3D_BLOB_STORE=s3).
ARG EXTRAS=service
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"
COPY pyproject.toml README.md ./
COPY docker/constraints.txt docker/constraints.txt
COPY service service
COPY trainer_client trainer_client
RUN pip install --constraint docker/constraints.txt ".[${EXTRAS}]" \
    && python -c "import pycolmap, cv2, service.jobs.worker"

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="reward3d-worker-cpu" \
      org.opencontainers.image.description="reward3d CPU worker (classical geometry, no weights)"
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/reward3d reward3d \
    && mkdir -p /data/blobs /run/reward3d && chown -R 10001:10001 /data /run/reward3d
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    REWARD3D_DEVICE=cpu \
    REWARD3D_GEOMETRY_BACKEND=classical \
    REWARD3D_RENDERER=torch_points \
    REWARD3D_DATA_DIR=/data \
    REWARD3D_BLOB_DIR=/data/blobs \
    REWARD3D_WORKER_READY_FILE=/run/reward3d/worker-ready
USER 10001:10001
WORKDIR /home/reward3d
# The final image can import the whole CPU pipeline (system libraries included).
RUN python -c "import cv2, pycolmap, av, torch, service.pipeline, service.jobs.worker"
HEALTHCHECK --interval=10s --timeout=3s --start-period=120s --retries=3 \
    CMD ["sh", "-c", "test -f \"$REWARD3D_WORKER_READY_FILE\""]
ENTRYPOINT ["reward3d"]
CMD ["worker"]
