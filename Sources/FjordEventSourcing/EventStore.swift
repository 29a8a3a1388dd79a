public import FjordClient
import FjordCompression
public import FjordProtocol
import Foundation
public import NIOCore
public import NIOPosix

/// An event store on one `fjord.stream.versioning` topic: each record key is a stream; the broker
/// enforces expected versions, so concurrent writers never interleave a stream or lose an update.
///
/// - `append` writes its events into one record batch (acks=all): the broker checks every
///   expected version and appends all of them or none. Concurrent appends share Produce
///   requests (`StreamAppender`) and stay independent: a conflict refuses only its own append.
/// - The version an `.exact`/`.noStream` append returns is known from the expectation; `.any`
///   and `.exists` appends get theirs from the stream index, one `FjordStreamRevisions` request
///   for all such appends of a shared Produce.
/// - Appends are idempotent by event id: when an append is refused because the stream moved on
///   and the events at the expected position carry the same ids (a retry of an append that
///   landed), it returns their version instead of failing.
/// - `read` goes through the broker's stream index (FjordReadStream), not a partition scan.
/// - `subscribe(to:)` / `subscribeToAll(from:)` catch up, then follow new events live.
public actor EventStore {
    public nonisolated let topic: String
    nonisolated let cluster: KafkaCluster
    /// The client settings, reused for subscriptions' consumers.
    nonisolated let client: ClientConfiguration
    static let eventIDHeader = "fjord-event-id"
    static let eventTypeHeader = "fjord-event-type"
    static let expectedVersionHeader = "fjord-expected-version"
    static let metadataPrefix = "fjord-meta-"

    /// The topic's partition count, read at connect: a stream's partition must never change, so
    /// partitions are not to be added to a stream topic.
    public nonisolated let partitionCount: Int32
    nonisolated let appender: StreamAppender

    init(topic: String, cluster: KafkaCluster, client: ClientConfiguration, partitionCount: Int32) {
        self.topic = topic
        self.cluster = cluster
        self.client = client
        self.partitionCount = partitionCount
        self.appender = StreamAppender(topic: topic, cluster: cluster)
    }

    /// Connects; with `createTopic`, creates the stream topic (`partitions`) if it is missing.
    public static func connect(bootstrap: String, topic: String, createTopic: Bool = true, partitions: Int32 = 1,
                               group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) async throws -> EventStore {
        try await connect(ClientConfiguration(bootstrap: bootstrap, clientID: "fjord-event-store"), topic: topic,
                          createTopic: createTopic, partitions: partitions, group: group)
    }

    /// Connects with client settings (Kafka property names through `ClientConfiguration.apply`).
    public static func connect(_ configuration: ClientConfiguration, topic: String, createTopic: Bool = true, partitions: Int32 = 1,
                               group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) async throws -> EventStore {
        var configuration = configuration
        configuration.allowAutoCreateTopics = false
        let cluster = try await KafkaCluster.connect(configuration, group: group)
        if createTopic {
            let admin = KafkaAdmin(cluster: cluster)
            do {
                try await admin.createTopic(topic, partitions: partitions, configs: ["fjord.stream.versioning": "true", "retention.ms": "-1"])
            } catch ClientError.kafka(.topicAlreadyExists, _) {
            }
        }
        let configs = try await KafkaAdmin(cluster: cluster).describeTopicConfigs(topic)
        guard configs["fjord.stream.versioning"] == "true" else {
            await cluster.close()
            throw EventStoreError.notAStreamTopic(topic)
        }
        let partitionCount = Int32(try await cluster.topic(topic).partitions.count)
        return EventStore(topic: topic, cluster: cluster, client: configuration, partitionCount: partitionCount)
    }

    public func close() async {
        await cluster.close()
    }

    /// The partition of a stream: Kafka's murmur2 of the key, as every Kafka client computes it.
    public nonisolated func partition(of stream: String) -> Int32 {
        DefaultPartitioner.partition(forKey: Array(stream.utf8), partitions: partitionCount)
    }

    // MARK: Appending

    /// Appends events to a stream if it is at `expectedVersion`; returns the stream's new version
    /// (the revision of the last appended event). Throws `WrongExpectedVersion` otherwise.
    ///
    /// Concurrent appends to streams of the same partition share Produce requests
    /// (`StreamAppender`): while a partition's requests are in flight, the appends that arrive
    /// wait and then go together as one record batch. The broker refuses the batch if any
    /// expected version fails, naming every refused record; the appends it names fail, the others
    /// are sent again at once. So each append is all-or-nothing, and independent of the others.
    @discardableResult
    public nonisolated func append(to stream: String, _ events: [EventData], expectedVersion: ExpectedVersion = .any) async throws -> Int64 {
        guard !events.isEmpty else { return try await version(of: stream) }
        let partition = partition(of: stream)
        let outcome = try await withCheckedThrowingContinuation { continuation in
            appender.submit(StreamAppender.PendingAppend(stream: stream, events: events, expected: expectedVersion, continuation: continuation),
                            partition: partition)
        }
        switch outcome {
        case .appended(_, let revision?):
            return revision
        case .appended(let firstOffset, nil):
            return try await versionAfter(stream: stream, partition: partition, lastOffset: firstOffset + Int64(events.count - 1),
                                          expected: expectedVersion, count: events.count)
        case .conflict(let actual):
            // A retry of an append that already landed: the events after the expected position
            // carry our ids.
            if let landed = try await alreadyAppended(stream: stream, events, expected: expectedVersion, actual: actual) {
                return landed
            }
            throw WrongExpectedVersion(stream: stream, expected: expectedVersion, actual: actual)
        }
    }

    /// Parses "… actual version N" from the broker's refusal.
    static func actualVersion(in message: String) -> Int64? {
        // From the end: the stream name earlier in the message may contain the phrase too.
        guard let range = message.range(of: "actual version ", options: .backwards) else { return nil }
        return Int64(message[range.upperBound...].prefix { $0 == "-" || $0.isNumber })
    }

    private nonisolated func versionAfter(stream: String, partition: Int32, lastOffset: Int64, expected: ExpectedVersion, count: Int) async throws -> Int64 {
        if case .exact(let n) = expected { return n + Int64(count) }
        if case .noStream = expected { return Int64(count) - 1 }
        // Our last event's revision (other writers may have appended since): usually among the
        // stream's last few events, so the first page is small.
        return try await revision(of: stream, partition: partition, offset: lastOffset, firstPage: 8)
    }

    private nonisolated func alreadyAppended(stream: String, _ events: [EventData], expected: ExpectedVersion, actual: Int64) async throws -> Int64? {
        let first: Int64
        switch expected {
        case .exact(let n): first = n + 1
        case .noStream: first = 0
        default: return nil
        }
        guard actual >= first + Int64(events.count) - 1 else { return nil }
        let stored = try await read(stream: stream, from: first, limit: events.count)
        guard stored.map(\.id) == events.map(\.id) else { return nil }
        return first + Int64(events.count) - 1
    }

    // MARK: Reading

    /// The stream's version: the revision of its last event, -1 when it has none.
    public nonisolated func version(of stream: String) async throws -> Int64 {
        try await readIndex(stream: stream, partition: partition(of: stream), from: -1, limit: 0, forwards: false).version
    }

    public enum Direction: Sendable { case forwards, backwards }

    /// Events of one stream from revision `from` (backwards: -1 is the last event), through the
    /// broker's stream index.
    public nonisolated func read(stream: String, from revision: Int64 = 0, direction: Direction = .forwards, limit: Int = 1_000) async throws -> [RecordedEvent] {
        let partition = partition(of: stream)
        var out: [RecordedEvent] = []
        var next = revision
        while out.count < limit {
            let page = try await readIndex(stream: stream, partition: partition, from: next, limit: Swift.min(limit - out.count, 10_000),
                                           forwards: direction == .forwards, withRecords: true)
            guard !page.events.isEmpty else { break }
            out += page.recorded
            next = direction == .forwards ? page.events.last!.revision + 1 : page.events.last!.revision - 1
            if direction == .backwards && next < 0 { break }
        }
        return out
    }

    struct IndexPage {
        var version: Int64
        var events: [(revision: Int64, offset: Int64)]
        var recorded: [RecordedEvent]
    }

    nonisolated func readIndex(stream: String, partition: Int32, from: Int64, limit: Int, forwards: Bool, withRecords: Bool = false) async throws -> IndexPage {
        var request = FjordReadStreamRequest()
        request.topic = topic
        request.partition = partition
        request.streamKey = ByteBuffer(string: stream)
        request.fromRevision = from
        request.maxEvents = Int32(clamping: limit)
        request.forwards = forwards
        request.includeRecords = withRecords
        let response = try await cluster.leader(topic: topic, partition: partition).connection.send(request)
        guard response.errorCode == 0 else {
            let error = KafkaError(code: response.errorCode)
            if error == .invalidRequest { throw EventStoreError.notAStreamTopic(topic) }
            throw EventStoreError.broker("\(error.name): \(response.errorMessage ?? "")")
        }
        let events = response.events.map { (revision: $0.revision, offset: $0.offset) }
        var recorded: [RecordedEvent] = []
        if withRecords, var bytes = response.records {
            // Decode only as far into each batch as its last wanted record.
            let wanted = Set(events.map(\.offset))
            var byOffset: [Int64: Record] = [:]
            while let batch = try RecordBatch.read(from: &bytes) {
                guard let last = wanted.filter({ $0 >= batch.baseOffset && $0 <= batch.lastOffset }).max() else { continue }
                var iterator = try batch.makeRecordIterator()
                while let record = try iterator.next() {
                    if wanted.contains(record.offset) { byOffset[record.offset] = record }
                    if record.offset >= last { break }
                }
            }
            for event in events {
                guard let record = byOffset[event.offset] else { continue }
                recorded.append(Self.recorded(record, stream: stream, revision: event.revision, partition: partition))
            }
        }
        return IndexPage(version: response.streamVersion, events: events, recorded: recorded)
    }

    static func recorded(_ record: Record, stream: String, revision: Int64, partition: Int32) -> RecordedEvent {
        recorded(headers: record.headers, value: record.value, offset: record.offset, timestamp: record.timestamp,
                 stream: stream, revision: revision, partition: partition)
    }

    /// A `RecordedEvent` from a record's parts (for projections and tools that consume the topic).
    public static func recorded(headers: [RecordHeader], value: ByteBuffer?, offset: Int64, timestamp: Int64, stream: String,
                                revision: Int64, partition: Int32) -> RecordedEvent {
        var id = ""
        var type = ""
        var metadata: [String: String] = [:]
        for header in headers {
            let text = header.value.map { String(decoding: $0.readableBytesView, as: UTF8.self) } ?? ""
            switch header.key {
            case eventIDHeader: id = text
            case eventTypeHeader: type = text
            case let key where key.hasPrefix(metadataPrefix): metadata[String(key.dropFirst(metadataPrefix.count))] = text
            default: break
            }
        }
        return RecordedEvent(stream: stream, revision: revision, partition: partition, offset: offset, timestamp: timestamp,
                             id: id, type: type, data: value ?? ByteBuffer(), metadata: metadata)
    }

    // MARK: Subscriptions

    /// Where `subscribeToAll` starts.
    public enum AllPosition: Sendable, Equatable {
        /// Every event of the topic.
        case start
        /// Only events appended after the subscription started.
        case end
        /// From these offsets per partition (e.g. each partition's last delivered
        /// `RecordedEvent.offset` + 1, to resume); partitions not listed start at their beginning.
        case offsets([Int32: Int64])
    }

    /// Every event of the topic from `from`, then live, partition by partition in offset order.
    /// Revisions are counted per stream as the partitions are read; a stream first met after the
    /// start of its partition gets its revision from the stream index once. Ends when the task is
    /// cancelled.
    public nonisolated func subscribeToAll(from start: AllPosition = .start) -> AsyncThrowingStream<RecordedEvent, any Error> {
        let topic = self.topic
        return AsyncThrowingStream { continuation in
            let task = Task {
                do {
                    let consumer = try await self.subscriptionConsumer(clientID: "fjord-event-subscription")
                    defer { Task { await consumer.close() } }
                    let partitions = try await consumer.partitions(of: topic)
                    try await consumer.assign(partitions.map { partition -> (TopicPartition, KafkaConsumer.StartPosition) in
                        switch start {
                        case .start: return (TopicPartition(topic, partition), .earliest)
                        case .end: return (TopicPartition(topic, partition), .latest)
                        case .offsets(let offsets): return (TopicPartition(topic, partition), offsets[partition].map { .offset(Offset($0)) } ?? .earliest)
                        }
                    })
                    // Streams whose revisions are known: counted from the start of their partition,
                    // or looked up once when the subscription starts mid-partition.
                    var revisions: [String: Int64] = [:]
                    var fromStart = Set<Int32>()
                    for try await batch in consumer.batches() {
                        for record in batch {
                            guard let key = record.key else { continue }
                            let stream = String(buffer: key)
                            let revision: Int64
                            if let previous = revisions[stream] {
                                revision = previous + 1
                            } else if fromStart.contains(record.partition) || record.offset == 0 {
                                fromStart.insert(record.partition)
                                revision = 0
                            } else {
                                revision = try await self.revision(of: stream, partition: record.partition, offset: record.offset.rawValue)
                            }
                            revisions[stream] = revision
                            continuation.yield(Self.recorded(headers: record.headers, value: record.value, offset: record.offset.rawValue,
                                                             timestamp: record.timestamp, stream: stream, revision: revision,
                                                             partition: record.partition))
                        }
                    }
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }

    /// A consumer for a subscription: the store's client settings, no group, short long-polls.
    nonisolated func subscriptionConsumer(clientID: String) async throws -> KafkaConsumer {
        var settings = ConsumerConfiguration(bootstrap: "", clientID: clientID)
        settings.client = client
        settings.client.clientID = clientID
        settings.enableAutoCommit = false
        settings.fetchMaxWaitMs = 200
        return try await KafkaConsumer.connect(settings)
    }

    /// The revision of the stream's event at `offset`, from the stream index: one
    /// FjordStreamRevisions lookup, or (a broker without that API) the stream's offsets read
    /// newest first, `firstPage` events, then pages of 1,000.
    nonisolated func revision(of stream: String, partition: Int32, offset: Int64, firstPage: Int = 1_000) async throws -> Int64 {
        var lookup = FjordStreamRevisionsRequest()
        lookup.topic = topic
        lookup.partition = partition
        var position = FjordStreamRevisionsRequest.EventPosition()
        position.streamKey = ByteBuffer(string: stream)
        position.offset = offset
        lookup.events = [position]
        if let response = try? await cluster.leader(topic: topic, partition: partition).connection.send(lookup),
           response.errorCode == 0, let revision = response.revisions.first, revision >= 0 {
            return revision
        }
        var from: Int64 = -1
        var limit = firstPage
        while true {
            let page = try await readIndex(stream: stream, partition: partition, from: from, limit: limit, forwards: false)
            limit = 1_000
            if let event = page.events.first(where: { $0.offset == offset }) { return event.revision }
            guard let oldest = page.events.last, oldest.revision > 0, oldest.offset > offset else {
                throw EventStoreError.broker("stream '\(stream)' has no event at offset \(offset) of partition \(partition)")
            }
            from = oldest.revision - 1
        }
    }

    /// One stream from revision `from`: its stored events (through the index), then new ones live.
    public nonisolated func subscribe(to stream: String, from revision: Int64 = 0) -> AsyncThrowingStream<RecordedEvent, any Error> {
        AsyncThrowingStream { continuation in
            let task = Task {
                do {
                    var next = revision
                    var lastOffset: Int64 = -1
                    // Catch up through the index.
                    while true {
                        let page = try await self.read(stream: stream, from: next, limit: 1_000)
                        for event in page { continuation.yield(event) }
                        if let last = page.last {
                            next = last.revision + 1
                            lastOffset = last.offset
                        }
                        if page.count < 1_000 { break }
                    }
                    // Follow the partition from after the last event, keeping only this stream.
                    let partition = self.partition(of: stream)
                    let consumer = try await self.subscriptionConsumer(clientID: "fjord-stream-subscription")
                    defer { Task { await consumer.close() } }
                    let start: KafkaConsumer.StartPosition = lastOffset >= 0 ? .offset(Offset(lastOffset + 1)) : .earliest
                    try await consumer.assign([(TopicPartition(self.topic, partition), start)])
                    for try await batch in consumer.batches() {
                        for record in batch where record.key.map({ String(buffer: $0) }) == stream {
                            continuation.yield(Self.recorded(headers: record.headers, value: record.value, offset: record.offset.rawValue,
                                                             timestamp: record.timestamp, stream: stream, revision: next,
                                                             partition: record.partition))
                            next += 1
                        }
                    }
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }
}
