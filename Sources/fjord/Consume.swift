import ArgumentParser
import FjordClient
import FjordProtocol
import Foundation
import NIOCore
import Synchronization

/// `fjord consume TOPIC…`: records to stdout, as text (kcat format strings) or JSON lines.
struct Consume: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Consume records and print them, one per line.",
        discussion: prose("""
            Without --group, every partition (or the given ones) is read from the end, or from
            --from-beginning / --offset / --from-time. With --group, the group assigns partitions and
            committed offsets are the start (else --from-beginning decides, as in Kafka's console consumer).

            --format takes kcat's format strings: %t topic, %p partition, %o offset, %k key, %s value,
            %S value size, %K key size, %h headers (k=v,…), %T timestamp (ms), %% a percent sign,
            \\n \\t \\\\ escapes. Default: "%s\\n". --json prints one object per record; keys, values and header
            values are UTF-8 strings, or *_base64 fields when not valid UTF-8.
            """))

    enum CommitMode: String, ExpressibleByArgument, CaseIterable {
        case auto, sync, none
    }

    @OptionGroup var client: ClientOptions

    @Argument(help: "Topics.")
    var topics: [String]

    @Option(name: [.customShort("G"), .long], help: "Consume as a member of this group.")
    var group: String?

    @Flag(name: .long, help: "Start at the earliest offset (without a committed offset, with --group).")
    var fromBeginning = false

    @Option(name: [.customShort("o"), .long], help: "Start at this offset (single topic, without --group).")
    var offset: Int64?

    @Option(name: .long, help: "Start at the first record at or after this ISO 8601 time (without --group).")
    var fromTime: String?

    @Option(name: [.customShort("p"), .long], help: "Only this partition (repeatable; without --group).")
    var partition: [Int32] = []

    @Flag(name: [.customShort("e"), .long], help: "Exit once every assigned partition is read to its end.")
    var exitAtEnd = false

    @Option(name: [.customShort("c"), .long], help: "Exit after this many records.")
    var maxMessages: Int?

    @Option(name: [.customShort("f"), .long], help: "Output format (kcat's).")
    var format: String?

    @Flag(name: .long, help: "Print one JSON object per record.")
    var json = false

    @Option(name: .long, help: "With --group: auto (auto-commit), sync (commit after each poll), none.")
    var commit: CommitMode = .auto

    func validate() throws {
        if group != nil && (offset != nil || fromTime != nil || !partition.isEmpty) {
            throw ValidationError("--offset, --from-time and --partition assign partitions: they do not combine with --group")
        }
        if offset != nil && topics.count != 1 { throw ValidationError("--offset needs exactly one topic") }
        if json && format != nil { throw ValidationError("--json and --format exclude each other") }
    }

    func run() async throws {
        try await reportingErrors("consume") {
            var extra: [String: String] = ["enable.auto.commit": commit == .auto ? "true" : "false"]
            if let group { extra["group.id"] = group }
            extra["auto.offset.reset"] = fromBeginning ? "earliest" : "latest"
            let configuration = try client.consumerConfiguration(extra)
            let consumer = try await KafkaConsumer.connect(configuration)
            do {
                try await consume(consumer)
            } catch {
                await consumer.close()
                throw error
            }
            await consumer.close()
        }
    }

    private func consume(_ consumer: KafkaConsumer) async throws {
        if group != nil {
            try await consumer.subscribe(topics: topics)
        } else {
            var start: KafkaConsumer.StartPosition = fromBeginning ? .earliest : .latest
            if let offset { start = .offset(Offset(offset)) }
            if let fromTime { start = .timestamp(try parseISO8601(fromTime)) }
            var assignment: [(TopicPartition, KafkaConsumer.StartPosition)] = []
            for topic in topics {
                let all = try await consumer.partitions(of: topic)
                let chosen = partition.isEmpty ? all : partition
                for index in chosen {
                    guard all.contains(index) else { throw CLIError("\(topic) has no partition \(index)") }
                    assignment.append((TopicPartition(topic, index), start))
                }
            }
            try await consumer.assign(assignment)
        }
        let renderer = try RecordRenderer(format: json ? nil : (format ?? "%s\\n"))
        var output = OutputBuffer()
        var printed = 0
        var ends: [TopicPartition: Offset] = [:]
        let stopSignal = StopSignal()
        while !stopSignal.stopped {
            let records = try await consumer.poll()
            var unprinted: [TopicPartition: Offset] = [:]
            for record in records {
                if let maxMessages, printed >= maxMessages {
                    // Not shown: rewind so the group's committed offset does not skip it.
                    if unprinted[record.topicPartition] == nil { unprinted[record.topicPartition] = record.offset }
                    continue
                }
                renderer.render(record, into: &output)
                printed += 1
            }
            output.flush()
            for (tp, offset) in unprinted { try await consumer.seek(topic: tp.topic, partition: tp.partition, to: .offset(offset)) }
            if commit == .sync && group != nil && !records.isEmpty { try await consumer.commit() }
            if let maxMessages, printed >= maxMessages { break }
            if exitAtEnd {
                let assigned = await consumer.assignedPartitions()
                let unknown = assigned.filter { ends[$0] == nil }
                if !unknown.isEmpty {
                    for (tp, end) in try await consumer.endOffsets(unknown) { ends[tp] = end }
                }
                if !assigned.isEmpty {
                    var atEnd = true
                    for tp in assigned {
                        let position = await consumer.position(topic: tp.topic, partition: tp.partition) ?? 0
                        if position < ends[tp] ?? 0 { atEnd = false }
                    }
                    if atEnd && records.isEmpty { break }
                }
            }
        }
        if commit == .sync && group != nil { try? await consumer.commit() }
        output.flush()
    }
}

/// Renders records in kcat's format language or as JSON.
struct RecordRenderer {
    enum Piece {
        case literal([UInt8])
        case topic, partition, offset, key, value, valueSize, keySize, headers, timestamp
    }

    let pieces: [Piece]?

    /// `format` nil means JSON.
    init(format: String?) throws {
        guard let format else {
            pieces = nil
            return
        }
        var pieces: [Piece] = []
        var literal: [UInt8] = []
        var characters = Array(format.utf8)[...]
        func flushLiteral() {
            if !literal.isEmpty { pieces.append(.literal(literal)) }
            literal = []
        }
        while let c = characters.popFirst() {
            if c == UInt8(ascii: "\\"), let next = characters.popFirst() {
                switch next {
                case UInt8(ascii: "n"): literal.append(10)
                case UInt8(ascii: "t"): literal.append(9)
                case UInt8(ascii: "r"): literal.append(13)
                case UInt8(ascii: "0"): literal.append(0)
                default: literal.append(next)
                }
            } else if c == UInt8(ascii: "%"), let next = characters.popFirst() {
                let piece: Piece
                switch next {
                case UInt8(ascii: "%"): literal.append(next); continue
                case UInt8(ascii: "t"): piece = .topic
                case UInt8(ascii: "p"): piece = .partition
                case UInt8(ascii: "o"): piece = .offset
                case UInt8(ascii: "k"): piece = .key
                case UInt8(ascii: "s"): piece = .value
                case UInt8(ascii: "S"): piece = .valueSize
                case UInt8(ascii: "K"): piece = .keySize
                case UInt8(ascii: "h"): piece = .headers
                case UInt8(ascii: "T"): piece = .timestamp
                default: throw CLIError("unknown format token %\(Character(Unicode.Scalar(next)))")
                }
                flushLiteral()
                pieces.append(piece)
            } else {
                literal.append(c)
            }
        }
        flushLiteral()
        self.pieces = pieces
    }

    func render(_ record: ConsumerRecord, into output: inout OutputBuffer) {
        guard let pieces else {
            output.write(Self.json(record))
            output.write("\n")
            return
        }
        for piece in pieces {
            switch piece {
            case .literal(let bytes): output.write(bytes: bytes)
            case .topic: output.write(record.topic)
            case .partition: output.write(String(record.partition))
            case .offset: output.write(record.offset.description)
            case .key: if let key = record.key { output.write(bytes: key.readableBytesView) }
            case .value: if let value = record.value { output.write(bytes: value.readableBytesView) }
            case .valueSize: output.write(String(record.value?.readableBytes ?? -1))
            case .keySize: output.write(String(record.key?.readableBytes ?? -1))
            case .timestamp: output.write(String(record.timestamp))
            case .headers:
                output.write(record.headers.map { header in
                    "\(header.key)=\(header.value.map { String(decoding: $0.readableBytesView, as: UTF8.self) } ?? "")"
                }.joined(separator: ","))
            }
        }
    }

    static func json(_ record: ConsumerRecord) -> String {
        var fields: [String] = [
            "\"topic\":\(quoted(record.topic))", "\"partition\":\(record.partition)", "\"offset\":\(record.offset)",
            "\"timestamp\":\(record.timestamp)",
        ]
        fields.append(bytesField("key", record.key))
        fields.append(bytesField("value", record.value))
        let headers = record.headers.map { header in
            "{\"key\":\(quoted(header.key)),\(bytesField("value", header.value))}"
        }
        fields.append("\"headers\":[\(headers.joined(separator: ","))]")
        return "{\(fields.joined(separator: ","))}"
    }

    /// `"name":"utf-8"`, `"name_base64":"…"` when the bytes are not UTF-8, or `"name":null`.
    static func bytesField(_ name: String, _ bytes: ByteBuffer?) -> String {
        guard let bytes else { return "\"\(name)\":null" }
        let view = Array(bytes.readableBytesView)
        if let text = String(validating: view, as: UTF8.self) {
            return "\"\(name)\":\(quoted(text))"
        }
        return "\"\(name)_base64\":\"\(Data(view).base64EncodedString())\""
    }

    static func quoted(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case let s where s.value < 0x20:
                let hex = String(s.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }
}

/// Set by SIGINT/SIGTERM so `consume` stops polling, commits and exits cleanly.
final class StopSignal: Sendable {
    private static let flag = Atomic<Bool>(false)

    init() {
        signal(SIGINT) { _ in StopSignal.flag.store(true, ordering: .relaxed) }
        signal(SIGTERM) { _ in StopSignal.flag.store(true, ordering: .relaxed) }
    }

    var stopped: Bool { Self.flag.load(ordering: .relaxed) }
}
