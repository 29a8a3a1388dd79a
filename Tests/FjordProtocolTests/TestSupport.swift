import Foundation
import NIOCore

/// Paths relative to the repository, found from this file's location (no bundle resources).
enum Repository {
    static let root: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let fixtures: URL = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")
    /// Kafka's schemas beside the repository, as CI checks it out; nil when absent.
    static var sharedSchemas: URL? {
        let url = root.deletingLastPathComponent().appendingPathComponent("shared/kafka-protocol/messages")
        return FileManager.default.fileExists(atPath: url.path) ? url : nil
    }
}

extension ByteBuffer {
    init(bytes: [UInt8]) {
        self = ByteBuffer()
        self.writeBytes(bytes)
    }

    var allBytes: [UInt8] { self.getBytes(at: self.readerIndex, length: self.readableBytes) ?? [] }
}

func hex(_ bytes: [UInt8]) -> String {
    bytes.map { String(format: "%02x", $0) }.joined()
}
