public import NIOCore

extension APIKey {
    /// The request header version a request of this API at `apiVersion` carries.
    ///
    /// Flexible versions use header v2 (tagged fields); others v1, except ControlledShutdown v0,
    /// which predates the client id (header v0). Versions above the schema's range count as
    /// flexible, so a newer client's ApiVersions request still parses (KIP-511).
    public func requestHeaderVersion(apiVersion: Int16) -> Int16 {
        if self == .controlledShutdown && apiVersion == 0 { return 0 }
        if let first = firstFlexibleVersion, apiVersion >= first { return 2 }
        return 1
    }

    /// The response header version: v1 for flexible versions, v0 otherwise, and always v0 for
    /// ApiVersions, so a client can read the reply before it knows which versions the broker has.
    public func responseHeaderVersion(apiVersion: Int16) -> Int16 {
        if self == .apiVersions { return 0 }
        if let first = firstFlexibleVersion, apiVersion >= first { return 1 }
        return 0
    }
}

/// A request frame's payload (after the 4-byte size prefix), split into header and body.
public struct RequestFrame: Sendable {
    public var header: RequestHeader
    public var apiKey: APIKey
    /// The body bytes, not yet decoded (a slice of the frame).
    public var body: ByteBuffer

    public var apiVersion: Int16 { header.requestApiVersion }
    public var correlationID: Int32 { header.correlationId }

    /// Parses the header of `frame`; the body stays undecoded so the caller can first check
    /// that it serves this API and version.
    ///
    /// Throws `unknownAPIKey` when the key is not one of Kafka's (the caller can still answer,
    /// since the correlation id was read), and other `ProtocolError`s when the header is malformed.
    public init(parsing frame: ByteBuffer) throws(ProtocolError) {
        var buffer = frame
        guard let rawKey = buffer.getInteger(at: buffer.readerIndex, endianness: .big, as: Int16.self),
            let version = buffer.getInteger(at: buffer.readerIndex + 2, endianness: .big, as: Int16.self)
        else {
            throw ProtocolError.truncated(need: 4, have: buffer.readableBytes)
        }
        guard let key = APIKey(rawValue: rawKey) else {
            throw ProtocolError.unknownAPIKey(rawKey)
        }
        self.apiKey = key
        self.header = try RequestHeader(from: &buffer, version: key.requestHeaderVersion(apiVersion: version))
        self.body = buffer
    }

    /// Decodes the body with the generated type for this API and version.
    ///
    /// Bytes after the body are ignored, as Kafka's broker ignores them: librdkafka 2.16 sends
    /// Metadata v12 requests for all topics with 3 stray bytes after the body.
    public func decodeBody() throws(ProtocolError) -> any KafkaRequest {
        var body = self.body
        return try apiKey.decodeRequest(from: &body, version: apiVersion)
    }

    /// Like `decodeBody()`, but refuses trailing bytes (for conformance tests).
    public func decodeBodyExactly() throws(ProtocolError) -> any KafkaRequest {
        var body = self.body
        let request = try apiKey.decodeRequest(from: &body, version: apiVersion)
        guard body.readableBytes == 0 else {
            throw ProtocolError.trailingBytes(body.readableBytes, after: "\(apiKey.name) v\(apiVersion) request")
        }
        return request
    }

    /// Encodes a request frame payload (header + body, without the size prefix).
    public static func encode<Request: KafkaRequest>(
        _ request: Request, version: Int16, correlationID: Int32, clientID: String?,
        into buffer: inout ByteBuffer
    ) throws(ProtocolError) {
        var header = RequestHeader()
        header.requestApiKey = Request.apiKey.rawValue
        header.requestApiVersion = version
        header.correlationId = correlationID
        header.clientId = clientID
        try header.write(to: &buffer, version: Request.apiKey.requestHeaderVersion(apiVersion: version))
        try request.write(to: &buffer, version: version)
    }
}

/// Encodes and decodes response frames: the response header then the body.
public enum ResponseFrame {
    /// Encodes a response frame payload (header + body, without the size prefix).
    public static func encode<Response: KafkaResponse>(
        _ response: Response, version: Int16, correlationID: Int32, into buffer: inout ByteBuffer
    ) throws(ProtocolError) {
        var header = ResponseHeader()
        header.correlationId = correlationID
        try header.write(to: &buffer, version: Response.apiKey.responseHeaderVersion(apiVersion: version))
        try response.write(to: &buffer, version: version)
    }

    /// Encodes a Fetch response whose records may be `ZeroCopyRegion`s: `splices` tells where
    /// each region's bytes belong in `buffer`.
    public static func encode(
        _ response: FetchResponse, version: Int16, correlationID: Int32, into buffer: inout ByteBuffer,
        splices: inout [ZeroCopySplice]
    ) throws(ProtocolError) {
        var header = ResponseHeader()
        header.correlationId = correlationID
        try header.write(to: &buffer, version: APIKey.fetch.responseHeaderVersion(apiVersion: version))
        try response.write(to: &buffer, version: version, splices: &splices)
    }

    /// Decodes a response frame payload of `apiKey` at `version`.
    public static func decode(
        _ frame: ByteBuffer, apiKey: APIKey, version: Int16
    ) throws(ProtocolError) -> (header: ResponseHeader, body: any KafkaResponse) {
        var buffer = frame
        let header = try ResponseHeader(from: &buffer, version: apiKey.responseHeaderVersion(apiVersion: version))
        let body = try apiKey.decodeResponse(from: &buffer, version: version)
        guard buffer.readableBytes == 0 else {
            throw ProtocolError.trailingBytes(buffer.readableBytes, after: "\(apiKey.name) v\(version) response")
        }
        return (header, body)
    }
}
