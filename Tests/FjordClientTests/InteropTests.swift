import FjordClient
import FjordProtocol
import FjordTesting
import Foundation
import NIOCore
import Testing

@Suite("Interoperability with librdkafka")
struct InteropTests {
    /// Records produced by the Swift client are read by kcat (librdkafka) with identical keys,
    /// values, headers and partitions.
    @Test("kcat reads what KafkaProducer wrote")
    func kcatReadsSwiftRecords() async throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/kcat") else {
            Issue.record("kcat is not installed (tools/test installs it)")
            return
        }
        let broker = try await InProcessBroker.start()
        let admin = try await KafkaAdmin.connect(bootstrap: broker.bootstrap)
        try await admin.createTopic("interop", partitions: 3)
        let producer = try await KafkaProducer.connect(ProducerConfiguration(bootstrap: broker.bootstrap))
        var expected: Set<String> = []
        for i in 0..<300 {
            let key = "k\(i % 17)"
            let metadata = try await producer.send(topic: "interop", key: ByteBuffer(string: key), value: ByteBuffer(string: "v\(i)"),
                                                   headers: [RecordHeader(key: "trace", value: ByteBuffer(string: "t\(i)"))])
            expected.insert("\(metadata.partition)|\(key)|v\(i)|trace=t\(i)")
        }
        await producer.close()

        let kcat = Process()
        kcat.executableURL = URL(fileURLWithPath: "/usr/bin/kcat")
        kcat.arguments = ["-b", broker.bootstrap, "-C", "-t", "interop", "-o", "beginning", "-e", "-q", "-f", "%p|%k|%s|%h\\n"]
        let output = Pipe()
        kcat.standardOutput = output
        try kcat.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        kcat.waitUntilExit()
        let lines = String(decoding: data, as: UTF8.self).split(separator: "\n").map(String.init)
        #expect(kcat.terminationStatus == 0)
        #expect(lines.count == 300)
        #expect(Set(lines) == expected)
        await admin.close()
        try await broker.stop()
    }
}
