"""ACLs enforced by a real broker (authorizer.class.name set), for a SASL user driven by real
clients (confluent-kafka, kafka-python), managed with `fjord acls` over a loopback PLAINTEXT
listener whose ANONYMOUS principal is a super user (how a first admin bootstraps, as in Kafka)."""

import json
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaAdminClient
from kafka.admin import ACLFilter, ACLOperation, ACLPermissionType, ACLResourcePatternType, ResourcePatternFilter
from kafka.admin import ResourceType as PythonResourceType
from kafka.errors import ClusterAuthorizationFailedError, TopicAuthorizationFailedError

from conftest import FJORD_BIN, Broker, free_port

AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"


def fjord(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([FJORD_BIN, *args], capture_output=True, text=True, timeout=60)


def acls(bootstrap: str, *args: str) -> str:
    result = fjord("acls", *args, "-b", bootstrap)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture
def secured():
    """A broker with an authorizer: PLAINTEXT (ANONYMOUS is a super user) and SASL_PLAINTEXT."""
    tmp = tempfile.TemporaryDirectory(prefix="fjord-acl-")
    plain, sasl = free_port(), free_port()
    broker = Broker(Path(tmp.name) / "data", {
        "listeners": f"PLAINTEXT://127.0.0.1:{plain},SASL_PLAINTEXT://127.0.0.1:{sasl}",
        "sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-512",
        "authorizer.class.name": AUTHORIZER,
        "super.users": "User:ANONYMOUS",
        "auto.create.topics.enable": "true",
    }, port=plain).start()
    result = fjord("users", "create", "alice", "--password", "alice-secret", "-b", broker.bootstrap)
    assert result.returncode == 0, result.stderr
    yield broker, {"bootstrap.servers": f"127.0.0.1:{sasl}", "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
                   "sasl.username": "alice", "sasl.password": "alice-secret"}
    broker.stop()
    print("\n".join(broker.log_text().splitlines()[-40:]))
    tmp.cleanup()


def produce(config: dict, topic: str, count: int, timeout_ms: int = 20000) -> list:
    """Produces `count` records; returns each delivery's error (None when acknowledged)."""
    producer = Producer({**config, "linger.ms": 5, "message.timeout.ms": timeout_ms, "enable.idempotence": True})
    results = []
    for i in range(count):
        producer.produce(topic, key=str(i).encode(), value=b"v", on_delivery=lambda err, msg: results.append(err))
    producer.flush(timeout_ms / 1000 + 10)
    return results


def consume(config: dict, topic: str, group: str, want: int, seconds: float = 20) -> tuple[list[int], list]:
    """Consumes with a group; returns (keys, errors) once `want` arrived, an error came, or time ran out."""
    consumer = Consumer({**config, "group.id": group, "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    keys, errors = [], []
    deadline = time.time() + seconds
    while len(keys) < want and time.time() < deadline and not errors:
        message = consumer.poll(0.5)
        if message is None:
            continue
        if message.error():
            if message.error().code() != KafkaError._PARTITION_EOF:
                errors.append(message.error())
            continue
        keys.append(int(message.key()))
    if keys and not errors:
        consumer.commit(asynchronous=False)
    consumer.close()
    return keys, errors


def test_acls_deny_by_default_then_allow_prefixed_and_deny_wins(secured):
    broker, alice = secured
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for future in admin.create_topics([NewTopic("acl-orders", 2, 1), NewTopic("secret", 1, 1)]).values():
        future.result(30)

    # No ACL names alice: produce, consume (group join), topic creation and metadata are refused.
    errors = produce(alice, "acl-orders", 3, timeout_ms=5000)
    assert errors and all(e is not None and e.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED for e in errors), errors
    as_alice = AdminClient(alice)
    creation = as_alice.create_topics([NewTopic("acl-new", 1, 1)])["acl-new"]
    with pytest.raises(Exception) as refused:
        creation.result(30)
    assert refused.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert as_alice.list_topics(timeout=10).topics == {}, "Metadata listed topics alice may not describe"

    # kafka-python sees the same refusals (its own protocol code).
    python_admin = KafkaAdminClient(bootstrap_servers=alice["bootstrap.servers"], security_protocol="SASL_PLAINTEXT",
                                    sasl_mechanism="PLAIN", sasl_plain_username="alice", sasl_plain_password="alice-secret")
    try:
        described = python_admin.describe_topics(["acl-orders"])
        assert [t["error_code"] for t in described] == [TopicAuthorizationFailedError.errno], described
    except TopicAuthorizationFailedError:
        pass  # kafka-python 2.1+ raises it instead
    python_admin.close()

    # A producer's ACLs on the prefix acl-: writes to acl-orders succeed; secret stays closed.
    out = acls(broker.bootstrap, "add", "--allow-principal", "User:alice", "--producer", "--topic", "acl-",
               "--resource-pattern-type", "prefixed")
    assert out.count("added") == 3
    assert produce(alice, "acl-orders", 100) == [None] * 100
    errors = produce(alice, "secret", 1, timeout_ms=5000)
    assert errors[0] is not None and errors[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    # CREATE on the prefix lets alice create acl-new (and auto-create by Metadata).
    as_alice.create_topics([NewTopic("acl-new", 1, 1)])["acl-new"].result(30)
    assert set(as_alice.list_topics(timeout=10).topics) == {"acl-orders", "acl-new"}

    # Reading needs READ on the topic and on the group: without the group ACL, the join is refused.
    acls(broker.bootstrap, "add", "--allow-principal", "User:alice", "--operation", "Read", "--topic", "acl-orders")
    keys, errors = consume(alice, "acl-orders", "readers", 100)
    assert errors and errors[0].code() == KafkaError.GROUP_AUTHORIZATION_FAILED, (keys, errors)
    acls(broker.bootstrap, "add", "--allow-principal", "User:alice", "--consumer", "--topic", "acl-orders", "--group", "readers")
    keys, errors = consume(alice, "acl-orders", "readers", 100)
    assert errors == [] and sorted(keys) == list(range(100))

    # A DENY beats every ALLOW: alice may no longer read acl-orders, though she still may write.
    acls(broker.bootstrap, "add", "--deny-principal", "User:alice", "--operation", "Read", "--topic", "acl-orders")
    consumer = Consumer({**alice, "group.id": "readers", "enable.auto.commit": False})
    consumer.assign([TopicPartition("acl-orders", 0, 0)])
    message = None
    deadline = time.time() + 15
    while time.time() < deadline:
        message = consumer.poll(0.5)
        if message is not None and message.error() is not None:
            break
    consumer.close()
    assert message is not None and message.error() is not None
    assert message.error().code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, message.error()
    assert produce(alice, "acl-orders", 5) == [None] * 5

    # The list shows what was added; removing the deny restores the read. ACLs survive a restart.
    listed = json.loads(acls(broker.bootstrap, "list", "--json", "--principal", "User:alice"))
    assert {"resourceType": "Topic", "resourceName": "acl-orders", "patternType": "LITERAL", "principal": "User:alice",
            "host": "*", "operation": "READ", "permission": "DENY"} in listed
    assert {(b["resourceName"], b["patternType"], b["operation"]) for b in listed if b["permission"] == "ALLOW"} >= {
        ("acl-", "PREFIXED", "WRITE"), ("acl-", "PREFIXED", "CREATE"), ("readers", "LITERAL", "READ")}
    broker.restart()
    assert json.loads(acls(broker.bootstrap, "list", "--json", "--principal", "User:alice")) == listed
    out = acls(broker.bootstrap, "remove", "--deny-principal", "User:alice", "--operation", "Read", "--topic", "acl-orders")
    assert "removed" in out
    keys, errors = consume(alice, "acl-orders", "readers", 5)  # from the group's committed offsets: the 5 written since
    assert errors == [] and sorted(keys) == list(range(5))


def test_cluster_and_group_apis_answer_the_authorization_codes(secured):
    broker, alice = secured
    as_alice = AdminClient(alice)
    # CreateAcls / DescribeAcls need the cluster: CLUSTER_AUTHORIZATION_FAILED for alice.
    from confluent_kafka.admin import (AclBinding, AclBindingFilter, AclOperation, AclPermissionType, ResourcePatternType,
                                       ResourceType)
    binding = AclBinding(ResourceType.TOPIC, "x", ResourcePatternType.LITERAL, "User:alice", "*", AclOperation.READ,
                         AclPermissionType.ALLOW)
    with pytest.raises(Exception) as refused:
        as_alice.create_acls([binding])[binding].result(30)
    assert refused.value.args[0].code() == KafkaError.CLUSTER_AUTHORIZATION_FAILED
    any_filter = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None, AclOperation.ANY,
                                  AclPermissionType.ANY)
    # librdkafka reports DescribeAcls' top-level error as an empty result; kafka-python raises it.
    assert as_alice.describe_acls(any_filter).result(30) == []
    python_admin = KafkaAdminClient(bootstrap_servers=alice["bootstrap.servers"], security_protocol="SASL_PLAINTEXT",
                                    sasl_mechanism="PLAIN", sasl_plain_username="alice", sasl_plain_password="alice-secret")
    with pytest.raises(ClusterAuthorizationFailedError):
        python_admin.describe_acls(ACLFilter(principal=None, host=None, operation=ACLOperation.ANY,
                                             permission_type=ACLPermissionType.ANY,
                                             resource_pattern=ResourcePatternFilter(PythonResourceType.ANY, None,
                                                                                    ACLResourcePatternType.ANY)))
    python_admin.close()

    # The super user's confluent-kafka admin creates, describes and deletes them (Kafka's wire format).
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_acls([binding])[binding].result(30)
    described = admin.describe_acls(any_filter).result(30)
    assert binding in described
    deleted = admin.delete_acls([any_filter])[any_filter].result(30)
    assert binding in deleted
    assert admin.describe_acls(any_filter).result(30) == []

    # Groups alice may not describe are left out of ListGroups; DescribeGroups answers 30.
    admin.create_topics([NewTopic("g-topic", 1, 1)])["g-topic"].result(30)
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    producer.produce("g-topic", b"x")
    producer.flush(10)
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "hidden", "auto.offset.reset": "earliest"})
    consumer.subscribe(["g-topic"])
    deadline = time.time() + 20
    while time.time() < deadline and consumer.poll(0.5) is None:
        pass
    consumer.commit(asynchronous=False)
    consumer.close()
    assert "hidden" in [g.group_id for g in admin.list_consumer_groups().result(30).valid]
    assert [g.group_id for g in as_alice.list_consumer_groups().result(30).valid] == []
    with pytest.raises(Exception) as refused:
        as_alice.describe_consumer_groups(["hidden"])["hidden"].result(30)
    assert refused.value.args[0].code() == KafkaError.GROUP_AUTHORIZATION_FAILED
    assert "ACLs created" in broker.log_text()
