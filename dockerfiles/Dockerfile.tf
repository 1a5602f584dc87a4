# The heavy layer shared by the devel image and the python serving runtime: one venv with TensorFlow,
# built once (one TensorFlow download serves both images, and both start from the very same venv).
ARG PYTHON_BASE

# Builder: the only stage that reaches PyPI. The CA bundle and pip settings (build-only/) live here and
# nowhere else; the final stage below copies the finished venv alone, as one layer.
FROM ${PYTHON_BASE} AS builder
COPY build-only/ /tmp/tfship-build/
# Our pip.conf only: nothing from a host or base image config (local file:// indexes do not exist here).
ENV PIP_CONFIG_FILE=/tmp/tfship-build/pip.conf
ARG TENSORFLOW_VERSION
# tensorflow-cpu unless a GPU is configured (the full wheel is 0.6 GB larger). tensorflow-serving-api goes in
# with --no-deps: it depends on the full `tensorflow`, which would pull that wheel in again (its other
# dependencies, grpcio and protobuf, come with TensorFlow).
ARG TENSORFLOW_PACKAGE=tensorflow-cpu
# Then: drop TensorFlow's C++ headers (about 290 MB, only for compiling custom ops) and strip the symbol
# tables of TensorFlow's shared libraries (libtensorflow_cc alone shrinks by 200 MB; verified to import and
# serve; other wheels' libraries are left alone, some are patchelf-edited); binutils stays in this stage.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends binutils \
 && python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install "${TENSORFLOW_PACKAGE}==${TENSORFLOW_VERSION}" pyyaml grpcio-health-checking \
 && /opt/venv/bin/pip install --no-deps "tensorflow-serving-api==${TENSORFLOW_VERSION}" \
 && rm -rf /opt/venv/lib/python3.11/site-packages/tensorflow/include \
 && find /opt/venv/lib/python3.11/site-packages/tensorflow -name '*.so*' -type f \
        -exec strip --strip-unneeded {} + \
 && /opt/venv/bin/python -c "import tensorflow, tensorflow_serving.apis.prediction_service_pb2_grpc"

FROM ${PYTHON_BASE}
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
