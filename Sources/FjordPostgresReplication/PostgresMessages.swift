public import NIOCore

// PostgreSQL's frontend/backend protocol 3.0, the part a logical-replication client needs
// (PostgreSQL docs, "Frontend/Backend Protocol" and "Streaming Replication Protocol"). Every
// backend message is a type byte, an Int32 length that counts itself, and a body; the startup
// and SSL request messages have no type byte.

/// Why the protocol stream cannot be understood, or why the server refused.
public enum PostgresReplicationError: Error, Sendable, CustomStringConvertible {
    /// The server's ErrorResponse: severity, SQLSTATE code and message (and detail, hint).
    case server(severity: String, code: String, message: String, detail: String?)
    /// Bytes that do not form a valid message.
    case protocolViolation(String)
    /// Authentication the client cannot do, or a failed one before the server said why.
    case authentication(String)
    case connection(String)

    public var description: String {
        switch self {
        case .server(let severity, let code, let message, let detail):
            return "\(severity) \(code): \(message)" + (detail.map { " (\($0))" } ?? "")
        case .protocolViolation(let text): return "protocol violation: \(text)"
        case .authentication(let text): return "authentication: \(text)"
        case .connection(let text): return "connection: \(text)"
        }
    }

    /// The SQLSTATE of a server error, if this is one.
    public var sqlState: String? {
        if case .server(_, let code, _, _) = self { return code }
        return nil
    }
}

/// A message from the server, decoded.
public enum PostgresBackendMessage: Sendable {
    /// `R`: 0 ok, 3 cleartext, 5 MD5 (with salt), 10 SASL (mechanisms), 11 SASL continue, 12 SASL final.
    case authentication(code: Int32, data: ByteBuffer)
    case parameterStatus(name: String, value: String)
    case backendKeyData(processID: Int32, secretKey: Int32)
    case readyForQuery(status: UInt8)
    /// `T`: the column names of the rows to come.
    case rowDescription([String])
    /// `D`: one row's values as text (nil for NULL).
    case dataRow([ByteBuffer?])
    case commandComplete(String)
    case emptyQueryResponse
    case error(PostgresReplicationError)
    case notice(String)
    /// `W`: the server is ready to stream (START_REPLICATION).
    case copyBothResponse
    /// `H` / `G`: COPY out/in responses (not used by replication; surfaced as errors).
    case copyOutResponse
    case copyInResponse
    /// `d`: a CopyData payload (XLogData or keepalive during replication).
    case copyData(ByteBuffer)
    case copyDone
    case other(type: UInt8)
    /// Not from the server: `PostgresReplicationConnection.Waker` put it in the stream so that
    /// a reader waiting for the next message wakes up.
    case wakeup

    /// Decodes one message body of `type`.
    static func decode(type: UInt8, body: inout ByteBuffer) throws(PostgresReplicationError) -> PostgresBackendMessage {
        switch type {
        case UInt8(ascii: "R"):
            guard let code = body.readInteger(as: Int32.self) else { throw .protocolViolation("short Authentication message") }
            return .authentication(code: code, data: body)
        case UInt8(ascii: "S"):
            guard let name = body.readNullTerminatedString(), let value = body.readNullTerminatedString() else {
                throw .protocolViolation("short ParameterStatus")
            }
            return .parameterStatus(name: name, value: value)
        case UInt8(ascii: "K"):
            guard let pid = body.readInteger(as: Int32.self), let key = body.readInteger(as: Int32.self) else {
                throw .protocolViolation("short BackendKeyData")
            }
            return .backendKeyData(processID: pid, secretKey: key)
        case UInt8(ascii: "Z"):
            guard let status = body.readInteger(as: UInt8.self) else { throw .protocolViolation("short ReadyForQuery") }
            return .readyForQuery(status: status)
        case UInt8(ascii: "T"):
            guard let count = body.readInteger(as: Int16.self), count >= 0 else { throw .protocolViolation("short RowDescription") }
            var names: [String] = []
            for _ in 0..<count {
                // name, table oid, column, type oid, type size, type modifier, format
                guard let name = body.readNullTerminatedString(), body.readableBytes >= 18 else {
                    throw .protocolViolation("short RowDescription field")
                }
                body.moveReaderIndex(forwardBy: 18)
                names.append(name)
            }
            return .rowDescription(names)
        case UInt8(ascii: "D"):
            guard let count = body.readInteger(as: Int16.self), count >= 0 else { throw .protocolViolation("short DataRow") }
            var values: [ByteBuffer?] = []
            values.reserveCapacity(Int(count))
            for _ in 0..<count {
                guard let length = body.readInteger(as: Int32.self) else { throw .protocolViolation("short DataRow column") }
                if length < 0 {
                    values.append(nil)
                } else {
                    guard let value = body.readSlice(length: Int(length)) else { throw .protocolViolation("DataRow column past its end") }
                    values.append(value)
                }
            }
            return .dataRow(values)
        case UInt8(ascii: "C"):
            return .commandComplete(body.readNullTerminatedString() ?? "")
        case UInt8(ascii: "I"):
            return .emptyQueryResponse
        case UInt8(ascii: "E"), UInt8(ascii: "N"):
            var fields: [UInt8: String] = [:]
            while let code = body.readInteger(as: UInt8.self), code != 0 {
                guard let value = body.readNullTerminatedString() else { throw .protocolViolation("short ErrorResponse field") }
                fields[code] = value
            }
            let message = fields[UInt8(ascii: "M")] ?? "(no message)"
            if type == UInt8(ascii: "N") { return .notice(message) }
            return .error(.server(severity: fields[UInt8(ascii: "V")] ?? fields[UInt8(ascii: "S")] ?? "ERROR",
                                  code: fields[UInt8(ascii: "C")] ?? "XX000", message: message, detail: fields[UInt8(ascii: "D")]))
        case UInt8(ascii: "W"): return .copyBothResponse
        case UInt8(ascii: "H"): return .copyOutResponse
        case UInt8(ascii: "G"): return .copyInResponse
        case UInt8(ascii: "d"): return .copyData(body)
        case UInt8(ascii: "c"): return .copyDone
        default: return .other(type: type)
        }
    }
}

/// Frames backend messages: type byte, Int32 length (≥ 4, at most `maxMessageSize`), body.
struct PostgresMessageDecoder: ByteToMessageDecoder {
    typealias InboundOut = PostgresBackendMessage
    let maxMessageSize: Int

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let type = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self),
            let length = buffer.getInteger(at: buffer.readerIndex + 1, as: Int32.self) else { return .needMoreData }
        guard length >= 4, Int(length) - 4 <= maxMessageSize else {
            throw PostgresReplicationError.protocolViolation("message \(Character(UnicodeScalar(type))) of length \(length)")
        }
        guard buffer.readableBytes >= 1 + Int(length) else { return .needMoreData }
        buffer.moveReaderIndex(forwardBy: 5)
        var body = buffer.readSlice(length: Int(length) - 4)!
        context.fireChannelRead(wrapInboundOut(try PostgresBackendMessage.decode(type: type, body: &body)))
        return .continue
    }
}

/// Messages the client sends.
enum PostgresFrontendMessage {
    static func startup(parameters: [(String, String)]) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeInteger(Int32(0))
        buffer.writeInteger(Int32(196_608))  // protocol 3.0
        for (name, value) in parameters {
            buffer.writeNullTerminatedString(name)
            buffer.writeNullTerminatedString(value)
        }
        buffer.writeInteger(UInt8(0))
        buffer.setInteger(Int32(buffer.readableBytes), at: 0)
        return buffer
    }

    static let sslRequest: ByteBuffer = {
        var buffer = ByteBuffer()
        buffer.writeInteger(Int32(8))
        buffer.writeInteger(Int32(80_877_103))
        return buffer
    }()

    /// A typed message: type byte, length, `body`.
    static func message(_ type: Character, _ body: (inout ByteBuffer) -> Void) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeInteger(UInt8(ascii: type.unicodeScalars.first!))
        buffer.writeInteger(Int32(0))
        body(&buffer)
        buffer.setInteger(Int32(buffer.readableBytes - 1), at: 1)
        return buffer
    }

    static func query(_ sql: String) -> ByteBuffer { message("Q") { $0.writeNullTerminatedString(sql) } }
    static func password(_ text: String) -> ByteBuffer { message("p") { $0.writeNullTerminatedString(text) } }
    static func saslInitial(mechanism: String, _ data: [UInt8]) -> ByteBuffer {
        message("p") {
            $0.writeNullTerminatedString(mechanism)
            $0.writeInteger(Int32(data.count))
            $0.writeBytes(data)
        }
    }
    static func saslResponse(_ data: [UInt8]) -> ByteBuffer { message("p") { $0.writeBytes(data) } }
    static func copyData(_ payload: ByteBuffer) -> ByteBuffer { message("d") { $0.writeImmutableBuffer(payload) } }
    static let copyDone = message("c") { _ in }
    static let terminate = message("X") { _ in }
}
