# CUDA-enabled image of cbst-tf (TensorFlow 2.21 / Keras 3).
#
#   docker build -t cbst-tf .
#   docker run --gpus all --rm -v /path/to/data:/data -v /path/to/runs:/runs \
#       -v /path/to/keras:/keras cbst-tf selftrain --config /opt/cbst-tf/experiments/<experiment>.yaml
#
# Base image: the `pip install "tensorflow[and-cuda]"` route, on python:3.11-slim rather than on
# nvidia/cuda or tensorflow/tensorflow:2.21.0-gpu.
# - The [and-cuda] extra installs CUDA and cuDNN as pip wheels (nvidia-*-cu12) pinned to the
#   versions this TensorFlow was built against, so the container needs only the host's NVIDIA
#   driver, which the NVIDIA Container Toolkit mounts in (`--gpus all`). An nvidia/cuda runtime
#   base would ship a second, unused copy of the CUDA libraries (gigabytes), and its Ubuntu
#   Python is 3.10 (22.04) or 3.12 (24.04), not the 3.11 we develop and test on.
# - tensorflow/tensorflow:*-gpu images use whatever Python their release tooling picked (it has
#   changed between releases), carry extra tooling we do not use, and are larger still.
# - python:3.11-slim gives exactly our Python, needs no apt packages (opencv-python-headless
#   and the TensorFlow wheels are self-contained), and is the smallest of the three.
FROM python:3.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    KERAS_HOME=/keras \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

# TensorFlow first, in its own layer: it is by far the largest and changes least often, so
# editing the package does not re-download it. Must match pyproject.toml's pin. Every package,
# the CUDA wheels included, at the version of requirements/lock.txt (`make lock`).
COPY requirements/lock.txt /tmp/lock.txt
RUN pip install --no-cache-dir -c /tmp/lock.txt "tensorflow[and-cuda]==2.21.*"

WORKDIR /opt/cbst-tf
# pyproject.toml names README.md as the package readme, so the build needs it too.
COPY pyproject.toml README.md ./
COPY cbst_tf ./cbst_tf
# The experiment YAMLs, so `--config /opt/cbst-tf/experiments/<name>.yaml` works in the image.
COPY experiments ./experiments
# Runtime dependencies only (no [dev] extra).
RUN pip install --no-cache-dir -c /tmp/lock.txt . \
    && groupadd --gid 1000 cbst \
    && useradd --create-home --uid 1000 --gid 1000 --shell /usr/sbin/nologin cbst \
    && mkdir -p /data /runs /keras/models \
    && chown -R cbst:cbst /data /runs /keras

# Numeric uid:gid, so runtimes that cannot resolve names (and PodSecurity runAsNonRoot) see a non-root user.
USER 1000:1000
# Offline ImageNet weights: put vgg16_weights_tf_dim_ordering_tf_kernels.h5 in <mount>/models/.
VOLUME ["/keras", "/data", "/runs"]
WORKDIR /runs

ENTRYPOINT ["cbst-tf"]
CMD ["--help"]
