#!/usr/bin/env python3
"""List a Blixard cluster's VMs from Python with no .proto files at all:
the daemon serves gRPC reflection (v1 and v1alpha; Python's
grpcio-reflection speaks v1alpha), so the client learns the API from it.

Needs the stock PyPI packages in requirements.txt beside this file:

    python3 -m venv venv && venv/bin/pip install -r examples/python/requirements.txt
    export BLIXARD_ENDPOINT=127.0.0.1:7001
    export BLIXARD_CA_CERT=.blixard-dev/node-1/tls/ca.pem
    export BLIXARD_TOKEN=$(cat .blixard-dev/node-1/admin.token)
    venv/bin/python examples/python/reflect_list_vms.py

Prints the services the daemon offers on stderr, then one line per VM on
stdout: name, state, node id. Exits 1 with the gRPC status on failure.
"""

import os
import sys

import grpc
from google.protobuf.descriptor_pool import DescriptorPool
from google.protobuf.message_factory import GetMessageClass
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

PAGE_SIZE = 500


def channel(endpoint):
    """TLS with the cluster CA when BLIXARD_CA_CERT is set; plaintext (an
    --insecure cluster) otherwise."""
    ca = os.environ.get("BLIXARD_CA_CERT")
    if not ca:
        print("warning: no BLIXARD_CA_CERT: plaintext, for --insecure clusters only",
              file=sys.stderr)
        return grpc.insecure_channel(endpoint)
    with open(ca, "rb") as f:
        creds = grpc.ssl_channel_credentials(root_certificates=f.read())
    return grpc.secure_channel(endpoint, creds)


def main():
    endpoint = os.environ.get("BLIXARD_ENDPOINT", "127.0.0.1:7001").split(",")[0]
    token = os.environ.get("BLIXARD_TOKEN", "").strip()
    metadata = [("authorization", f"Bearer {token}")] if token else []
    ch = channel(endpoint)
    try:
        reflection = ProtoReflectionDescriptorDatabase(ch)
        services = reflection.get_services()
        print("services:", " ".join(sorted(services)), file=sys.stderr)
        pool = DescriptorPool(reflection)
        method = pool.FindServiceByName("blixard.v1.VmService").methods_by_name["ListVms"]
        request_class = GetMessageClass(method.input_type)
        response_class = GetMessageClass(method.output_type)
        state_names = pool.FindEnumTypeByName("blixard.v1.VmState")
        list_vms = ch.unary_unary(
            "/blixard.v1.VmService/ListVms",
            request_serializer=request_class.SerializeToString,
            response_deserializer=response_class.FromString,
        )
        page_token = ""
        while True:
            resp = list_vms(request_class(page_size=PAGE_SIZE, page_token=page_token),
                            metadata=metadata, timeout=30)
            for vm in resp.vms:
                print(vm.name, state_names.values_by_number[vm.state].name, vm.node_id)
            page_token = resp.next_page_token
            if not page_token:
                break
    except grpc.RpcError as e:
        sys.exit(f"ListVms failed: {e.code().name}: {e.details()}")


if __name__ == "__main__":
    main()
