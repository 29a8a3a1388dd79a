import FjordCompression
import FjordProtocol
import Foundation
import NIOCore
import Testing

/// A frame or batch encoded by an independent Kafka implementation (kafka-python, librdkafka),
/// described by the `manifest.json` beside it (see tools/fixtures/README.md).
struct Fixture: CustomTestStringConvertible, Sendable {
    let source: String
    let file: String
    let kind: String
    let apiKey: Int16
    let apiVersion: Int16
    let magic: Int
    let codec: String
    /// The manifest entry, as JSON text (kept as text so the fixture stays Sendable).
    let entryJSON: String

    var testDescription: String { "\(source)/\(file)" }

    var bytes: ByteBuffer {
        let url = Repository.fixtures.appendingPathComponent(source).appendingPathComponent(file)
        let data = (try? Data(contentsOf: url)) ?? Data()
        var buffer = ByteBuffer()
        buffer.writeBytes(data)
        return buffer
    }

    var entry: [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(entryJSON.utf8))) as? [String: Any] ?? [:]
    }

    static func load(source: String) -> [Fixture] {
        let url = Repository.fixtures.appendingPathComponent(source).appendingPathComponent("manifest.json")
        guard let data = try? Data(contentsOf: url),
            let list = try? JSONSerialization.jsonObject(with: data) as? [[String: Any]]
        else { return [] }
        return list.compactMap { entry -> Fixture? in
            guard let file = entry["file"] as? String, let kind = entry["kind"] as? String,
                let json = try? JSONSerialization.data(withJSONObject: entry, options: [.sortedKeys])
            else { return nil }
            return Fixture(
                source: source, file: file, kind: kind,
                apiKey: Int16(entry["api_key"] as? Int ?? -1),
                apiVersion: Int16(entry["api_version"] as? Int ?? -1),
                magic: entry["magic"] as? Int ?? -1,
                codec: entry["codec"] as? String ?? "none",
                entryJSON: String(decoding: json, as: UTF8.self))
        }
    }

    static let kafkaPython: [Fixture] = load(source: "kafka-python")
    static let librdkafka: [Fixture] = load(source: "librdkafka")
    static var frames: [Fixture] { (kafkaPython + librdkafka).filter { $0.kind == "request" || $0.kind == "response" } }
    static var batches: [Fixture] { (kafkaPython + librdkafka).filter { $0.kind == "record_batch" } }
}

/// Re-encodes a decoded request frame: header at its version, then the body.
func reencodeRequest(_ frame: RequestFrame, body: any KafkaRequest) throws -> ByteBuffer {
    var out = ByteBuffer()
    try frame.header.write(to: &out, version: frame.apiKey.requestHeaderVersion(apiVersion: frame.apiVersion))
    try body.write(to: &out, version: frame.apiVersion)
    return out
}

@Suite("Conformance fixtures from kafka-python and librdkafka")
struct FixtureTests {
    @Test("fixtures are present for every API the broker will serve, oldest and newest kafka-python version")
    func coverage() throws {
        let required: [APIKey] = [
            .apiVersions, .metadata, .produce, .fetch, .listOffsets, .findCoordinator, .joinGroup, .syncGroup,
            .heartbeat, .leaveGroup, .offsetCommit, .offsetFetch, .createTopics, .deleteTopics, .initProducerId,
            .describeConfigs,
        ]
        let python = Fixture.kafkaPython
        #expect(!python.isEmpty, "no kafka-python fixtures; run tools/fixtures/gen_kafka_python.py")
        for key in required {
            for kind in ["request", "response"] {
                let versions = python.filter { $0.kind == kind && $0.apiKey == key.rawValue }.map(\.apiVersion)
                #expect(versions.count >= 2, "\(key.name) \(kind): versions \(versions)")
            }
        }
        #expect(Set(Fixture.librdkafka.filter { $0.kind == "request" }.map(\.apiKey)).count >= 5,
                "librdkafka fixtures should cover several APIs")
    }

    @Test("request and response frames decode and re-encode byte-identically", arguments: Fixture.frames)
    func roundTrip(fixture: Fixture) throws {
        let bytes = fixture.bytes
        #expect(bytes.readableBytes > 0)
        let key = try #require(APIKey(rawValue: fixture.apiKey))
        guard key.validVersions.contains(fixture.apiVersion) else {
            // Newer than the pinned schemas (kafka-python 3 knows a few later versions): such a
            // frame must be refused with a typed error, which the broker turns into
            // UNSUPPORTED_VERSION; it never advertises these versions.
            #expect(throws: ProtocolError.unsupportedVersion(message: "\(key.name)\(fixture.kind == "request" ? "Request" : "Response")", version: fixture.apiVersion)) {
                if fixture.kind == "request" {
                    _ = try RequestFrame(parsing: bytes).decodeBody()
                } else {
                    _ = try ResponseFrame.decode(bytes, apiKey: key, version: fixture.apiVersion)
                }
            }
            return
        }
        if fixture.kind == "request" {
            let frame = try RequestFrame(parsing: bytes)
            #expect(frame.apiKey.rawValue == fixture.apiKey)
            #expect(frame.apiVersion == fixture.apiVersion)
            let body = try frame.decodeBodyExactly()
            let out = try reencodeRequest(frame, body: body)
            #expect(out.allBytes == bytes.allBytes, "re-encoded \(hex(out.allBytes)) != \(hex(bytes.allBytes))")
        } else {
            let decoded = try ResponseFrame.decode(bytes, apiKey: key, version: fixture.apiVersion)
            var out = ByteBuffer()
            try decoded.header.write(to: &out, version: key.responseHeaderVersion(apiVersion: fixture.apiVersion))
            try decoded.body.write(to: &out, version: fixture.apiVersion)
            #expect(out.allBytes == bytes.allBytes, "re-encoded \(hex(out.allBytes)) != \(hex(bytes.allBytes))")
        }
    }

    @Test("record batches decode to exactly the records the encoder put in", arguments: Fixture.batches)
    func batches(fixture: Fixture) throws {
        var bytes = fixture.bytes
        guard fixture.magic == 2 else {
            // Legacy message sets are refused (docs/ARCHITECTURE.md), never misread.
            #expect(throws: ProtocolError.self) { _ = try RecordBatch.read(from: &bytes) }
            return
        }
        let batch = try #require(try RecordBatch.read(from: &bytes))
        #expect(bytes.readableBytes == 0)
        try batch.validate()
        let entry = fixture.entry
        let header = try #require(entry["batch"] as? [String: Any])
        #expect(Int64(header["base_offset"] as? Int ?? -99) == batch.baseOffset)
        #expect(Int64(header["producer_id"] as? Int ?? -99) == batch.producerID)
        #expect(Int16(header["producer_epoch"] as? Int ?? -99) == batch.producerEpoch)
        #expect(Int32(header["base_sequence"] as? Int ?? -99) == batch.baseSequence)
        #expect((header["is_transactional"] as? Bool ?? false) == batch.attributes.isTransactional)
        #expect(UInt32(header["crc"] as? Int ?? -1) == batch.crc)
        #expect(batch.attributes.compression.description == fixture.codec)

        let expected = try #require(entry["records"] as? [[String: Any]])
        let records = try batch.records()
        #expect(records.count == expected.count)
        for (record, want) in zip(records, expected) {
            #expect(record.offset == Int64(want["offset"] as? Int ?? -1))
            #expect(record.timestamp == Int64(want["timestamp"] as? Int ?? -1))
            #expect(record.key.map { Data($0.allBytes).base64EncodedString() } == want["key"] as? String)
            #expect(record.value.map { Data($0.allBytes).base64EncodedString() } == want["value"] as? String)
            let headers = want["headers"] as? [[Any]] ?? []
            #expect(record.headers.count == headers.count)
            for (got, pair) in zip(record.headers, headers) {
                #expect(got.key == pair[0] as? String)
                #expect(got.value.map { Data($0.allBytes).base64EncodedString() } == pair[1] as? String)
            }
        }

        // Re-encode the records: uncompressed batches must come out byte-identical; compressed
        // ones must re-encode to exactly the decompressed record bytes.
        var builder = RecordBatchBuilder(baseOffset: batch.baseOffset, attributes: batch.attributes)
        builder.partitionLeaderEpoch = batch.partitionLeaderEpoch
        builder.producerID = batch.producerID
        builder.producerEpoch = batch.producerEpoch
        builder.baseSequence = batch.baseSequence
        var plain = RecordBatchBuilder(baseOffset: batch.baseOffset)
        for record in records {
            builder.append(offsetDelta: record.offsetDelta, timestamp: record.timestamp, key: record.key,
                           value: record.value, headers: record.headers)
            plain.append(offsetDelta: record.offsetDelta, timestamp: record.timestamp, key: record.key,
                         value: record.value, headers: record.headers)
        }
        if batch.attributes.compression == .none {
            #expect(try builder.build().bytes.allBytes == batch.bytes.allBytes)
        } else {
            var payload = batch.bytes
            payload.moveReaderIndex(forwardBy: RecordBatch.headerSize)
            let decompressed = try batch.attributes.compression.decompress(payload, limit: 1 << 24)
            var rebuilt = try plain.build().bytes
            rebuilt.moveReaderIndex(forwardBy: RecordBatch.headerSize)
            #expect(rebuilt.allBytes == decompressed.allBytes)
        }
    }

    /// Every v2 batch inside a fixture's Produce request or Fetch response validates: this is
    /// what librdkafka and kafka-python really put on the wire, CRC and all.
    @Test("record batches inside produce frames validate")
    func batchesInsideProduceFrames() throws {
        var checked = 0
        for fixture in Fixture.frames where fixture.kind == "request" && fixture.apiKey == APIKey.produce.rawValue
            && APIKey.produce.validVersions.contains(fixture.apiVersion) && fixture.apiVersion >= 3
        {
            let frame = try RequestFrame(parsing: fixture.bytes)
            let request = try #require(try frame.decodeBody() as? ProduceRequest)
            for topic in request.topicData {
                for partition in topic.partitionData {
                    guard var records = partition.records else { continue }
                    while let batch = try RecordBatch.read(from: &records) {
                        try batch.validate()
                        _ = try batch.records()
                        checked += 1
                    }
                    #expect(records.readableBytes == 0, "\(fixture.file): partial batch in a produce request")
                }
            }
        }
        #expect(checked > 0)
    }
}
