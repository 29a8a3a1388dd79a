import FjordCompression
import FjordProtocol
import FjordStorage
import Foundation
import NIOCore
import SystemPackage

/// A fresh temporary directory, removed when the value is deinitialised.
final class TemporaryDirectory {
    let url: URL
    var path: FilePath { FilePath(url.path) }

    init() {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("fjord-storage-\(UUID().uuidString)")
        try? FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    deinit {
        try? FileManager.default.removeItem(at: url)
    }

    func file(_ name: String) -> URL { url.appendingPathComponent(name) }
}

/// A batch of `count` records with distinct values, as a producer would send it.
func makeBatch(count: Int, valueSize: Int = 100, keyPrefix: String = "k", timestamp: Int64 = 1_700_000_000_000,
               codec: CompressionCodec = .none, producerID: Int64 = -1, epoch: Int16 = -1, sequence: Int32 = -1,
               keys: [String?]? = nil, values: [String?]? = nil) -> ByteBuffer {
    var builder = RecordBatchBuilder(attributes: RecordBatchAttributes(compression: codec))
    builder.producerID = producerID
    builder.producerEpoch = epoch
    builder.baseSequence = sequence
    for i in 0..<count {
        let key: ByteBuffer? = keys.map { $0[i].map { ByteBuffer(string: $0) } } ?? ByteBuffer(string: "\(keyPrefix)\(i)")
        let value: ByteBuffer?
        if let values { value = values[i].map { ByteBuffer(string: $0) } } else {
            value = ByteBuffer(string: String(repeating: Character(UnicodeScalar(UInt8(97 + i % 26))), count: valueSize))
        }
        builder.append(timestamp: timestamp + Int64(i), key: key, value: value)
    }
    return try! builder.build().bytes
}

/// Decodes every complete batch in a read's bytes.
func batches(in buffer: ByteBuffer) throws -> [RecordBatch] {
    var remaining = buffer
    var out: [RecordBatch] = []
    while let batch = try RecordBatch.read(from: &remaining) { out.append(batch) }
    return out
}

func readAll(_ log: LocalLog, from offset: Int64 = 0, upperBound: ReadUpperBound = .logEndOffset) throws -> [Record] {
    var records: [Record] = []
    var next = offset
    while next < log.logEndOffset {
        let result = try log.read(from: Offset(next), maxBytes: 1 << 20, upperBound: upperBound, minOneMessage: true)
        guard let slice = result.records else { break }
        let found = try batches(in: try slice.readBytes())
        guard let last = found.last else { break }
        for batch in found {
            for record in try batch.records() where record.offset >= next { records.append(record) }
        }
        next = last.nextOffset
    }
    return records
}

func openLog(_ dir: TemporaryDirectory, config: LogConfig = LogConfig(), clean: Bool = true, recoveryPoint: Int64 = 0,
             topic: String = "t", partition: Int32 = 0, now: Int64 = 1_700_000_000_000) throws -> (LocalLog, LogLoadReport) {
    let tp = TopicPartition(topic: topic, partition: partition)
    return try LocalLog.open(directory: dir.path.appending(tp.directoryName), topicPartition: tp, config: config,
                             recoveryPoint: recoveryPoint, logStartOffset: 0, cleanShutdown: clean, nowMs: now)
}

// Order comparisons (not equality: use `.rawValue`) of the log's `Offset`s with the plain integers tests compute (test-only: the
// storage API itself never mixes the two).
@_disfavoredOverload func < (lhs: Int64, rhs: Offset) -> Bool { lhs < rhs.rawValue }
@_disfavoredOverload func < (lhs: Offset, rhs: Int64) -> Bool { lhs.rawValue < rhs }
@_disfavoredOverload func > (lhs: Offset, rhs: Int64) -> Bool { lhs.rawValue > rhs }
@_disfavoredOverload func >= (lhs: Offset, rhs: Int64) -> Bool { lhs.rawValue >= rhs }
@_disfavoredOverload func <= (lhs: Offset, rhs: Int64) -> Bool { lhs.rawValue <= rhs }
