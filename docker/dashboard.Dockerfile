# syntax=docker/dockerfile:1
# rq-dashboard (optional `dashboard` profile): a read-mostly view of the queue, behind HTTP
# basic auth (RQ_DASHBOARD_USERNAME / RQ_DASHBOARD_PASSWORD). Publish it on localhost only.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
FROM ${PYTHON_IMAGE}
ARG RQ_DASHBOARD_VERSION=0.9.0
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
COPY docker/constraints.txt /tmp/constraints.txt
RUN pip install --constraint /tmp/constraints.txt "rq-dashboard==${RQ_DASHBOARD_VERSION}" \
    && useradd --system --uid 10001 --user-group rqdash
USER 10001:10001
EXPOSE 9181
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import socket; socket.create_connection(('127.0.0.1', 9181), 3).close()"]
ENTRYPOINT ["rq-dashboard"]
CMD ["--bind", "0.0.0.0", "--port", "9181"]
