#!/bin/sh
# The tensorflow/serving image's entrypoint contract, for both runtimes: gRPC on 8500, REST on 8501,
# MODEL_NAME under MODEL_BASE_PATH, extra flags passed through. MODEL_CONFIG_FILE (several models or a
# version policy) names the models instead. TFSHIP_SERVER is set by the python runtime.
set -e
server=${TFSHIP_SERVER:-tensorflow_model_server}
if [ -n "${MODEL_CONFIG_FILE:-}" ]; then
    # shellcheck disable=SC2086  # $server may be "python -m tfship.server"
    exec $server --port=8500 --rest_api_port=8501 --model_config_file="${MODEL_CONFIG_FILE}" "$@"
fi
# shellcheck disable=SC2086
exec $server --port=8500 --rest_api_port=8501 --model_name="${MODEL_NAME}" \
    --model_base_path="${MODEL_BASE_PATH}/${MODEL_NAME}" "$@"
