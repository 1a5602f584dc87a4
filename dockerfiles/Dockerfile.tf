# The heavy layer shared by the devel image and the python serving runtime: one venv with TensorFlow,
# built once (one TensorFlow download serves both images, and both carry the very same layer).
ARG PYTHON_BASE

# Builder: the only stage that reaches PyPI. The CA bundle and pip settings (build-only/) live here and
# nowhere else; the final stage below copies the finished venv alone, as one layer.
FROM ${PYTHON_BASE} AS builder
COPY build-only/ /tmp/tfship-build/
# Our pip.conf only: nothing from a host or base image config (local file:// indexes do not exist here).
ENV PIP_CONFIG_FILE=/tmp/tfship-build/pip.conf
ARG TENSORFLOW_VERSION
# The last line drops TensorFlow's C++ headers (about 430 MB), needed only to compile custom ops.
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install "tensorflow==${TENSORFLOW_VERSION}" "tensorflow-serving-api==${TENSORFLOW_VERSION}" \
        pyyaml grpcio-health-checking \
 && rm -rf /opt/venv/lib/python3.11/site-packages/tensorflow/include

FROM ${PYTHON_BASE}
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
