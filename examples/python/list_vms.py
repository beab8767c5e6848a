#!/usr/bin/env python3
"""List a Blixard cluster's VMs from Python, as any gRPC client would.

Needs Debian's python3-grpcio and python3-grpc-tools (the stubs are
generated from the repository's proto/ files at start, into a temp dir).

    export BLIXARD_ENDPOINT=127.0.0.1:7001
    export BLIXARD_CA_CERT=.blixard-dev/node-1/tls/ca.pem
    export BLIXARD_TOKEN=$(cat .blixard-dev/node-1/admin.token)
    /usr/bin/python3 examples/python/list_vms.py

Prints one line per VM: name, state, node id. Pages through the whole
list (the server caps a page). Exits 1 with the gRPC status on failure.
"""

import os
import pathlib
import sys
import tempfile

import grpc
from grpc_tools import protoc

PROTO_ROOT = pathlib.Path(__file__).resolve().parents[2] / "proto"
PAGE_SIZE = 500


def load_stubs():
    """Generates the blixard.v1 Python stubs and imports them."""
    out = tempfile.mkdtemp(prefix="blixard-py-")
    protos = sorted(str(p) for p in (PROTO_ROOT / "blixard" / "v1").glob("*.proto"))
    rc = protoc.main(["protoc", f"-I{PROTO_ROOT}", f"--python_out={out}",
                      f"--grpc_python_out={out}", *protos])
    if rc != 0:
        sys.exit(f"generating stubs from {PROTO_ROOT} failed ({rc})")
    sys.path.insert(0, out)
    from blixard.v1 import types_pb2, vm_pb2, vm_pb2_grpc  # noqa: E402
    return types_pb2, vm_pb2, vm_pb2_grpc


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
    types_pb2, vm_pb2, vm_pb2_grpc = load_stubs()
    endpoint = os.environ.get("BLIXARD_ENDPOINT", "127.0.0.1:7001").split(",")[0]
    token = os.environ.get("BLIXARD_TOKEN", "").strip()
    metadata = [("authorization", f"Bearer {token}")] if token else []
    stub = vm_pb2_grpc.VmServiceStub(channel(endpoint))
    page_token = ""
    try:
        while True:
            resp = stub.ListVms(
                vm_pb2.ListVmsRequest(page_size=PAGE_SIZE, page_token=page_token),
                metadata=metadata, timeout=30)
            for vm in resp.vms:
                print(vm.name, types_pb2.VmState.Name(vm.state), vm.node_id)
            page_token = resp.next_page_token
            if not page_token:
                break
    except grpc.RpcError as e:
        sys.exit(f"ListVms failed: {e.code().name}: {e.details()}")


if __name__ == "__main__":
    main()
