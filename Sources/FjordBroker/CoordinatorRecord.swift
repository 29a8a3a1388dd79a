import FjordProtocol
import NIOCore

/// One `__consumer_offsets` record, decoded (Kafka's `CoordinatorRecord`): the key says what the
/// record is about, the value is its new state, and only a record whose value is absent (a
/// tombstone) deletes that state.
///
/// Key versions are Kafka's: 0–1 an offset commit (OffsetCommitKey/OffsetCommitValue), 2 a
/// classic group (GroupMetadataKey/GroupMetadataValue); Fjord's KIP-848 group state uses key
/// version 32000 (`FjordConsumerGroupRecord`), outside Kafka's range.
enum CoordinatorRecord {
    case offsetCommit(group: String, partition: TopicPartition, value: OffsetCommitValue?)
    case groupMetadata(group: String, value: GroupMetadataValue?)
    case consumerGroup(group: String, value: FjordConsumerGroupValue?)
}

/// Why a `__consumer_offsets` record could not be decoded. The loader logs it with the record's
/// offset and skips the record; it is never taken for a tombstone.
enum CoordinatorRecordError: Error, CustomStringConvertible {
    case missingKey
    /// A key version Kafka or Fjord does not define (a newer writer, or damage).
    case unknownKeyVersion(Int16)
    case undecodableKey(version: Int16, ProtocolError)
    /// The key decoded but the value did not: the record's state is unknown, not deleted.
    case undecodableValue(key: String, ProtocolError)
    /// An encoder refused a value (a field the pinned version cannot carry).
    case unencodable(String, ProtocolError)

    var description: String {
        switch self {
        case .missingKey: "record without a key"
        case .unknownKeyVersion(let version): "unknown key version \(version)"
        case .undecodableKey(let version, let error): "key version \(version) does not decode: \(error)"
        case .undecodableValue(let key, let error): "value of \(key) does not decode: \(error)"
        case .unencodable(let what, let error): "cannot encode \(what): \(error)"
        }
    }
}

/// Encodes and decodes `__consumer_offsets` records (Kafka's `CoordinatorRecordSerde`): a
/// big-endian int16 version, then the schema's fields in that version. Pure: no I/O.
///
/// Writers use OffsetCommitKey v1 / OffsetCommitValue v3 (v1 for an offset committed with a
/// `retention_time_ms`, the only version with an expire timestamp) and GroupMetadataKey v2 /
/// GroupMetadataValue v3, as Kafka's classic coordinator does, so Kafka's own tools read them.
enum CoordinatorRecordSerde {
    static let offsetCommitKeyVersion: Int16 = 1
    static let offsetCommitValueVersion: Int16 = 3
    static let groupMetadataKeyVersion: Int16 = 2
    static let groupMetadataValueVersion: Int16 = 3

    // MARK: Encoding

    static func offsetCommitKey(group: String, partition: TopicPartition) throws(CoordinatorRecordError) -> ByteBuffer {
        var key = OffsetCommitKey()
        key.group = group
        key.topic = partition.topic
        key.partition = partition.partition
        return try encode(key, version: offsetCommitKeyVersion, what: "offset commit key of \(group)")
    }

    static func offsetCommitValue(_ value: OffsetCommitValue, version: Int16 = offsetCommitValueVersion) throws(CoordinatorRecordError) -> ByteBuffer {
        try encode(value, version: version, what: "offset commit value")
    }

    static func groupMetadataKey(group: String) throws(CoordinatorRecordError) -> ByteBuffer {
        var key = GroupMetadataKey()
        key.group = group
        return try encode(key, version: groupMetadataKeyVersion, what: "group key of \(group)")
    }

    static func groupMetadataValue(_ value: GroupMetadataValue, group: String) throws(CoordinatorRecordError) -> ByteBuffer {
        try encode(value, version: groupMetadataValueVersion, what: "group metadata of \(group)")
    }

    static func consumerGroupKey(group: String) throws(CoordinatorRecordError) -> ByteBuffer {
        var key = FjordConsumerGroupKey()
        key.groupId = group
        return try encode(key, version: FjordConsumerGroupRecord.keyVersion, what: "consumer group key of \(group)")
    }

    static func consumerGroupValue(_ value: FjordConsumerGroupValue, group: String) throws(CoordinatorRecordError) -> ByteBuffer {
        try encode(value, version: FjordConsumerGroupRecord.valueVersion, what: "consumer group state of \(group)")
    }

    private static func encode(_ message: some KafkaMessage, version: Int16, what: String) throws(CoordinatorRecordError) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeInteger(version, endianness: .big)
        do {
            try message.write(to: &buffer, version: version)
        } catch {
            throw .unencodable(what, error)
        }
        return buffer
    }

    // MARK: Decoding

    /// Decodes a record; throws when its key or (present) value does not decode. A nil value
    /// is a tombstone; an empty one is not (Kafka writes none).
    static func decode(key: ByteBuffer?, value: ByteBuffer?) throws(CoordinatorRecordError) -> CoordinatorRecord {
        guard var key, let version = key.readInteger(endianness: .big, as: Int16.self) else { throw .missingKey }
        switch version {
        case 0, 1:
            let k: OffsetCommitKey = try decodeKey(&key, version: version)
            let name = "offset of \(k.group) \(k.topic)-\(k.partition)"
            let v: OffsetCommitValue? = try decodeValue(value, key: name)
            return .offsetCommit(group: k.group, partition: TopicPartition(topic: k.topic, partition: k.partition), value: v)
        case 2:
            let k: GroupMetadataKey = try decodeKey(&key, version: version)
            let v: GroupMetadataValue? = try decodeValue(value, key: "group \(k.group)")
            return .groupMetadata(group: k.group, value: v)
        case FjordConsumerGroupRecord.keyVersion:
            let k: FjordConsumerGroupKey = try decodeKey(&key, version: version)
            let v: FjordConsumerGroupValue? = try decodeValue(value, key: "consumer group \(k.groupId)")
            return .consumerGroup(group: k.groupId, value: v)
        default:
            throw .unknownKeyVersion(version)
        }
    }

    private static func decodeKey<Key: KafkaMessage>(_ key: inout ByteBuffer, version: Int16) throws(CoordinatorRecordError) -> Key {
        do {
            return try Key(from: &key, version: version)
        } catch {
            throw .undecodableKey(version: version, error)
        }
    }

    private static func decodeValue<Value: KafkaMessage>(_ value: ByteBuffer?, key: String) throws(CoordinatorRecordError) -> Value? {
        guard var value else { return nil }
        guard let version = value.readInteger(endianness: .big, as: Int16.self) else {
            throw .undecodableValue(key: key, .truncated(need: 2, have: value.readableBytes))
        }
        do {
            return try Value(from: &value, version: version)
        } catch {
            throw .undecodableValue(key: key, error)
        }
    }
}
