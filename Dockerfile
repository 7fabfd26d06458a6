# One image for both roles; the command picks one:
#   docker build -t quiver:0.1 .
#   docker run quiver:0.1                      # shard-node (the default CMD)
#   docker run quiver:0.1 coordinator --shard-nodes node-0:6335,node-1:6335
# Every flag also reads a QUIVER_* variable (see `quiver shard-node --help`),
# which is how deploy/ configures the containers.

# Both stages must use the same Python: the venv copied out of the builder
# points at its interpreter by path (/usr/local/bin/python3.11).
ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------- builder
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/quiver

WORKDIR /src
# Dependencies first, from pyproject.toml alone, so a source change does not
# reinstall numpy, numba and grpc. Every one of them ships manylinux wheels:
# no compiler is needed.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
 && /opt/quiver/bin/pip install -r /tmp/requirements.txt

# Then the packages themselves (quiver/v1/ holds the generated gRPC code, so
# protos/ is not needed at run time), installed, not editable.
COPY shard/ shard/
COPY coordinator/ coordinator/
COPY quiver/ quiver/
RUN /opt/quiver/bin/pip install --no-deps . \
 && /opt/quiver/bin/quiver --help >/dev/null

# ------------------------------------------------------------------ final
# Debian (glibc), not Alpine: shard/memory.py tunes glibc's malloc, and numba,
# llvmlite and grpcio publish glibc wheels.
FROM ${PYTHON_IMAGE}

# A fixed numeric uid/gid: Kubernetes' runAsNonRoot can only verify a numeric USER.
RUN groupadd --system --gid 10001 quiver \
 && useradd --system --uid 10001 --gid quiver --home-dir /home/quiver --create-home \
        --shell /usr/sbin/nologin quiver \
 && install -d -o quiver -g quiver /data /var/cache/quiver /var/cache/quiver/numba

COPY --from=builder /opt/quiver /opt/quiver

# NUMBA_CACHE_DIR: numba caches compiled kernels (cache=True) next to their
# source by default, which is read-only here; this directory is writable (in
# Kubernetes an emptyDir is mounted on /var/cache/quiver, the root filesystem
# being read-only). OPENBLAS/OMP/MKL_NUM_THREADS=1: BLAS threads inside each
# request fight the server's own threads for the cores (quiver/cli.py sets the
# same defaults; here they are visible to `docker inspect`).
# QUIVER_DATA_DIR and QUIVER_METRICS_PORT make `docker run quiver:0.1` work
# without flags; the flags and the manifests' ConfigMaps override them.
ENV PATH=/opt/quiver/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    NUMBA_CACHE_DIR=/var/cache/quiver/numba \
    OPENBLAS_NUM_THREADS=1 \
    OMP_NUM_THREADS=1 \
    MKL_NUM_THREADS=1 \
    QUIVER_DATA_DIR=/data \
    QUIVER_METRICS_PORT=9100

USER 10001:10001
WORKDIR /home/quiver

# gRPC: 6334 coordinator (the public quiver.v1 API), 6335 shard node; 9100 Prometheus /metrics.
EXPOSE 6334 6335 9100

# quiver runs as PID 1 and handles SIGTERM itself (health turns NOT_SERVING,
# in-flight calls get QUIVER_SHUTDOWN_GRACE seconds, LMDB is closed), and
# starts no child processes, so no init process is needed.
ENTRYPOINT ["quiver"]
CMD ["shard-node"]
