public import Foundation
import NIOCore

/// A domain event: a stable type name, a schema version, JSON through Codable.
public protocol Event: Codable, Sendable {
    /// The name stored with each event (`fjord-event-type`); never change it once events exist.
    static var eventType: String { get }
    /// The current schema version; older stored versions are upcast before decoding.
    static var schemaVersion: Int { get }
}

extension Event {
    public static var schemaVersion: Int { 1 }
}

/// Why a stored event could not become a typed one.
public enum EventDecodingError: Error, Sendable, CustomStringConvertible {
    case unknownType(String)
    case missingUpcaster(type: String, fromVersion: Int)
    case invalid(type: String, reason: String)

    public var description: String {
        switch self {
        case .unknownType(let type): return "no event type '\(type)' is registered"
        case .missingUpcaster(let type, let version): return "\(type): no upcaster from schema version \(version)"
        case .invalid(let type, let reason): return "\(type): \(reason)"
        }
    }
}

/// Maps stored type names to Swift types, and upcasts old schema versions: an upcaster turns the
/// JSON of version *v* into the JSON of *v*+1, so events written years ago still decode into
/// today's type. The schema version travels in the event metadata (`schema-version`).
public struct EventTypeRegistry: Sendable {
    private var decoders: [String: @Sendable (Data) throws -> any Event] = [:]
    private var versions: [String: Int] = [:]
    private var upcasters: [String: @Sendable (Data) throws -> Data] = [:]

    public init() {}

    public mutating func register<E: Event>(_ type: E.Type) {
        decoders[E.eventType] = { data in try JSONDecoder().decode(E.self, from: data) }
        versions[E.eventType] = E.schemaVersion
    }

    /// Registers the step from `fromVersion` to `fromVersion + 1` of `type`'s JSON.
    public mutating func registerUpcaster(type: String, fromVersion: Int, _ upcast: @escaping @Sendable (Data) throws -> Data) {
        upcasters["\(type)#\(fromVersion)"] = upcast
    }

    /// An event ready to append (`id` nil: a fresh UUID).
    public func encode<E: Event>(_ event: E, id: String? = nil, metadata: [String: String] = [:]) throws -> EventData {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        var metadata = metadata
        metadata["schema-version"] = String(E.schemaVersion)
        return EventData(id: id, type: E.eventType, data: ByteBuffer(bytes: try encoder.encode(event)), metadata: metadata)
    }

    /// The typed event of a stored one (upcast to the current schema version first).
    public func decode(_ recorded: RecordedEvent) throws -> any Event {
        guard let decoder = decoders[recorded.type], let current = versions[recorded.type] else {
            throw EventDecodingError.unknownType(recorded.type)
        }
        var data = Data(recorded.data.readableBytesView)
        var version = Int(recorded.metadata["schema-version"] ?? "1") ?? 1
        while version < current {
            guard let upcast = upcasters["\(recorded.type)#\(version)"] else {
                throw EventDecodingError.missingUpcaster(type: recorded.type, fromVersion: version)
            }
            data = try upcast(data)
            version += 1
        }
        do {
            return try decoder(data)
        } catch {
            throw EventDecodingError.invalid(type: recorded.type, reason: "\(error)")
        }
    }
}

/// State rebuilt by folding a stream's events (an aggregate in the DDD sense).
public protocol Aggregate: Sendable {
    init()
    /// Applies one event (already decoded); unknown event types should be ignored.
    mutating func apply(_ event: any Event)
}

extension EventStore {
    /// Loads an aggregate by folding its stream; returns it with the stream's version.
    public func load<A: Aggregate>(_ type: A.Type, stream: String, registry: EventTypeRegistry) async throws -> (state: A, version: Int64) {
        try await fold(A(), stream: stream, from: 0, registry: registry)
    }

    /// Folds the stream's events from revision `from` into `state`; returns it with the revision
    /// of the last event folded (-1 when there was none).
    func fold<A: Aggregate>(_ state: A, stream: String, from: Int64, registry: EventTypeRegistry) async throws -> (state: A, version: Int64) {
        var state = state
        var version: Int64 = -1
        var next = from
        while true {
            let page = try await read(stream: stream, from: next, limit: 1_000)
            for recorded in page {
                state.apply(try registry.decode(recorded))
                version = recorded.revision
            }
            guard page.count == 1_000, let last = page.last else { break }
            next = last.revision + 1
        }
        return (state, version)
    }

    /// Load, decide, append with the loaded version: the command pattern of event sourcing.
    /// A concurrent writer makes the append fail with `WrongExpectedVersion`; the command is then
    /// decided again on the fresh state, up to `retries` times. Returns the new version.
    @discardableResult
    public func execute<A: Aggregate>(_ type: A.Type, stream: String, registry: EventTypeRegistry, retries: Int = 3,
                                      decide: (A) throws -> [any Event]) async throws -> Int64 {
        var attempt = 0
        while true {
            let (state, version) = try await load(type, stream: stream, registry: registry)
            let events = try decide(state)
            let data = try events.map { try registry.encodeAny($0) }
            do {
                return try await append(to: stream, data, expectedVersion: version < 0 ? .noStream : .exact(version))
            } catch let conflict as WrongExpectedVersion {
                attempt += 1
                if attempt > retries { throw conflict }
            }
        }
    }
}

extension EventTypeRegistry {
    /// `encode` for an existential event.
    func encodeAny(_ event: any Event) throws -> EventData {
        func open<E: Event>(_ typed: E) throws -> EventData { try encode(typed) }
        return try open(event)
    }
}
