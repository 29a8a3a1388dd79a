import NIOSSL

/// How a client reaches brokers: Kafka's `security.protocol` with its TLS settings and SASL
/// credentials, by librdkafka's and Kafka's property names:
///
/// - `security.protocol`: `plaintext` (default), `ssl`, `sasl_plaintext`, `sasl_ssl`;
/// - TLS: `ssl.ca.location` (PEM CA certificates; the system's roots otherwise),
///   `ssl.certificate.location` and `ssl.key.location` (a client certificate, PEM),
///   `ssl.key.password`, `ssl.endpoint.identification.algorithm` (`https`, the default, checks
///   the broker's name or address; `none` does not), `enable.ssl.certificate.verification`;
///   Java's `ssl.truststore.location` with `ssl.truststore.type=PEM` is taken as the CA file;
/// - SASL: `sasl.mechanism` (or `sasl.mechanisms`): `PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`;
///   `sasl.username` and `sasl.password`, or Java's `sasl.jaas.config` with `username="…"` and
///   `password="…"`.
///
/// A value; the TLS context is built when a connection is made, so an unreadable file is
/// reported on connect with its path.
public struct ClientSecurity: Sendable, Equatable {
    public enum SecurityProtocol: String, Sendable, Equatable {
        case plaintext = "PLAINTEXT"
        case ssl = "SSL"
        case saslPlaintext = "SASL_PLAINTEXT"
        case saslSSL = "SASL_SSL"

        public var usesTLS: Bool { self == .ssl || self == .saslSSL }
        public var usesSASL: Bool { self == .saslPlaintext || self == .saslSSL }
    }

    public var securityProtocol: SecurityProtocol = .plaintext
    public var caLocation: String? = nil
    public var certificateLocation: String? = nil
    public var keyLocation: String? = nil
    public var keyPassword: String? = nil
    /// Whether the broker's certificate must name the host (or address) connected to.
    public var verifyHostname = true
    /// Whether the broker's certificate must chain to a trusted root at all.
    public var verifyCertificate = true
    public var saslMechanism: String? = nil
    public var saslUsername: String? = nil
    public var saslPassword: String? = nil

    public init(securityProtocol: SecurityProtocol = .plaintext) {
        self.securityProtocol = securityProtocol
    }

    /// The SASL mechanisms the client speaks.
    public static let saslMechanisms = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]

    /// Applies one security property; false when `key` is not one.
    public mutating func apply(_ key: String, _ value: String) throws -> Bool {
        switch key {
        case "security.protocol":
            guard let parsed = SecurityProtocol(rawValue: value.uppercased()) else {
                throw ClientError.invalidConfiguration("\(key)=\(value): expected plaintext, ssl, sasl_plaintext or sasl_ssl")
            }
            securityProtocol = parsed
        case "ssl.ca.location", "ssl.truststore.location": caLocation = value.isEmpty ? nil : value
        case "ssl.truststore.type":
            guard value.uppercased() == "PEM" else {
                throw ClientError.invalidConfiguration("\(key)=\(value): only PEM truststores are read (ssl.ca.location)")
            }
        case "ssl.certificate.location": certificateLocation = value.isEmpty ? nil : value
        case "ssl.key.location": keyLocation = value.isEmpty ? nil : value
        case "ssl.key.password": keyPassword = value
        case "ssl.endpoint.identification.algorithm": verifyHostname = value.lowercased() == "https"
        case "enable.ssl.certificate.verification": verifyCertificate = try ClientConfiguration.bool(key, value)
        case "sasl.mechanism", "sasl.mechanisms":
            let mechanism = value.uppercased()
            guard Self.saslMechanisms.contains(mechanism) else {
                throw ClientError.invalidConfiguration("\(key)=\(value): expected one of \(Self.saslMechanisms.joined(separator: ", "))")
            }
            saslMechanism = mechanism
        case "sasl.username": saslUsername = value
        case "sasl.password": saslPassword = value
        case "sasl.jaas.config":
            saslUsername = Self.jaasOption("username", in: value) ?? saslUsername
            saslPassword = Self.jaasOption("password", in: value) ?? saslPassword
        default:
            return false
        }
        return true
    }

    /// Why the settings cannot connect, or nil.
    public var problem: String? {
        guard securityProtocol.usesSASL else { return nil }
        guard let mechanism = saslMechanism else {
            return "security.protocol=\(securityProtocol.rawValue) needs sasl.mechanism (\(Self.saslMechanisms.joined(separator: ", ")))"
        }
        guard saslUsername != nil, saslPassword != nil else { return "sasl.mechanism=\(mechanism) needs sasl.username and sasl.password" }
        return nil
    }

    /// A `key="value"` option of a JAAS line (`… ScramLoginModule required username="a" password="b";`).
    static func jaasOption(_ name: String, in text: String) -> String? {
        guard let range = text.firstRange(of: "\(name)=\"") else { return nil }
        var value = ""
        var escaped = false
        for character in text[range.upperBound...] {
            if escaped {
                value.append(character)
                escaped = false
            } else if character == "\\" {
                escaped = true
            } else if character == "\"" {
                return value
            } else {
                value.append(character)
            }
        }
        return nil
    }

    /// The TLS context for `ssl`/`sasl_ssl` connections.
    func makeTLSContext() throws -> NIOSSLContext {
        var configuration = TLSConfiguration.makeClientConfiguration()
        do {
            if let caLocation { configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(caLocation)) }
            if let certificateLocation {
                configuration.certificateChain = try NIOSSLCertificate.fromPEMFile(certificateLocation).map { .certificate($0) }
            }
            if let keyLocation {
                if let keyPassword {
                    configuration.privateKey = .privateKey(try NIOSSLPrivateKey(file: keyLocation, format: .pem) { callback in
                        callback(Array(keyPassword.utf8))
                    })
                } else {
                    configuration.privateKey = .privateKey(try NIOSSLPrivateKey(file: keyLocation, format: .pem))
                }
            }
        } catch {
            throw ClientError.invalidConfiguration("cannot load the TLS files (ssl.ca.location, ssl.certificate.location, ssl.key.location): \(error)")
        }
        configuration.certificateVerification = !verifyCertificate ? .none : verifyHostname ? .fullVerification : .noHostnameVerification
        do {
            return try NIOSSLContext(configuration: configuration)
        } catch {
            throw ClientError.invalidConfiguration("cannot build the TLS context: \(error)")
        }
    }
}
