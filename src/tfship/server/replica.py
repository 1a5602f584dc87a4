"""Every gRPC answer names the replica that gave it, so a client behind a Service can show who answered.

The name goes in trailing metadata (TF Serving clients ignore keys they do not know): the host name, which in a
Kubernetes pod is the pod's name.
"""

from __future__ import annotations

import socket

import grpc

REPLICA_METADATA_KEY = "tfship-replica"


class ReplicaInterceptor(grpc.ServerInterceptor):
    def __init__(self, name: str | None = None):
        self.metadata = ((REPLICA_METADATA_KEY, name or socket.gethostname()),)

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler  # streaming calls (health Watch) stay as they are
        behavior = handler.unary_unary

        def tagged(request, context):
            context.set_trailing_metadata(self.metadata)
            return behavior(request, context)

        return handler._replace(unary_unary=tagged)
