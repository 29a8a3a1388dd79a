/// Why bytes from the wire (or from disk) could not be decoded, or a value could not be encoded.
///
/// Every decoder in FjordProtocol throws this and never traps on input: a server maps it to
/// a Kafka error code (or closes that one connection), a storage reader to a truncation.
public enum ProtocolError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Fewer bytes remain than the next field needs.
    case truncated(need: Int, have: Int)
    /// A length prefix is negative where only `-1` (null) or a non-negative length is allowed.
    case invalidLength(Int64)
    /// An unsigned varint ran past 5 bytes or a varlong past 10.
    case varintTooLong
    /// A null arrived for a field that is not nullable in this version.
    case nullNotAllowed(field: String, version: Int16)
    /// A message version outside the schema's valid versions.
    case unsupportedVersion(message: String, version: Int16)
    /// Encoding would lose a non-ignorable field that this version cannot carry.
    case fieldNotSupported(field: String, version: Int16)
    /// A request names an API key this build has no schema for.
    case unknownAPIKey(Int16)
    /// Bytes remained after a complete message body.
    case trailingBytes(Int, after: String)
    /// A record batch or record is malformed (bad magic, lengths that disagree, bad CRC...).
    case corruptRecord(String)
    /// A compression codec failed or the attributes name an unknown codec.
    case compression(String)

    public var description: String {
        switch self {
        case .truncated(let need, let have):
            return "truncated input: need \(need) bytes, have \(have)"
        case .invalidLength(let length):
            return "invalid length \(length)"
        case .varintTooLong:
            return "varint longer than its maximum encoded size"
        case .nullNotAllowed(let field, let version):
            return "null is not allowed for \(field) in version \(version)"
        case .unsupportedVersion(let message, let version):
            return "\(message) does not support version \(version)"
        case .fieldNotSupported(let field, let version):
            return "\(field) cannot be written at version \(version) and is not ignorable"
        case .unknownAPIKey(let key):
            return "unknown API key \(key)"
        case .trailingBytes(let count, let after):
            return "\(count) unexpected bytes after \(after)"
        case .corruptRecord(let why):
            return "corrupt record: \(why)"
        case .compression(let why):
            return "compression: \(why)"
        }
    }
}
