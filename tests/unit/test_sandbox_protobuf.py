"""Protobuf bodies as kubectl's typed clients send them (`kubectl create namespace|configmap|…`)."""

import pytest

from sluice_sandbox.protobuf import ProtobufError, decode_object

# Captured from kubectl 1.32 (`kubectl -v=9 create …` prints the request body).
CREATE_NAMESPACE = bytes.fromhex(  # kubectl create namespace shop
    "6b3873000a0f0a02763112094e616d657370616365121c0a140a0473686f7012001a0022002a00320038004200"
    "12001a020a001a002200"
)
CREATE_CONFIGMAP = bytes.fromhex(  # kubectl create configmap settings --from-literal=color=blue -n default
    "6b3873000a0f0a0276311209436f6e6669674d617012300a1f0a0873657474696e677312001a0764656661756c7422002a0032003800"
    "4200120d0a05636f6c6f721204626c75651a002200"
)
CREATE_SECRET = bytes.fromhex(  # kubectl create secret generic token --from-literal=key=s3cr3t -n default
    "6b3873000a0c0a0276311206536563726574122f0a1c0a05746f6b656e12001a0764656661756c7422002a0032003800"
    "4200120d0a036b657912067333637233741a001a002200"
)
# kubectl create deployment web --image=nginx:1.27 --replicas=0 --port=8080 -n default
CREATE_DEPLOYMENT = bytes.fromhex(
    "6b3873000a150a07617070732f7631120a4465706c6f796d656e7412c5010a260a0377656212001a0764656661756c7422002a003200"
    "380042005a0a0a036170701203776562128c010800120c0a0a0a0361707012037765621a720a1c0a0012001a0022002a00320038004200"
    "5a0a0a036170701203776562125212340a056e67696e78120a6e67696e783a312e32372a00320b0a00100018903f22002a0042006a0072"
    "00800100880100900100a201001a00320042004a0052005800600068008201008a01009a0100c2010022020a00280038001a0c080010001800"
    "2000280038001a002200"
)
CREATE_SERVICE = bytes.fromhex(  # kubectl create service clusterip web --tcp=80:http -n default
    "6b3873000a0d0a02763112075365727669636512730a260a0377656212001a0764656661756c7422002a003200380042005a0a0a0361"
    "7070120377656212450a1e0a0738302d6874747012035443501850220a080110001a04687474702800120a0a0361707012037765621a00"
    "2209436c757374657249503a00420052005a00600068001a020a001a002200"
)
WEB = {"name": "web", "namespace": "default", "labels": {"app": "web"}}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            CREATE_NAMESPACE,
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}, "spec": {}, "status": {}},
        ),
        (
            CREATE_CONFIGMAP,
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "settings", "namespace": "default"},
                "data": {"color": "blue"},
            },
        ),
        (
            CREATE_SECRET,
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "token", "namespace": "default"},
                "data": {"key": "czNjcjN0"},
            },
        ),  # base64, as in JSON
        (
            CREATE_DEPLOYMENT,
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": WEB,
                "status": {},
                "spec": {
                    "replicas": 0,  # a pointer: a zero that was set, not an unset field
                    "selector": {"matchLabels": {"app": "web"}},
                    "strategy": {},
                    "template": {
                        "metadata": {"labels": {"app": "web"}},
                        "spec": {
                            "containers": [
                                {
                                    "name": "nginx",
                                    "image": "nginx:1.27",
                                    "ports": [{"containerPort": 8080}],
                                    "resources": {},
                                }
                            ]
                        },
                    },
                },
            },
        ),
        (
            CREATE_SERVICE,
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": WEB,
                "status": {},
                "spec": {
                    "ports": [{"name": "80-http", "protocol": "TCP", "port": 80, "targetPort": "http"}],
                    "selector": {"app": "web"},
                    "type": "ClusterIP",
                },
            },
        ),
    ],
    ids=["namespace", "configmap", "secret", "deployment", "service"],
)
def test_kubectl_create_bodies(body: bytes, expected: dict[str, object]) -> None:
    assert decode_object(body) == expected


def envelope(api_version: bytes, kind: bytes, raw: bytes) -> bytes:
    type_meta = b"\x0a" + bytes([len(api_version)]) + api_version + b"\x12" + bytes([len(kind)]) + kind
    return b"k8s\x00" + b"\x0a" + bytes([len(type_meta)]) + type_meta + b"\x12" + bytes([len(raw)]) + raw


def test_unknown_fields_holding_zeros_are_skipped_and_others_refused() -> None:
    # ConfigMap field 9 (unknown): an empty message is what Go writes for an unset struct.
    assert decode_object(envelope(b"v1", b"ConfigMap", b"\x0a\x03\x0a\x01a" + b"\x4a\x02\x08\x00")) == {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "a"},
    }
    with pytest.raises(ProtobufError, match="cannot decode field 9 of ConfigMap"):
        decode_object(envelope(b"v1", b"ConfigMap", b"\x0a\x03\x0a\x01a" + b"\x48\x01"))


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b'{"kind": "Namespace"}', "envelope"),
        (envelope(b"batch/v1", b"Job", b""), "not batch/v1 Job"),
        (CREATE_CONFIGMAP[:30], "truncated"),
    ],
)
def test_bodies_that_cannot_be_decoded(body: bytes, words: str) -> None:
    with pytest.raises(ProtobufError, match=words):
        decode_object(body)
