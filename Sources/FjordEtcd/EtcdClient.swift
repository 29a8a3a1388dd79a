import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import GRPCProtobuf
public import NIOPosix

/// A client of one etcd server through etcd v3's gRPC API (KV, Lease, Watch).
///
/// gRPC rather than etcd's JSON gateway: the gateway turns a lease keepalive or a watch into
/// one HTTP request per message, while gRPC keeps one HTTP/2 stream open for all of a client's
/// keepalives and another for all its watches (see docs/ARCHITECTURE.md).
///
/// Every call has a deadline (`callTimeout`) and fails fast with `EtcdError.unavailable` while
/// no server answers, so a caller decides whether to refuse or retry; the connection itself is
/// re-established in the background with a short capped backoff, so calls succeed again as soon
/// as etcd is back.
public final class EtcdClient: Sendable {
    typealias Transport = HTTP2ClientTransport.Posix
    let grpc: GRPCClient<Transport>
    let kv: Etcdserverpb_KV.Client<Transport>
    let leases: Etcdserverpb_Lease.Client<Transport>
    let watches: Etcdserverpb_Watch.Client<Transport>
    public let endpoint: String
    public let callTimeout: Duration
    private let runner: Task<Void, Never>

    /// Connects (lazily, in the background) to the etcd server at `host:port`.
    public init(host: String, port: Int, callTimeout: Duration = .seconds(5),
                eventLoopGroup: MultiThreadedEventLoopGroup = .singleton) throws(EtcdError) {
        var config = Transport.Config.defaults
        config.backoff = .init(initial: .milliseconds(100), max: .seconds(1), multiplier: 1.6, jitter: 0.2)
        let transport: Transport
        do {
            // An IPv4 literal directly; a name through DNS.
            let isIPv4 = host.split(separator: ".").count == 4 && host.split(separator: ".").allSatisfy { UInt8($0) != nil }
            let target: any ResolvableTarget = isIPv4 ? .ipv4(address: host, port: port) as ResolvableTargets.IPv4 : .dns(host: host, port: port) as ResolvableTargets.DNS
            transport = try Transport(target: target, transportSecurity: .plaintext, config: config, eventLoopGroup: eventLoopGroup)
        } catch {
            throw .rejected(code: "invalid endpoint", message: "\(host):\(port): \(error)")
        }
        let grpc = GRPCClient(transport: transport)
        self.grpc = grpc
        self.kv = Etcdserverpb_KV.Client(wrapping: grpc)
        self.leases = Etcdserverpb_Lease.Client(wrapping: grpc)
        self.watches = Etcdserverpb_Watch.Client(wrapping: grpc)
        self.endpoint = "\(host):\(port)"
        self.callTimeout = callTimeout
        self.runner = Task { try? await grpc.runConnections() }
    }

    /// Stops the connection: later calls fail at once; calls in flight get `gracePeriod` to
    /// finish and are then cancelled. (A stream that nobody closed, a watch or a lease
    /// keepalive, never finishes by itself: a purely graceful close would wait forever.)
    public func close(gracePeriod: Duration = .seconds(2)) async {
        grpc.beginGracefulShutdown()
        let runner = self.runner
        let deadline = Task {
            try await Task.sleep(for: gracePeriod)
            runner.cancel()
        }
        await runner.value
        deadline.cancel()
    }

    var options: CallOptions {
        var options = Self.streamOptions
        options.timeout = callTimeout
        return options
    }

    /// For every call: fail instead of waiting for a connection that is down, and accept
    /// messages up to 64 MiB (the transport applies this one limit to responses too; its
    /// 4 MiB default would refuse a large range read or watch batch forever).
    static var streamOptions: CallOptions {
        var options = CallOptions.defaults
        options.waitForReady = false
        options.maxRequestMessageBytes = 64 << 20
        options.maxResponseMessageBytes = 64 << 20
        return options
    }

    /// The end of the key range that holds every key starting with `prefix`.
    static func prefixEnd(_ prefix: String) -> Data {
        var bytes = [UInt8](prefix.utf8)
        while let last = bytes.last {
            if last < 0xFF {
                bytes[bytes.count - 1] = last + 1
                return Data(bytes)
            }
            bytes.removeLast()
        }
        return Data([0])  // every key
    }

    // MARK: KV

    /// The key's current value, or nil when it does not exist.
    public func get(_ key: String) async throws(EtcdError) -> EtcdKeyValue? {
        var request = Etcdserverpb_RangeRequest()
        request.key = Data(key.utf8)
        return try await range(request).kvs.first
    }

    /// Every key starting with `prefix`, sorted by key, and the store revision they were read at.
    public func get(prefix: String) async throws(EtcdError) -> (kvs: [EtcdKeyValue], revision: Int64) {
        var request = Etcdserverpb_RangeRequest()
        request.key = Data(prefix.utf8)
        request.rangeEnd = Self.prefixEnd(prefix)
        request.sortOrder = .ascend
        request.sortTarget = .key
        return try await range(request)
    }

    private func range(_ request: Etcdserverpb_RangeRequest) async throws(EtcdError) -> (kvs: [EtcdKeyValue], revision: Int64) {
        do {
            let response = try await kv.range(request, options: options)
            return (response.kvs.map(EtcdKeyValue.init), response.header.revision)
        } catch {
            throw EtcdError.from(error)
        }
    }

    /// Puts `value` under `key` (attached to `lease` when non-zero); returns the new revision.
    @discardableResult
    public func put(_ key: String, _ value: [UInt8], lease: Int64 = 0) async throws(EtcdError) -> Int64 {
        var request = Etcdserverpb_PutRequest()
        request.key = Data(key.utf8)
        request.value = Data(value)
        request.lease = lease
        do {
            return try await kv.put(request, options: options).header.revision
        } catch {
            throw EtcdError.from(error, lease: lease)
        }
    }

    /// Deletes `key`; returns how many keys were deleted (0 or 1).
    @discardableResult
    public func delete(_ key: String) async throws(EtcdError) -> Int64 {
        var request = Etcdserverpb_DeleteRangeRequest()
        request.key = Data(key.utf8)
        do {
            return try await kv.deleteRange(request, options: options).deleted
        } catch {
            throw EtcdError.from(error)
        }
    }

    /// Runs `success` when every compare holds, else `failure`, atomically at one revision.
    public func txn(if compares: [EtcdCompare], then success: [EtcdOperation], else failure: [EtcdOperation] = [])
        async throws(EtcdError) -> EtcdTxnResult
    {
        var request = Etcdserverpb_TxnRequest()
        request.compare = compares.map(\.proto)
        request.success = success.map(\.proto)
        request.failure = failure.map(\.proto)
        var lease: Int64 = 0
        for case .put(_, _, let id) in success where id != 0 { lease = id }
        do {
            let response = try await kv.txn(request, options: options)
            let reads = response.responses.compactMap { op -> [EtcdKeyValue]? in
                if case .responseRange(let range)? = op.response { return range.kvs.map(EtcdKeyValue.init) }
                return nil
            }
            return EtcdTxnResult(succeeded: response.succeeded, revision: response.header.revision, reads: reads)
        } catch {
            throw EtcdError.from(error, lease: lease)
        }
    }

    // MARK: Leases

    /// Grants a lease of `ttlSeconds`; keys put under it are deleted when it is not kept alive.
    public func grantLease(ttlSeconds: Int64) async throws(EtcdError) -> Int64 {
        var request = Etcdserverpb_LeaseGrantRequest()
        request.ttl = ttlSeconds
        do {
            let response = try await leases.leaseGrant(request, options: options)
            guard response.error.isEmpty else { throw EtcdError.rejected(code: "lease grant", message: response.error) }
            return response.id
        } catch {
            throw EtcdError.from(error)
        }
    }

    /// Revokes a lease: every key under it is deleted at once.
    public func revokeLease(_ id: Int64) async throws(EtcdError) {
        var request = Etcdserverpb_LeaseRevokeRequest()
        request.id = id
        do {
            _ = try await leases.leaseRevoke(request, options: options)
        } catch {
            throw EtcdError.from(error, lease: id)
        }
    }
}
