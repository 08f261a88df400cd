# syntax=docker/dockerfile:1
# The Flow-GRPO trainer (`reward3d train CONFIG`), scoring its rollouts through a reward3d
# service over HTTP (REWARD3D_API_KEY, reward.url in the config). Wan 2.1 weights are mounted
# (HF_HOME or local paths in the config), never baked in; checkpoints go to a volume (/runs).
#   docker build -f docker/trainer.Dockerfile -t reward3d-trainer .
#   docker run --gpus all -v /models:/models -v /runs:/runs -e REWARD3D_API_KEY=... reward3d-trainer \
#       /opt/reward3d/configs/wan2_1_1_3b.yaml --set reward.url=http://rewards:8000 --output-dir /runs/wan
ARG CUDA_VERSION=12.8.1
ARG UBUNTU_VERSION=ubuntu24.04

FROM nvidia/cuda:${CUDA_VERSION}-cudnn-runtime-${UBUNTU_VERSION} AS build
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"
COPY pyproject.toml README.md ./
COPY docker/constraints.txt docker/constraints.txt
COPY service service
COPY trainer_client trainer_client
RUN pip install --constraint docker/constraints.txt ".[train]" \
    && python -c "import trainer_client.cli, diffusers, peft"

FROM nvidia/cuda:${CUDA_VERSION}-cudnn-runtime-${UBUNTU_VERSION} AS runtime
LABEL org.opencontainers.image.title="reward3d-trainer" \
      org.opencontainers.image.description="Flow-GRPO trainer for Wan 2.1 against a reward3d service"
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --create-home --home-dir /home/reward3d reward3d \
    && mkdir -p /runs /models && chown -R 10001:10001 /runs
COPY --from=build /opt/venv /opt/venv
COPY configs /opt/reward3d/configs
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HOME=/models/huggingface
USER 10001:10001
WORKDIR /runs
RUN python -c "import torch, diffusers, peft, trainer_client.cli"
# A batch process: it is healthy while it runs, and its exit code says how it ended
# (0 done, 1 failed, 2 bad config, 130 interrupted after a checkpoint).
HEALTHCHECK NONE
ENTRYPOINT ["reward3d", "train"]
CMD ["/opt/reward3d/configs/tiny_cpu.yaml", "--output-dir", "/runs/tiny"]
