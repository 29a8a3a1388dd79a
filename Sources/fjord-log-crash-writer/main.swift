// fjord-log-crash-writer DIR SEED: appends deterministic record batches to the log of partition
// "crash-0" in DIR, fsyncing each one, and prints "acked FIRST LAST" after each fsync returns.
// It runs until killed. The storage crash test (Tests/FjordStorageTests/CrashTests.swift) kills
// it with SIGKILL at random points and checks that every acknowledged batch survived intact.
import FjordProtocol
import FjordStorage
import Foundation
import NIOCore
import SystemPackage

/// The batch written at `offset`: 1–8 records whose keys and values derive from seed and offset.
func crashTestBatch(offset: Int64, seed: UInt64) -> ByteBuffer {
    var builder = RecordBatchBuilder()
    let count = Int((UInt64(offset) &* 2_654_435_761 ^ seed) % 8) + 1
    for i in 0..<count {
        let record = offset + Int64(i)
        let size = Int((UInt64(record) &* 40_503 ^ seed) % 700) + 1
        let byte = UInt8(truncatingIfNeeded: UInt64(record) ^ seed)
        builder.append(timestamp: 1_700_000_000_000 + record, key: ByteBuffer(string: "key-\(record)"),
                       value: ByteBuffer(repeating: byte, count: size))
    }
    guard let batch = try? builder.build() else { fatalError("cannot build batch") }
    return batch.bytes
}

let arguments = CommandLine.arguments
guard arguments.count == 3, let seed = UInt64(arguments[2]) else {
    FileHandle.standardError.write(Data("usage: fjord-log-crash-writer DIR SEED\n".utf8))
    exit(2)
}
var config = LogConfig()
config.segmentBytes = 64 * 1024
config.indexIntervalBytes = 1024
let partition = TopicPartition(topic: "crash", partition: 0)
let now = Int64(Date().timeIntervalSince1970 * 1000)
do {
    let (log, _) = try LocalLog.open(
        directory: FilePath(arguments[1]).appending(partition.directoryName), topicPartition: partition, config: config,
        recoveryPoint: 0, logStartOffset: 0, cleanShutdown: false, nowMs: now)
    for _ in 0..<1_000_000 {
        let info = try log.append(crashTestBatch(offset: log.logEndOffset.rawValue, seed: seed), leaderEpoch: 0, nowMs: now)
        try log.flush(nowMs: now)
        // Unbuffered: an ack is on the pipe before the next append starts.
        FileHandle.standardOutput.write(Data("acked \(info.firstOffset) \(info.lastOffset)\n".utf8))
    }
} catch {
    FileHandle.standardError.write(Data("fjord-log-crash-writer: \(error)\n".utf8))
    exit(1)
}
