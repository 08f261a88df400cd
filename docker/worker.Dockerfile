# syntax=docker/dockerfile:1
# A GPU worker: `reward3d worker` with torch (CUDA), gsplat compiled here for the listed GPU
# architectures (no JIT compile at first use), Depth Anything 3 and, optionally, TensorRT.
# Default DA3 checkpoint: DA3-BASE (Apache-2.0) with reward3d's own pixel-aligned Gaussians;
# DA3-GIANT's Gaussian head is an opt-in (CC BY-NC 4.0 weights; its e3nn dependency is in the
# `models` extra, so the image runs either). docs/models.md.
# Model weights are NEVER baked in: mount them (e.g. at /models) and point REWARD3D_DA3_MODEL,
# REWARD3D_VLM_MODEL, REWARD3D_LPIPS_WEIGHTS or HF_HOME at them (docs/operations.md).
#   docker build -f docker/worker.Dockerfile -t reward3d-worker .
#   docker build -f docker/worker.Dockerfile --build-arg WITH_TENSORRT=1 -t reward3d-worker:trt .
# Keep CUDA_VERSION, TORCH_INDEX_URL and TORCH_VERSION in step (the torch wheel's CUDA build
# must not be newer than the base image's toolkit that compiles gsplat).
ARG CUDA_VERSION=12.8.1
ARG UBUNTU_VERSION=ubuntu24.04

FROM nvidia/cuda:${CUDA_VERSION}-cudnn-devel-${UBUNTU_VERSION} AS build
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
ARG GSPLAT_VERSION=1.5.3
ARG DA3_VERSION=0.1.1
ARG WITH_TENSORRT=0
ARG TORCH_TENSORRT_VERSION=2.13.0
# Ampere (A100, A10/A40, RTX 30), Ada (L4, L40S, RTX 40), Hopper (H100/H200) + PTX for newer.
ARG TORCH_CUDA_ARCH_LIST="8.0;8.6;8.9;9.0+PTX"
# The extras to install (gsplat comes next); add `s3` for the S3 blob store.
ARG EXTRAS=service,models
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev build-essential ninja-build \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"
COPY pyproject.toml README.md ./
COPY docker/constraints.txt docker/constraints.txt
COPY service service
COPY trainer_client trainer_client
# The service with the learned models' runtime deps (the `models` extra; gsplat comes next).
RUN pip install --constraint docker/constraints.txt ".[${EXTRAS}]"
# gsplat from source, compiled now against this torch (BUILD_NO_CUDA=0), not at first use;
# then Depth Anything 3 without its declared export/demo dependencies (docs/models.md), and
# torch-tensorrt when asked for (it must match TORCH_VERSION exactly).
RUN TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST}" BUILD_NO_CUDA=0 MAX_JOBS=8 \
        pip install --no-build-isolation --no-binary gsplat "gsplat==${GSPLAT_VERSION}" \
    && python -c "import glob, sys; sys.exit(not glob.glob('/opt/venv/lib/python3*/site-packages/gsplat/csrc*.so'))" \
    && pip install --no-deps "depth-anything-3==${DA3_VERSION}" \
    && if [ "${WITH_TENSORRT}" = "1" ]; then \
        pip install --extra-index-url "${TORCH_INDEX_URL}" "torch-tensorrt==${TORCH_TENSORRT_VERSION}" "torch==${TORCH_VERSION}"; \
    fi \
    && python -c "import torch, depth_anything_3, service.jobs.worker; print('torch', torch.__version__, 'cuda', torch.version.cuda)"

FROM nvidia/cuda:${CUDA_VERSION}-cudnn-runtime-${UBUNTU_VERSION} AS runtime
LABEL org.opencontainers.image.title="reward3d-worker" \
      org.opencontainers.image.description="reward3d GPU worker (models mounted, never baked in)"
ENV DEBIAN_FRONTEND=noninteractive
# gcc + libc6-dev + python3-dev: triton (torch.compile's CUDA code generator) compiles a small
# C launcher against Python's headers the first time each kernel runs, inside the container.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-dev gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --create-home --home-dir /home/reward3d reward3d \
    && mkdir -p /data/blobs /models /var/cache/reward3d/tensorrt /run/reward3d \
    && chown -R 10001:10001 /data /var/cache/reward3d /run/reward3d
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HOME=/models/huggingface \
    HF_HUB_OFFLINE=1 \
    REWARD3D_DEVICE=cuda \
    REWARD3D_DATA_DIR=/data \
    REWARD3D_BLOB_DIR=/data/blobs \
    REWARD3D_DA3_ENGINE_CACHE=/var/cache/reward3d/tensorrt \
    REWARD3D_WORKER_READY_FILE=/run/reward3d/worker-ready
USER 10001:10001
WORKDIR /home/reward3d
# The final image imports the pipeline (system libraries included); gsplat's kernels load on a GPU.
RUN python -c "import cv2, pycolmap, av, torch, depth_anything_3, e3nn, transformers, service.pipeline, service.jobs.worker" \
    && gcc --version > /dev/null
# Healthy = models loaded and warmed, taking jobs (service/jobs/readiness.py). Loading DA3 and
# the VLM (and building a TensorRT engine the first time) takes minutes: a long start period.
HEALTHCHECK --interval=15s --timeout=3s --start-period=900s --retries=3 \
    CMD ["sh", "-c", "test -f \"$REWARD3D_WORKER_READY_FILE\""]
ENTRYPOINT ["reward3d"]
CMD ["worker"]
