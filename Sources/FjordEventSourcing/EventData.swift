import Foundation
public import NIOCore

/// An event to append: an id (for idempotent retries), a type name and the payload.
public struct EventData: Sendable, Equatable {
    public var id: String
    public var type: String
    public var data: ByteBuffer
    public var metadata: [String: String]

    /// `id` nil: a new random UUID. Pass the same id again to make a retried append idempotent.
    public init(id: String? = nil, type: String, data: ByteBuffer, metadata: [String: String] = [:]) {
        self.id = id ?? UUID().uuidString.lowercased()
        self.type = type
        self.data = data
        self.metadata = metadata
    }
}
